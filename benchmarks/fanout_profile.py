"""Fan-out's instant-server builds, repeated, for a profiler to watch.

Each round is a first build of benchmarks/fanout.py's synthetic site against an instant
server in this process (`httpx.MockTransport`), as in that script's breakdown, so nothing
waits and what a profiler sees of the generate phase is the work per block. Run it under
a sampling profiler for a wall view, or with `--cprofile FILE` for call counts:

    py-spy record --gil -r 997 -f raw -o profile.txt -- \\
        python benchmarks/fanout_profile.py --rounds 8
    python benchmarks/fanout_profile.py --rounds 1 --cprofile generate.prof

Each round's generate phase is printed per block: wall time, and the CPU time of the
event loop's thread and of the whole process.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import Sample, instant_answer, trinity_run, write_site


def one_round(root: Path, blocks: int, tiers: tuple[str, ...] | None) -> Sample:
    gc.collect()
    return trinity_run(
        root, blocks, True, transport=httpx.MockTransport(instant_answer), tiers=tiers
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--memory-only", action="store_true", help="no disk cache tier")
    parser.add_argument("--cprofile", type=Path, help="profile the rounds into this file")
    args = parser.parse_args()
    tiers = ("memory",) if args.memory_only else None
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_site(root, "http://127.0.0.1:9/", args.blocks, args.concurrency)
        one_round(root, args.blocks, tiers)  # warm-up: imports, template compilation
        profiler = cProfile.Profile() if args.cprofile else None
        for _ in range(args.rounds):
            if profiler is not None:
                profiler.enable()
            sample = one_round(root, args.blocks, tiers)
            if profiler is not None:
                profiler.disable()
            per_block = 1000 / args.blocks
            print(
                f"generate per block: {sample.seconds * per_block:.2f} ms wall, "
                f"{sample.loop_cpu * per_block:.2f} ms event loop CPU, "
                f"{sample.cpu * per_block:.2f} ms process CPU",
                file=sys.stderr,
            )
        if profiler is not None:
            profiler.dump_stats(args.cprofile)


if __name__ == "__main__":
    main()
