"""Tokens per second of the embedded model: through Trinity against llama-cpp-python directly.

Both sides generate the example site's blocks with the same model file, the same
documents, sampling parameters and seeds, in one process and one run, alternating which
goes first. Trinity's side is a whole build (`build_project` with the cache off: framing,
the worker thread, rendering and writing included); the direct side calls
`Llama.create_completion` in a loop. Model loading is timed apart and left out of both.

    python benchmarks/embedded_model.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from trinity.build import Project, build_project, plan_jobs, prepare
from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers.local import LocalBackend, load_llama
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


def trinity_run(model: Any, project: Project, output_dir: Path) -> Run:
    """A whole build through Trinity, cache off, sharing the already-loaded model."""
    backend = LocalBackend(project.settings.llm, loader=lambda _settings: model)

    async def build() -> Run:
        async with AsyncLLMClient(project.settings.llm, backend=backend) as client:
            started = time.perf_counter()
            report = await build_project(project, client=client)
            return Run(report.output_tokens, time.perf_counter() - started)

    return anyio.run(build)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_project(root)
        project = prepare(root, use_cache=False)
        started = time.perf_counter()
        model = load_llama(project.settings.llm)
        load_seconds = time.perf_counter() - started
        direct: list[Run] = []
        through: list[Run] = []
        for round_number in range(args.rounds):
            order = ("direct", "trinity") if round_number % 2 == 0 else ("trinity", "direct")
            for side in order:
                if side == "direct":
                    direct.append(direct_run(model, project))
                else:
                    through.append(trinity_run(model, project, root / "output"))
    direct_rate = statistics.median(r.rate for r in direct)
    trinity_rate = statistics.median(r.rate for r in through)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "model_load_s": round(load_seconds, 2),
        "rounds": args.rounds,
        "direct_tokens_per_s": round(direct_rate, 1),
        "trinity_tokens_per_s": round(trinity_rate, 1),
        "trinity_overhead_pct": round((1 - trinity_rate / direct_rate) * 100, 1),
        "direct_runs": [[r.tokens, round(r.seconds, 2)] for r in direct],
        "trinity_runs": [[r.tokens, round(r.seconds, 2)] for r in through],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
