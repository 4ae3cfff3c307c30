"""Tokens per second of the embedded model: through Trinity against llama-cpp-python directly.

Both sides generate the example site's blocks with the same model file, the same
documents, sampling parameters and seeds, in one run, alternating which goes first.
Trinity's side is a whole build (`build_project` with the cache off: framing, the
model's worker process and the socket to it, rendering and writing included); the direct
side calls `Llama.create_completion` in a loop. Model loading is left out of both.

Each side runs in a process of its own: llama.cpp's OpenMP keeps a team of spinning
threads per calling thread, and two sides in one process slowed each other down by
up to half (measured), which says nothing about either.

    python benchmarks/embedded_model.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from trinity.build import build_project
from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers.local import LocalBackend, load_llama
from trinity.plan import plan_jobs
from trinity.project import Project, prepare
from trinity.scaffold import write_project


@dataclass
class Run:
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def direct_run(model: Any, project: Project) -> Run:
    """The same requests Trinity sends, straight to llama-cpp-python."""
    client = AsyncLLMClient(project.settings.llm)
    requests = [job.request for job in plan_jobs(project, client)]
    tokens = 0
    started = time.perf_counter()
    for request in requests:
        params = dict(request.options)
        output = model.create_completion(
            request.document,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=list(request.stop),
            **params,
        )
        tokens += output["usage"]["completion_tokens"]
    return Run(tokens, time.perf_counter() - started)


def trinity_run(project: Project) -> Run:
    """A whole build through Trinity, cache off, its worker's model loaded beforehand."""
    backend = LocalBackend(project.settings.llm)

    async def build() -> Run:
        try:
            await backend.worker.ready()
            async with AsyncLLMClient(project.settings.llm, backend=backend) as client:
                started = time.perf_counter()
                report = await build_project(project, client=client)
                return Run(report.output_tokens, time.perf_counter() - started)
        finally:
            await backend.aclose()

    return anyio.run(build)


def measure(side: str, project_dir: Path) -> Run:
    """One side's run (Trinity's model runs in its worker process)."""
    project = prepare(project_dir, use_cache=False)
    if side == "direct":
        return direct_run(load_llama(project.settings.llm), project)
    return trinity_run(project)


def measure_in_subprocess(side: str, project_dir: Path) -> Run:
    command = [sys.executable, __file__, "--side", side, "--project", str(project_dir)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    tokens, seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return Run(tokens, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--side", choices=("direct", "trinity"), help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run = measure(args.side, args.project)
        print(json.dumps([run.tokens, run.seconds]))
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_project(root)
        runs: dict[str, list[Run]] = {"direct": [], "trinity": []}
        for round_number in range(args.rounds):
            order = ("direct", "trinity") if round_number % 2 == 0 else ("trinity", "direct")
            for side in order:
                runs[side].append(measure_in_subprocess(side, root))
    direct_rate = statistics.median(r.rate for r in runs["direct"])
    trinity_rate = statistics.median(r.rate for r in runs["trinity"])
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rounds": args.rounds,
        "direct_tokens_per_s": round(direct_rate, 1),
        "trinity_tokens_per_s": round(trinity_rate, 1),
        "trinity_overhead_pct": round((1 - trinity_rate / direct_rate) * 100, 1),
        "direct_runs": [[r.tokens, round(r.seconds, 2)] for r in runs["direct"]],
        "trinity_runs": [[r.tokens, round(r.seconds, 2)] for r in runs["trinity"]],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
