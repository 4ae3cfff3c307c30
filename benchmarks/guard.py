"""The layout guardian's browser: how fast `LayoutBrowser.check` looks at a built site.

The site is synthetic and written into a temporary folder: `--pages` pages shaped like
the `minimal` theme's (a header with the site's title and a nav, an h1, three blocks in
`<section data-trinity-block=...>` wrappers, one of them a list, about 300 words) and the
theme's own style.css, the one stylesheet every page links. Every page is clean, so the
time is the check's own, with no screenshots.

Pages that look alike cost axe-core nothing after the first few (a contrast verdict is
kept for text that looks the same; see trinity/layout/probe.js); `--varied` gives every
page a text colour of its own, so axe-core is loaded into, and runs on, every page: the
worst case, for comparison.

Each row starts one `LayoutBrowser` (its start-up, Chromium's launch and the loopback
server's, is timed apart) and checks every page at the three widths with `--parallel`
tabs; the rows take turns for `--rounds` rounds and the table shows medians. The target:
1,000 pages at three widths in under 60 s (on 2 cores). Nothing leaves the machine: the
pages are served on 127.0.0.1 and link nothing else.

    python benchmarks/guard.py [--pages 1000] [--parallel 2,3,4] [--rounds 1] [--varied]
                               [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from trinity.errors import MissingDependencyError
from trinity.layout.browser import LayoutBrowser, find_chromium
from trinity.layout.findings import WIDTHS, LayoutLimits, SlotLimits
from trinity.render.themes import BUILTIN_THEMES_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (
    cpu_model,
    cpu_times,
    load_at_start,
    markdown_table,
    plain_table,
    steal_share,
)

TARGET_SECONDS = 60.0  # for 1,000 pages at three widths
THEME_CSS = BUILTIN_THEMES_DIR / "minimal" / "static" / "style.css"
LIMITS = LayoutLimits(
    default=SlotLimits(heading_lines=3, block_lines=None),
    slots={"features": SlotLimits(heading_lines=2, block_lines=60)},
)
NAV = ("Home", "About", "Projects", "Writing", "Contact")
SENTENCE = (
    "The workshop opened in the spring with two benches, a borrowed lathe and a list of "
    "repairs that neighbours had been saving for years."
)


# ---------------------------------------------------------------------- the site


def page_html(number: int, total: int, varied: bool = False) -> str:
    """One page in the shape of the minimal theme's page.html, about 300 words; `varied`
    gives its notes a text colour of their own (a new look for axe-core to judge)."""
    nav = "".join(f'<li><a href="../{name.lower()}/index.html">{name}</a></li>' for name in NAV)
    paragraphs = "".join(f"<p>{SENTENCE} Page {number} of {total}, part {n}.</p>" for n in range(4))
    items = "".join(f"<li>{SENTENCE[:60]} ({n})</li>" for n in range(6))
    # Dark enough to pass, and a different one on each page (for 125,000 pages).
    dark = f"rgb({number % 50}, {number // 50 % 50}, {number // 2500})"
    colour = f' style="color: {dark}"' if varied else ""
    closing = "".join(f"<p{colour}>{SENTENCE}</p>" for _ in range(3))
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Page {number} — Guard benchmark</title>
  <link rel="stylesheet" href="../static/style.css">
</head>
<body>
  <a class="skip-link" href="#main">Skip to content</a>
  <header class="site-header">
    <div class="wrap header-inner">
      <a class="site-title" href="../index.html">Guard benchmark</a>
      <nav class="site-nav" aria-label="Main"><ul role="list">{nav}</ul></nav>
    </div>
  </header>
  <main id="main" class="wrap" tabindex="-1">
    <header class="page-header"><h1>Page {number}: a workshop diary</h1></header>
    <div class="lead" data-trinity-block="intro"><div class="prose">{paragraphs}</div></div>
    <section class="block" id="block-features" data-trinity-block="features">
      <h2>What the workshop does</h2>
      <div class="prose"><ul>{items}</ul></div>
    </section>
    <section class="block" id="block-notes" data-trinity-block="notes">
      <h2>Notes from the bench</h2>
      <div class="prose">{closing}</div>
    </section>
  </main>
  <footer class="site-footer"><div class="wrap footer-inner"><p>Guard benchmark</p></div></footer>
</body>
</html>
"""


