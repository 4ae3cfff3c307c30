"""What issue 19's four ways of spending less save, on one site, in one run.

The site is `--blocks` pages of one text block each (the e2e tests' collection: "One line
about Item 001." ...), built with Trinity's CLI in this process against the loopback fake
server of the tests (tests/fakellm.py), which counts a word as a token, caches prompts as
OpenAI and Anthropic do (`prompt_cache=True`), and answers their batch APIs. Every build
is priced at one made-up price (PRICES) so the figures compare; each row is a ratio
measured in this run, for OpenAI's and Anthropic's wire formats:

- batch / live: the cost of a build with `--batch` over the cost of the same build asked
  live (a fresh project each, the same answers and usage);
- prompt cache: what the providers' prompt caches saved of the input's cost, with a site
  whose system prompt (a 300-word style guide every block shares) is most of its input,
  and the cost of that build over the same build with `llm.prompt_cache: false`;
- dry-run estimate / real: after a first build (the usage history), the site's system
  prompt changed so every block is asked again; `--dry-run`'s estimate over what that
  build then cost;
- semantic cache: at temperature 0, a first build asking a 30-word line about each item,
  then one word of the prompt changed ("a busy reader" -> "a hurried reader"): the share
  of blocks served the answer of a similar prompt, and the cost of that rebuild over the
  first build's.

    python benchmarks/cost.py [--blocks 200] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The fake server and the project kit are the tests' own.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.sitekit import MODEL, SiteProject
from tests.fakellm import FakeLLMServer

PRICES = {MODEL: {"input": 1.0, "output": 4.0, "cached_input": 0.1, "cache_write": 1.25}}
KEYS = {"OPENAI_API_KEY": "sk-bench-cost", "ANTHROPIC_API_KEY": "sk-ant-bench-cost"}
STYLE_GUIDE = " ".join(
    f"Rule {n}: keep sentences short, name the project, prefer concrete facts."
    for n in range(1, 31)
)
PROVIDERS = ("openai", "anthropic")
ABOUT_ITEM = (
    "Write one short and friendly line about {{ item.name }} for its page on the site, in "
    "plain words that a busy reader will take in at a glance, with no list and no heading."
)


def project(root: Path, provider: str, blocks: int, **llm: Any) -> SiteProject:
    """A fresh project of `blocks` one-block pages on its own fake server."""
    server = FakeLLMServer(prompt_cache=True)
    site = SiteProject.create(root / f"{provider}-{time.monotonic_ns()}", server, provider=provider)
    site.use_collection(blocks, max_tokens=60)
    site.update_settings("llm", prices=PRICES, batch={"poll_interval": 0.02}, **llm)
    return site


def build(site: SiteProject, *args: str) -> dict[str, Any]:
    """The totals of a build (or the estimate of a dry run)."""
    result = site.build("--json", *args, env=KEYS)
    if result.exit_code != 0:
        raise SystemExit(f"trinity build {' '.join(args)} failed:\n{result.describe()}")
    report = json.loads(result.stdout)
    return report["estimate"] if "--dry-run" in args else report["totals"]


def batch_over_live(root: Path, provider: str, blocks: int) -> dict[str, float]:
    live = build(project(root, provider, blocks))["cost_usd"]
    batched = build(project(root, provider, blocks), "--batch")["cost_usd"]
    return {"live_usd": live, "batch_usd": batched, "ratio": batched / live}


def prompt_cache(root: Path, provider: str, blocks: int) -> dict[str, float]:
    cached = build(project(root, provider, blocks, system=STYLE_GUIDE))
    plain = build(project(root, provider, blocks, system=STYLE_GUIDE, prompt_cache=False))
    # What the input would have cost at the full input price, and what was saved of it.
    input_usd = cached["input_tokens"] * PRICES[MODEL]["input"] / 1e6
    return {
        "saved_share": cached["prompt_cache_saved_usd"] / input_usd,
        "ratio": cached["cost_usd"] / plain["cost_usd"],
        "cached_share": cached["cached_input_tokens"] / cached["input_tokens"],
    }


def estimate_over_real(root: Path, provider: str, blocks: int) -> dict[str, float]:
    site = project(root, provider, blocks)
    build(site)
    site.update_settings("llm", system="Write plainly, for engineers who skim.")
    estimate = build(site, "--dry-run")["cost_usd"]
    real = build(site)["cost_usd"]
    return {"estimate_usd": estimate, "real_usd": real, "ratio": estimate / real}


def semantic_rebuild(root: Path, provider: str, blocks: int) -> dict[str, float]:
    site = project(root, provider, blocks, temperature=0)
    # The fake server's /v1/embeddings, for either wire format (Anthropic has none).
    embedder = {"provider": "openai", "model": "fake-embedder", "api_url": site.server.url}
    site.update_settings("cache", semantic={"enabled": True, "embedder": embedder})
    reword(site, ABOUT_ITEM)
    first = build(site)
    reword(site, ABOUT_ITEM.replace("busy", "hurried"))
    again = build(site)
    return {
        "hit_share": again["semantic_hits"] / blocks,
        "ratio": again["cost_usd"] / first["cost_usd"],
    }


def reword(site: SiteProject, prompt: str) -> None:
    def change(pages: list[dict[str, Any]]) -> None:
        pages[0]["blocks"]["summary"]["prompt"] = prompt

    site.edit_pages(change)


def measure(blocks: int) -> dict[str, dict[str, dict[str, float]]]:
    sides: dict[str, Callable[[Path, str, int], dict[str, float]]] = {
        "batch": batch_over_live,
        "prompt_cache": prompt_cache,
        "estimate": estimate_over_real,
        "semantic": semantic_rebuild,
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, side in sides.items():
            results[name] = {p: side(Path(folder), p, blocks) for p in PROVIDERS}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=200)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    r = measure(args.blocks)
    rows = [
        (
            "batch / live cost",
            lambda p: (
                f"{r['batch'][p]['ratio']:.3f} (${r['batch'][p]['batch_usd']:.4f} / "
                f"${r['batch'][p]['live_usd']:.4f})"
            ),
        ),
        (
            "prompt cache: share of the input's cost saved (input read from the cache)",
            lambda p: (
                f"{r['prompt_cache'][p]['saved_share']:.1%} "
                f"({r['prompt_cache'][p]['cached_share']:.1%})"
            ),
        ),
        (
            "prompt cache: build cost / the same with llm.prompt_cache: false (OpenAI "
            "caches by itself: the setting changes nothing there)",
            lambda p: f"{r['prompt_cache'][p]['ratio']:.3f}",
        ),
        (
            "dry-run estimate / real cost, every prompt changed",
            lambda p: (
                f"{r['estimate'][p]['ratio']:.3f} (${r['estimate'][p]['estimate_usd']:.4f}"
                f" / ${r['estimate'][p]['real_usd']:.4f})"
            ),
        ),
        (
            "semantic cache: blocks served a similar prompt's answer, one word of every "
            "prompt changed",
            lambda p: (
                f"{r['semantic'][p]['hit_share']:.1%} (rebuild cost / first: "
                f"{r['semantic'][p]['ratio']:.3f})"
            ),
        ),
    ]
    if args.markdown:
        print(f"| {args.blocks} blocks | OpenAI | Anthropic |")
        print("|---|---|---|")
        for label, cell in rows:
            print(f"| {label} | {cell('openai')} | {cell('anthropic')} |")
    else:
        for label, cell in rows:
            print(f"{label}: OpenAI {cell('openai')}; Anthropic {cell('anthropic')}")


if __name__ == "__main__":
    main()
