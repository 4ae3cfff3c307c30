"""Hit latency of each cache tier: p50 and p99 over many gets, in-process.

For each tier alone it times the sync `tier.get` and the async path a build really takes,
`await manager.lookup_async(key)` with a manager holding only that tier (so the disk row
includes the hop to a worker thread). Then the full stack, memory -> Redis -> disk, for a
hit in each position: before each get the key is deleted from the tiers above the one
being measured (untimed), so every timed lookup misses above it and promotes the answer
upwards, as a build would.

The entry is the shape `AsyncLLMClient` stores: about 1,500 characters of prose and the
answer's model, token counts, finish reason and time. Redis is a redis-server this script
starts on a free loopback port, without persistence, in a temporary folder, and stops at
the end; without redis-server on PATH the Redis rows are skipped. The disk tier lives in
a temporary folder too (`--dir` to put it on another file system).

    python benchmarks/cache_latency.py [--gets 10000] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.metadata
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import redis

from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisTier

# What Trinity's original documentation promised for a hit, and what we aim for (us).
ORIGINAL = {"memory": "< 1 ms", "redis": "5-10 ms", "disk": "20-50 ms"}
AIM_US = {"memory": 20.0, "redis": 500.0, "disk": 500.0}

PROSE = (
    "Trinity turns a folder of Markdown and a theme into a static site, asking a language "
    "model for the blocks a page leaves open. Each answer is cached under a hash of "
    "everything that shaped it, so a rebuild with nothing changed never calls a model. "
    "The first build of the example site takes a few seconds per block on a laptop; the "
    "second one reads every answer back from the cache and finishes in about a second. "
    "Teams that build on several machines share a Redis, so a page one person generated "
    "is a hit for everyone else, and CI runners start warm instead of cold. "
    "The cache is an optimisation, never a reason for a build to fail \u2014 a broken tier "
    "is switched off after one warning and the build carries on without it. "
)


@dataclass
class Row:
    group: str
    label: str
    tier: str
    p50_us: float | None = None
    p99_us: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.p50_us is None or self.p99_us is None:
            return "-"
        aim = AIM_US[self.tier]
        if self.p99_us < aim:
            return "met"
        if self.p50_us < aim:
            return "p50 only"
        return "missed"


def make_entry(index: int) -> dict[str, Any]:
    """One cached answer as `_to_entry` in trinity/llm/client.py writes it."""
    text = f"Block {index}. "
    while len(text) < 1500:
        text += PROSE
    text = text[: text.rfind(". ", 0, 1550) + 1]
    return {
        "text": text,
        "model": "gemma-3-270m-it",
        "input_tokens": 412,
        "output_tokens": 371,
        "finish_reason": "stop",
        "created": time.time(),
    }


def make_keys(count: int, salt: str) -> list[str]:
    """Keys shaped like `cache_key`'s: 'v1:<sha256 hex>'."""
    return [f"v1:{hashlib.sha256(f'{salt}{i}'.encode()).hexdigest()}" for i in range(count)]