def write_site(folder: Path, pages: int, varied: bool = False) -> list[str]:
    """`pages` pages under folder/pages/NNNNNN/index.html and the theme's stylesheet."""
    (folder / "static").mkdir(parents=True)
    (folder / "static" / "style.css").write_text(THEME_CSS.read_text("utf-8"), "utf-8")
    names = []
    for number in range(pages):
        name = f"p{number:06d}/index.html"
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text(page_html(number, pages, varied), "utf-8")
        names.append(name)
    return names


# ---------------------------------------------------------------------- the runs


@dataclass
class Row:
    parallel: int
    startup: list[float] = field(default_factory=list)
    check: list[float] = field(default_factory=list)
    findings: int = 0


async def run_once(row: Row, site: Path, pages: list[str], chromium: Path) -> None:
    started = time.perf_counter()
    async with LayoutBrowser(site, chromium=chromium, parallel=row.parallel) as browser:
        opened = time.perf_counter()
        results = await browser.check(pages, LIMITS, widths=WIDTHS)
        checked = time.perf_counter()
    row.startup.append(opened - started)
    row.check.append(checked - opened)
    row.findings = sum(len(found) for found in results.values())
    if row.findings:
        first = next(found for found in results.values() if found)[0]
        print(f"Warning: the clean site gave findings, e.g. {first.detail}", file=sys.stderr)


def cells(row: Row, pages: int) -> tuple[str, ...]:
    check = statistics.median(row.check)
    per_1000 = check * 1000 / pages
    return (
        f"{row.parallel}",
        f"{statistics.median(row.startup):.2f}",
        f"{check:.1f}",
        f"{pages / check:.1f}",
        f"{per_1000:.1f}",
        f"< {TARGET_SECONDS:.0f}",
        "met" if per_1000 < TARGET_SECONDS else "missed",
        f"{row.findings}",
    )


HEADERS = (
    "tabs",
    "start-up (s)",
    "check (s)",
    "pages/s",
    "1,000 pages (s)",
    "target",
    "verdict",
    "findings",
)


def machine(chromium: Path) -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, {chromium}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=1000, help="pages in the site")
    parser.add_argument("--parallel", default="2,3,4", help="tab counts to compare")
    parser.add_argument("--rounds", type=int, default=1, help="rounds the rows take turns in")
    parser.add_argument(
        "--varied",
        action="store_true",
        help="give every page a text colour of its own, so axe-core runs on every page",
    )
    parser.add_argument("--chromium", default=None, help="the browser (default: find_chromium)")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    args = parser.parse_args()

    try:
        chromium = find_chromium(args.chromium)
    except MissingDependencyError as exc:
        raise SystemExit(f"guard.py: {exc}") from None
    rows = [Row(int(n)) for n in args.parallel.split(",")]
    load = load_at_start()
    started, times = time.perf_counter(), cpu_times()
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder)
        pages = write_site(site, args.pages, args.varied)
        for number in range(args.rounds):
            for row in rows if number % 2 == 0 else rows[::-1]:
                anyio.run(run_once, row, site, pages, chromium)
    elapsed, steal = time.perf_counter() - started, steal_share(times, cpu_times())

    widths = ", ".join(str(width) for width in WIDTHS)
    table = [cells(row, args.pages) for row in rows]
    print()
    shape = "a text colour of their own (axe-core on every page)" if args.varied else "one look"
    print(
        f"Layout check: {args.pages} pages of {shape} at {widths} px, {args.rounds} round(s), "
        f"{elapsed:.0f} s in all"
    )
    print(f"Machine: {machine(chromium)}")
    print(f"Load average at start: {load:.2f}; CPU steal during the run: {steal}")
    print()
    print(plain_table(HEADERS, table))
    if args.markdown:
        print()
        print(markdown_table(HEADERS, table))


if __name__ == "__main__":
    main()
