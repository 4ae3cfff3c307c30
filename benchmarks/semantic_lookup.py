"""A semantic cache lookup among 10,000 stored prompts: median and p99, in milliseconds.

The group's 10,000 prompts are written to a disk store (the cache folder's `semantic/`,
in a temporary folder), then a SemanticCache reads them back on its first lookup (timed
once: the load) and answers `--lookups` lookups. The embedder is in-process and instant
(a vector drawn ahead of time), so what is timed is Trinity's own part: the group's hash,
the float32 matrix-vector product and the threshold; a real embedder's round trip comes
on top (a server's, or the local model's: milliseconds). Each dimension is its own row:
256 (the fake server's), 768 (nomic-embed-text) and 1,536 (text-embedding-3-small).
numpy's BLAS is kept on one thread, as a build keeps it (semantic.one_blas_thread). For
reference, the same products with `np.einsum` (a loop of numpy's own, which the lookup
used before), measured in the same run.

    python benchmarks/semantic_lookup.py [--prompts 10000] [--lookups 1000] [--markdown]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from trinity.cache.vectors import DiskVectors, VectorRecord, encode_record
from trinity.llm.entries import KEY_VERSION
from trinity.llm.semantic import SemanticCache, group_of, one_blas_thread
from trinity.llm.settings import EmbedderSettings, SemanticSettings
from trinity.llm.types import LLMRequest

if TYPE_CHECKING:
    import numpy as np

EMBEDDER = EmbedderSettings(provider="openai", model="bench", api_url="http://bench")


class Drawn:
    """An embedder that hands out vectors drawn ahead of time, instantly."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors
        self.next = 0
        self.requests = 0
        self.tokens = 0

    async def embed(self, text: str) -> list[float]:
        vector = self.vectors[self.next % len(self.vectors)]
        self.next += 1
        return vector.tolist()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        pass


def request(prompt: str) -> LLMRequest:
    return LLMRequest.from_prompt(prompt, model="m", temperature=0, max_tokens=100)


async def measure(prompts: int, lookups: int, dimensions: int, folder: Path) -> dict[str, float]:
    import numpy as np

    rng = np.random.default_rng(dimensions)
    group = group_of("openai", "http://x", request("any"), EMBEDDER)
    store = DiskVectors(folder / f"semantic-{dimensions}")
    stored = rng.normal(size=(prompts, dimensions)).astype("<f4")
    # The file as `store.add` leaves it, written in one go (the adds are not what is timed).
    store.directory.mkdir(parents=True)
    lines = (
        encode_record(VectorRecord(f"v{KEY_VERSION}:{n:064x}", f"prompt {n}", v.tobytes()))
        for n, v in enumerate(stored)
    )
    (store.directory / f"{group}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    queries = rng.normal(size=(lookups, dimensions)).astype(np.float32)
    cache = SemanticCache(
        SemanticSettings(enabled=True, embedder=EMBEDDER),
        Drawn(queries),
        [store],
        provider="openai",
        base_url="http://x",
    )
    began = time.perf_counter()
    await cache.nearest(request("the first lookup reads the group"))
    load = time.perf_counter() - began
    times = []
    for number in range(lookups):
        began = time.perf_counter()
        await cache.nearest(request(f"prompt asked {number}"))
        times.append(time.perf_counter() - began)
    matrix = np.stack([q / np.linalg.norm(q) for q in stored]).astype(np.float32)
    einsum = []
    for query in queries:
        began = time.perf_counter()
        int(np.einsum("ij,j->i", matrix, query).argmax())
        einsum.append(time.perf_counter() - began)
    return {
        "load_ms": load * 1000,
        **percentiles("", times),
        **percentiles("einsum_", einsum),
    }


def percentiles(prefix: str, times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        f"{prefix}median_ms": statistics.median(times) * 1000,
        f"{prefix}p99_ms": times[int(len(times) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    one_blas_thread()  # before numpy's first import, as a build does
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for dimensions in (256, 768, 1536):
            result = anyio.run(measure, args.prompts, args.lookups, dimensions, Path(folder))
            rows.append((dimensions, result))
    if args.markdown:
        print(
            "| dimensions | prompts | lookup median | lookup p99 | first lookup (load) "
            "| einsum product median / p99 |"
        )
        print("|---|---|---|---|---|---|")
    for dimensions, r in rows:
        if args.markdown:
            print(
                f"| {dimensions} | {args.prompts:,} | {r['median_ms']:.3f} ms | "
                f"{r['p99_ms']:.3f} ms | {r['load_ms']:.0f} ms | "
                f"{r['einsum_median_ms']:.3f} / {r['einsum_p99_ms']:.3f} ms |"
            )
        else:
            print(
                f"{dimensions:>5} dimensions, {args.prompts:,} prompts: median "
                f"{r['median_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms (load {r['load_ms']:.0f} ms); "
                f"einsum {r['einsum_median_ms']:.3f} / {r['einsum_p99_ms']:.3f} ms"
            )


if __name__ == "__main__":
    main()
