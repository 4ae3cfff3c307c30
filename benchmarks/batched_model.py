"""Aggregate tokens per second of the embedded model: one block at a time against batched.

"one at a time" is how the worker generated before batching: `Llama.create_completion`,
one request after another. "batched K" is the batched engine (trinity/llm/providers/
batched.py) with K sequences, fed every request at once. Both sides generate the same
requests: the example site's text blocks as Trinity frames them, in turn, each with a
seed of its own, 128 tokens each (no stop sequences, so every sequence runs its full
length unless the model ends its text); 32 of them, so that batches stay full but at the
end (one at a time: the first 11, as its rate does not depend on how many). Model
loading and a short warm-up are left out.

Each side runs in a process of its own (llama.cpp's OpenMP threads of two sides in one
process slow each other down), in an order that turns round every round; the figures
are medians, and the ratios compare sides of the same run.

    python benchmarks/batched_model.py [--rounds 3] [--sequences 4 8 16] [--blocks 32]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers.batched import BatchedEngine
from trinity.llm.providers.local import ModelRunner
from trinity.llm.settings import LLMSettings
from trinity.llm.types import LLMRequest
from trinity.plan import plan_jobs
from trinity.project import prepare
from trinity.scaffold import write_project

TOKENS = 128
# How many blocks the one-at-a-time side generates: the example site's text blocks, once.
ONE_AT_A_TIME_BLOCKS = 11
ONE_AT_A_TIME = 0  # the side's "sequences": none, create_completion


def requests(project_dir: Path, blocks: int) -> list[LLMRequest]:
    """`blocks` requests, TOKENS tokens each, a seed each: the example site's text blocks
    in turn (it has 11; a few of them would leave most sequences idle at the end)."""
    project = prepare(project_dir, use_cache=False)
    client = AsyncLLMClient(project.settings.llm)
    planned = [job.request for job in plan_jobs(project, client)]
    texts = itertools.cycle(r for r in planned if r.response_format == "text")
    return [
        replace(
            request,
            max_tokens=TOKENS,
            stop=(),
            options={**request.options, "seed": seed},
        )
        for seed, request in zip(range(blocks), texts, strict=False)
    ]


def one_at_a_time(runner: ModelRunner, batch: list[LLMRequest]) -> tuple[int, float]:
    runner.generate(replace(batch[0], max_tokens=4))  # warm-up
    started = time.perf_counter()
    tokens = sum(runner.generate(request).usage.output_tokens for request in batch)
    return tokens, time.perf_counter() - started


def batched(runner: ModelRunner, batch: list[LLMRequest]) -> tuple[int, float]:
    engine = BatchedEngine(runner.load(), runner)
    try:
        run(engine, [replace(batch[0], max_tokens=4)])  # warm-up
        started = time.perf_counter()
        tokens = run(engine, batch)
        return tokens, time.perf_counter() - started
    finally:
        engine.close()


def run(engine: BatchedEngine, batch: list[LLMRequest]) -> int:
    """Every request at once; the tokens generated once all are answered."""
    for ident, request in enumerate(batch):
        engine.submit(ident, request)
    tokens = 0
    while engine.busy:
        for outcome in engine.step():
            assert outcome.response is not None, outcome.error
            tokens += outcome.response.usage.output_tokens
    return tokens


def measure(
    sequences: int, project_dir: Path, blocks: int, threads: int | None
) -> tuple[int, float]:
    """Tokens generated and seconds taken by one side (in this process)."""
    batch = requests(project_dir, blocks)
    settings = prepare(project_dir, use_cache=False).settings.llm
    runner = ModelRunner(replace(settings, sequences=max(1, sequences), threads=threads))
    if sequences == ONE_AT_A_TIME:
        # Its rate does not depend on how many blocks there are: the first few will do.
        return one_at_a_time(runner, batch[:ONE_AT_A_TIME_BLOCKS])
    return batched(runner, batch)


def measure_in_subprocess(
    sequences: int, project_dir: Path, blocks: int, threads: int | None
) -> float:
    command = [
        sys.executable,
        __file__,
        "--side",
        str(sequences),
        "--project",
        str(project_dir),
        "--blocks",
        str(blocks),
        *(["--threads", str(threads)] if threads else []),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    tokens, seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return float(tokens / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, nargs="+", default=[LLMSettings.sequences, 8, 16])
    parser.add_argument("--blocks", type=int, default=32)
    parser.add_argument("--threads", type=int, help="llm.threads (default: all cores)")
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side is not None:
        print(json.dumps(measure(args.side, args.project, args.blocks, args.threads)))
        return
    sides = [ONE_AT_A_TIME, *sorted(set(args.sequences))]
    rates: dict[int, list[float]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_project(root)
        for round_number in range(args.rounds):
            order = sides if round_number % 2 == 0 else sides[::-1]
            for side in order:
                rates[side].append(measure_in_subprocess(side, root, args.blocks, args.threads))
    base = statistics.median(rates[ONE_AT_A_TIME])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rounds": args.rounds,
        "threads": args.threads or os.cpu_count(),
        "load_average_after": round(os.getloadavg()[0], 2),
        "blocks": args.blocks,
        "tokens_per_block": TOKENS,
        "default_sequences": LLMSettings.sequences,
        "one_at_a_time_tokens_per_s": round(base, 1),
        **{
            f"batched_{side}_tokens_per_s": round(statistics.median(rates[side]), 1)
            for side in sides[1:]
        },
        **{
            f"batched_{side}_speedup": round(statistics.median(rates[side]) / base, 2)
            for side in sides[1:]
        },
        "runs_tokens_per_s": {
            ("one_at_a_time" if side == ONE_AT_A_TIME else f"batched_{side}"): [
                round(rate, 1) for rate in rates[side]
            ]
            for side in sides
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
