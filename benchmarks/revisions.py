"""A/B of two revisions: one benchmark run alternately on an older commit and on this tree.

    python benchmarks/revisions.py --base c96cb90 --rounds 3 -- site_scale.py --large 5000

The older commit is checked out into a temporary git worktree (removed afterwards), and
both run with this virtual environment, taking turns so that a machine getting busier
or quieter weighs on both alike. A benchmark the older commit does not have yet runs
from this tree on both sides (with each side's code on PYTHONPATH), so a new benchmark
can measure the code before it. Each run's markdown table rows are read, and for each
row the median of its first number (a wall time, in the benchmark's own unit) on each
side is shown, with their ratio: below 1.00 this tree is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, benchmark: list[str]) -> dict[str, float]:
    """Row name -> the row's first number, in one run of the benchmark in `tree`."""
    script, *args = benchmark
    path = tree / "benchmarks" / script
    if not path.exists():
        path = ROOT / "benchmarks" / script
    done = subprocess.run(
        [sys.executable, str(path), *args, "--markdown"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 1:
            try:
                rows[cells[0]] = float(cells[1])
            except ValueError:
                continue  # a header, or a row without a number
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the older revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("benchmark", nargs="+", help="a script in benchmarks/ and its options")
    options = parser.parse_args()
    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(base), options.base], cwd=ROOT, check=True
        )
        try:
            for number in range(options.rounds):
                for side, tree in (("base", base), ("this", ROOT)):
                    print(f"round {number + 1}/{options.rounds}: {side}", file=sys.stderr)
                    for row, seconds in run(tree, options.benchmark).items():
                        times[row][side].append(seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    print(f"| row | {options.base} | this tree | ratio |")
    print("|---|---:|---:|---:|")
    for row, sides in times.items():
        if len(sides["base"]) == len(sides["this"]) == options.rounds:
            old, new = statistics.median(sides["base"]), statistics.median(sides["this"])
            ratio = f"{new / old:.2f}" if old else "-"
            print(f"| {row} | {old:g} | {new:g} | {ratio} |")


if __name__ == "__main__":
    main()
