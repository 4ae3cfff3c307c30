"""Grounding of the embedded model: how often the example site's project blocks say what
the project is.

The example site (as `trinity init` writes it) is built with the embedded base model once
per seed (`llm.options.seed`), cache off; in every project page's `summary` and `lessons`
blocks, as published, the benchmark looks for the project's language and the main noun
of its description (the NOUNS below). The project's name is taken out of the text first,
so that "Harbor Metrics" does not count as saying "metrics". The language is matched as
a word with its case ("Go", not "go"); a noun as the start of a word in any case
("archive" in "archives").

Builds run through the `trinity` command in a subprocess, so the code measured is that of
the tree on PYTHONPATH: `revisions.py --base REV -- grounding.py` compares two framings.

    python benchmarks/grounding.py [--seeds 5] [--threads N] [--markdown]
"""

from __future__ import annotations

import argparse
import html
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_at_start, markdown_table, plain_table

# What each example project is, in a word or two: its description's main noun.
NOUNS = {
    "Tidewater": ("ETL",),
    "Quill CLI": ("Markdown", "archive"),
    "Harbor Metrics": ("metrics",),
    "Lumen": ("accessibility", "extension"),
}
BLOCKS = ("summary", "lessons")


@dataclass
class Tally:
    """How many blocks mention the language, the noun, and both, out of `blocks`."""

    blocks: int = 0
    language: int = 0
    noun: int = 0
    both: int = 0

    def add(self, says_language: bool, says_noun: bool) -> None:
        self.blocks += 1
        self.language += says_language
        self.noun += says_noun
        self.both += says_language and says_noun


def mentions(item: dict[str, Any], text: str) -> tuple[bool, bool]:
    """Whether `text` names the item's language, and its main noun (outside its name)."""
    rest = text.replace(str(item["name"]), " ")
    language = re.search(rf"\b{re.escape(str(item['language']))}\b", rest) is not None
    nouns = "|".join(re.escape(noun) for noun in NOUNS[item["name"]])
    noun = re.search(rf"\b(?:{nouns})", rest, re.IGNORECASE) is not None
    return language, noun


def block_text(page: str, block: str) -> str:
    """The published text of a block, from its section of a page the built-in theme made."""
    match = re.search(
        rf'<section class="block" id="block-{block}".*?</h2>(.*?)</section>', page, re.DOTALL
    )
    if match is None:
        raise SystemExit(f"no block '{block}' on the page; was the theme changed?")
    return html.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def trinity(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "trinity", *args], cwd=cwd, check=True, capture_output=True
    )


def build(site: Path, seed: int, threads: int | None) -> None:
    """One build of the site with the model's seed set, nothing read from or kept in a cache."""
    path = site / "config" / "settings.yaml"
    settings = yaml.safe_load(path.read_text("utf-8"))
    settings["llm"].setdefault("options", {})["seed"] = seed
    if threads is not None:
        settings["llm"]["threads"] = threads
    path.write_text(yaml.safe_dump(settings, sort_keys=False), "utf-8")
    trinity("build", "--no-cache", cwd=site)


def measure(seeds: int, threads: int | None) -> dict[tuple[str, str], Tally]:
    """(project, block) -> its tally over the seeds."""
    tallies: dict[tuple[str, str], Tally] = {}
    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder) / "site"
        trinity("init", str(site), cwd=Path(folder))
        items = yaml.safe_load((site / "content" / "data" / "projects.yaml").read_text("utf-8"))
        for seed in range(seeds):
            print(f"seed {seed + 1}/{seeds}", file=sys.stderr)
            build(site, seed, threads)
            for item in items:
                slug = re.sub(r"[^a-z0-9]+", "-", item["name"].lower()).strip("-")
                page = (site / "output" / "projects" / slug / "index.html").read_text("utf-8")
                for block in BLOCKS:
                    tally = tallies.setdefault((item["name"], block), Tally())
                    tally.add(*mentions(item, block_text(page, block)))
    return tallies


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}" if whole else "-"


def rows(tallies: dict[tuple[str, str], Tally]) -> list[tuple[str, ...]]:
    """The totals (language and noun, each alone), then each block's share saying both."""
    total = Tally()
    for tally in tallies.values():
        total.blocks += tally.blocks
        total.language += tally.language
        total.noun += tally.noun
        total.both += tally.both
    table = [
        ("language and main noun", share(total.both, total.blocks), str(total.blocks)),
        ("language", share(total.language, total.blocks), str(total.blocks)),
        ("main noun", share(total.noun, total.blocks), str(total.blocks)),
    ]
    for (name, block), tally in tallies.items():
        table.append((f"{name}: {block}", share(tally.both, tally.blocks), str(tally.blocks)))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="builds, one per seed 0, 1, ...")
    parser.add_argument("--threads", type=int, help="llm.threads (default: the model's)")
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args()
    load_at_start("build times, not in the shares")
    tallies = measure(options.seeds, options.threads)
    headers = ("project blocks that mention", "% of blocks", "blocks")
    table = markdown_table if options.markdown else plain_table
    print(f"{cpu_model()}, {os.cpu_count()} cores; {options.seeds} seeds")
    print(table(headers, rows(tallies)))


if __name__ == "__main__":
    main()