def percentile(sorted_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000


def summarise(row: Row, samples: list[int]) -> Row:
    samples.sort()
    row.p50_us = percentile(samples, 50)
    row.p99_us = percentile(samples, 99)
    return row


def cycle(keys: list[str], count: int) -> Iterator[str]:
    for i in range(count):
        yield keys[i % len(keys)]


def _check(value: Any, label: str) -> None:
    if value is None:
        raise SystemExit(f"{label}: a get missed; the numbers would not be hit latencies")


# ---------------------------------------------------------------------- timing loops


def time_sync(
    get: Callable[[str], Any],
    keys: list[str],
    gets: int,
    warmup: int,
    label: str,
    before: Callable[[str], None] | None = None,
) -> list[int]:
    for key in cycle(keys, warmup):
        if before is not None:
            before(key)
        _check(get(key), label)
    gc.collect()
    clock = time.perf_counter_ns
    samples: list[int] = []
    for key in cycle(keys, gets):
        if before is not None:
            before(key)
        started = clock()
        value = get(key)
        samples.append(clock() - started)
        _check(value, label)
    return samples


async def time_async(
    lookup: Callable[[str], Awaitable[Any]],
    keys: list[str],
    gets: int,
    warmup: int,
    label: str,
    before: Callable[[str], Awaitable[None]] | None = None,
) -> list[int]:
    for key in cycle(keys, warmup):
        if before is not None:
            await before(key)
        _check(await lookup(key), label)
    gc.collect()
    clock = time.perf_counter_ns
    samples: list[int] = []
    for key in cycle(keys, gets):
        if before is not None:
            await before(key)
        started = clock()
        value = await lookup(key)
        samples.append(clock() - started)
        _check(value, label)
    return samples


# ---------------------------------------------------------------------- redis-server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(executable: str, folder: Path) -> Iterator[int]:
    """A private redis-server on loopback, no persistence; yields its port."""
    for _attempt in range(3):
        port = free_port()
        log = (folder / "redis.log").open("ab")
        process = subprocess.Popen(
            [
                executable,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(folder),
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            if _wait_ready(process, port):
                yield port
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    raise SystemExit(f"redis-server did not start; see its log in {folder}")


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False  # most likely the port was taken meanwhile: try another
            try:
                if client.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        client.close()


def redis_version(executable: str) -> str:
    output = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, check=False
    ).stdout
    for part in output.split():
        if part.startswith("v="):
            return part[2:]
    return output.strip() or "unknown"


# ---------------------------------------------------------------------- the machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts), or 'unknown'."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


def machine(redis_exe: str | None, disk_dir: Path) -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, "
        f"redis-server {redis_version(redis_exe) if redis_exe else 'not installed'}, "
        f"redis-py {importlib.metadata.version('redis')}, "
        f"diskcache {importlib.metadata.version('diskcache')}, "
        f"anyio {importlib.metadata.version('anyio')}; "
        f"disk tier on {file_system(disk_dir)}"
    )


# ---------------------------------------------------------------------- the runs


def run_all(args: argparse.Namespace, redis_port: int | None, disk_dir: Path) -> list[Row]:
    gets, warmup = args.gets, args.warmup
    keys = make_keys(args.keys, "bench:")
    entries = {key: make_entry(i) for i, key in enumerate(keys)}

    memory = MemoryTier(max_entries=max(10_000, len(keys)))
    disk = DiskTier(disk_dir / "cache")
    redis_tier = (
        RedisTier(host="127.0.0.1", port=redis_port, prefix="trinity-bench:")
        if redis_port is not None
        else None
    )
    tiers: list[tuple[str, Any]] = [("memory", memory), ("redis", redis_tier), ("disk", disk)]
    for _, tier in tiers:
        if tier is not None:
            for key, value in entries.items():
                tier.set(key, value)

    rows: list[Row] = []
    # Each tier alone, sync.
    for name, tier in tiers:
        row = Row("alone", f"{name}: tier.get (sync)", name)
        if tier is None:
            rows.append(_skipped(row))
            continue
        rows.append(summarise(row, time_sync(tier.get, keys, gets, warmup, row.label)))
        _progress(row)

    async def async_runs() -> list[Row]:
        found: list[Row] = []
        # Each tier alone, the build's path.
        for name, tier in tiers:
            row = Row("alone", f"{name}: await manager.lookup_async (async)", name)
            if tier is None:
                found.append(_skipped(row))
                continue
            alone = CacheManager([tier])
            samples = await time_async(alone.lookup_async, keys, gets, warmup, row.label)
            found.append(summarise(row, samples))
            _progress(row)

        # The full stack, a hit in each position.
        stack_tiers = [tier for _, tier in tiers if tier is not None]
        stack = CacheManager(stack_tiers)
        names = " -> ".join(tier.name for tier in stack_tiers)
        for position, tier in enumerate(stack_tiers):
            row = Row("stack", f"stack ({names}): hit in {tier.name}", tier.name)
            above = stack_tiers[:position]

            async def clear_above(key: str, above: list[Any] = above) -> None:
                for upper in above:
                    await upper.delete_async(key)

            samples = await time_async(
                stack.lookup_async,
                keys,
                gets,
                warmup,
                row.label,
                before=clear_above if above else None,
            )
            if stack.tiers != stack_tiers:
                raise SystemExit(f"{row.label}: a tier failed and was dropped")
            found.append(summarise(row, samples))
            _progress(row)
        if redis_tier is None:
            found.append(_skipped(Row("stack", "stack: hit in redis", "redis")))
        await stack.aclose()
        return found

    try:
        rows += anyio.run(async_runs, backend="asyncio")
    finally:
        disk.close()
        if redis_tier is not None:
            redis_tier.clear()
            redis_tier.close()
    # Each tier's sync and async rows together, then the stack.
    order = {"memory": 0, "redis": 1, "disk": 2}
    return sorted(rows, key=lambda r: (r.group != "alone", order[r.tier]))


def _skipped(row: Row) -> Row:
    row.note = "skipped: redis-server not found"
    return row


def _progress(row: Row) -> None:
    print(f"  {row.label}: p50 {row.p50_us:.1f} us, p99 {row.p99_us:.1f} us", file=sys.stderr)


# ---------------------------------------------------------------------- output


HEADERS = ("hit", "p50 (us)", "p99 (us)", "original docs", "our aim", "aim")


def _cells(row: Row) -> tuple[str, ...]:
    if row.p50_us is None or row.p99_us is None:
        return (row.label, "-", "-", ORIGINAL[row.tier], f"< {AIM_US[row.tier]:.0f} us", row.note)
    return (
        row.label,
        f"{row.p50_us:.1f}",
        f"{row.p99_us:.1f}",
        ORIGINAL[row.tier],
        f"< {AIM_US[row.tier]:.0f} us",
        row.verdict,
    )


def plain_table(rows: list[Row]) -> str:
    table = [HEADERS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = []
    for n, line in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|---|---:|---:|---|---|---|",
    ]
    for row in rows:
        cells = list(_cells(row))
        cells[0] = f"{cells[0].replace('->', '→')}"
        if cells[-1] == "missed":
            cells[-1] = "**missed**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=10_000, help="timed gets per row")
    parser.add_argument("--warmup", type=int, default=1_000, help="untimed gets per row first")
    parser.add_argument("--keys", type=int, default=1_000, help="distinct entries cycled over")
    parser.add_argument("--markdown", action="store_true", help="also print a markdown table")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the disk tier (default: a temp dir)"
    )
    parser.add_argument(
        "--redis-server",
        default=shutil.which("redis-server"),
        help="the redis-server to start (default: the one on PATH)",
    )
    args = parser.parse_args()

    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) / 2:
        print(
            f"Warning: load average {load:.1f} on {os.cpu_count()} cores; other processes "
            "will show in the tails",
            file=sys.stderr,
        )
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        disk_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.dir)))
        description = machine(args.redis_server, disk_dir)
        print(f"Machine: {description}", file=sys.stderr)
        port = None
        if args.redis_server:
            redis_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            port = stack.enter_context(redis_server(args.redis_server, redis_dir))
        else:
            print("redis-server not found on PATH: skipping the Redis rows", file=sys.stderr)
        rows = run_all(args, port, disk_dir)
    elapsed = time.perf_counter() - started

    print()
    print(f"Cache hit latency, {args.gets} gets per row ({args.warmup} warm-up), {elapsed:.0f} s")
    print(f"Machine: {description}")
    print(f"Load average at start: {load:.2f}")
    print()
    print(plain_table(rows))
    print("\n'aim' is met when p99 is under it; 'p50 only' when just the median is.")
    if args.markdown:
        print()
        print(f"Machine: {description}.")
        print()
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
