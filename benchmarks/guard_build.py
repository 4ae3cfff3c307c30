"""The layout guardian in a whole `trinity build`: what `--guard` adds to a build of 1,000
pages, and what it costs once the pages are checked.

The site is benchmarks/site_scale.py's 1,000-page site (the `minimal` theme, three blocks
of about 100 words a page), its cache filled directly, so no model is asked. The rows, in
one run, each a `trinity build` process of its own:

- warm, no guard: every page rendered from the full cache (the baseline);
- warm, `--guard`: the same rebuild (each page kept unchanged, so the time is the guard's
  and the keep's), every page opened in Chromium at 390, 768 and 1280 px;
- warm, `--guard`, every page made again: the page manifest deleted, so every page is
  rendered again from the cache, and every page's check is found in
  `output/.trinity/guard.json`, so no browser is started;
- warm, `--guard`, nothing changed: the site is kept whole, unloaded (trinity.unchanged),
  against the same rebuild without the guard (a first one records the site unguarded,
  the second is timed).

The ratios are against the rows' own baselines, measured in the same run; the guard
phase's time (from the report) is held to the issue's target of 60 s for 1,000 pages.

    python benchmarks/guard_build.py [--pages 1000] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import markdown_table, plain_table
from site_scale import (
    LARGE_BLOCKS,
    NO_SERVER,
    SiteShape,
    child_environment,
    prefill_cache,
    run_process,
    write_trinity_site,
)

TARGET_SECONDS = 60.0  # the guard phase, 1,000 pages at three widths


def build(folder: Path, scratch: Path, *extra: str) -> tuple[float, dict[str, object]]:
    """`trinity build EXTRA` in `folder`: its wall time and its report."""
    command = [sys.executable, "-m", "trinity", "build", *extra]
    run = run_process(command, folder, child_environment(), scratch)
    report = json.loads((folder / "output" / ".trinity" / "report.json").read_text())
    totals = report["totals"]
    if totals["llm_calls"] or totals["failed"]:
        raise SystemExit(f"the build asked a model or failed: {totals}")
    return run.wall, report


def kept_whole(report: dict[str, object]) -> bool:
    """Whether the build kept the site as it was (nothing changed: nothing loaded)."""
    totals = report["totals"]
    assert isinstance(totals, dict)
    return set(totals["cache_hits_by_tier"]) == {"kept"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1_000, help="pages of the site")
    parser.add_argument("--words", type=int, default=100, help="words in each block's answer")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()
    shape = SiteShape(args.pages, LARGE_BLOCKS, args.words)
    with tempfile.TemporaryDirectory(prefix="trinity-guard-build-") as temp:
        root = Path(temp)
        site, scratch = root / "site", root / "scratch"
        scratch.mkdir()
        write_trinity_site(site, shape, NO_SERVER, concurrency=32)
        prefill_cache(site, shape.words, child_environment())
        started = time.perf_counter()
        print("warm, no guard ...", file=sys.stderr)
        plain, _ = build(site, scratch)
        print("warm, --guard (every page checked) ...", file=sys.stderr)
        guarded, report = build(site, scratch, "--guard")
        guard = report["guard"]
        assert isinstance(guard, dict) and guard["pages_checked"] == args.pages + 1, guard
        phase = float(report["timings"]["guard"])  # type: ignore[index]
        print("warm, --guard, every page made again ...", file=sys.stderr)
        (site / "output" / ".trinity" / "pages.json").unlink()
        remade, report = build(site, scratch, "--guard")
        assert report["guard"]["pages_checked"] == 0  # type: ignore[index]
        print("warm, --guard, nothing changed ...", file=sys.stderr)
        again, report = build(site, scratch, "--guard")
        assert kept_whole(report), report["totals"]
        print("warm, no guard, nothing changed ...", file=sys.stderr)
        build(site, scratch)  # the guard's options are inputs: this one builds again
        unguarded, report = build(site, scratch)
        assert kept_whole(report), report["totals"]
        took = time.perf_counter() - started
    headers = ("build", "wall (s)", "ratio", "note")
    rows = [
        ("warm, no guard, every page rendered", f"{plain:.2f}", "1.00", "baseline"),
        (
            "warm, --guard, every page checked",
            f"{guarded:.2f}",
            f"{guarded / plain:.2f}",
            f"guard phase {phase:.1f} s for {args.pages + 1:,} pages x 3 widths "
            f"(target < {TARGET_SECONDS:.0f} s: {'met' if phase < TARGET_SECONDS else 'missed'})",
        ),
        (
            "warm, --guard, every page made again",
            f"{remade:.2f}",
            f"{remade / plain:.2f}",
            "every check found in guard.json: no browser started",
        ),
        ("warm, no guard, nothing changed", f"{unguarded:.2f}", "1.00", "baseline"),
        (
            "warm, --guard, nothing changed",
            f"{again:.2f}",
            f"{again / unguarded:.2f}",
            "the site kept whole, unloaded: no browser started",
        ),
    ]
    print(plain_table(headers, rows))
    print(f"took {took:.0f} s", file=sys.stderr)
    if args.markdown:
        print()
        print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
