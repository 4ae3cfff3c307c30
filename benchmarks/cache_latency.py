"""Hit latency of each cache tier: p50 and p99 over many gets, in-process.

For each tier alone it times the sync `tier.get` and the async path a build really takes,
`await manager.lookup_async(key)` with a manager holding only that tier (the disk tier
reads inline on the event loop's thread; only its writes go to a thread of its own).
Then the full stack, memory -> Redis -> disk, for a hit in each position: before each
batch of distinct keys is read, its keys are deleted from the tiers above the one
measured (untimed), so every timed lookup misses above it and promotes the answer
upwards, as a build would. Last, for reference, what those latencies are made of: a
no-op hop through anyio's worker thread (what a disk read paid on top when it ran in
one) and a raw Redis PING round trip, sync and async (a fifth as many gets).

The rows take turns, in `--rounds` slices of their gets, so that a noisy moment on a
shared machine spreads over every row instead of landing on one.

The entry is the shape `AsyncLLMClient` stores: about 1,500 characters of prose and the
answer's model, token counts, finish reason and time. Redis is a redis-server this script
starts on a free loopback port, without persistence, in a temporary folder, and stops at
the end; without redis-server on PATH the Redis rows are skipped. The disk tier lives in
a temporary folder too (`--dir` to put it on another file system).

    python benchmarks/cache_latency.py [--gets 10000] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis

from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisTier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import (
    cpu_model,
    cpu_times,
    file_system,
    load_at_start,
    plain_table,
    steal_share,
    stop,
)

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
    group: str  # "alone", "stack", or "reference" (no tier: what the others are made of)
    label: str
    tier: str
    p50_us: float | None = None
    p99_us: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.p50_us is None or self.p99_us is None or self.tier not in AIM_US:
            return ""
        aim = AIM_US[self.tier]
        if self.p99_us < aim:
            return "met"
        if self.p50_us < aim:
            return "p50 only"
        return "missed"


def make_entry(index: int) -> dict[str, Any]:
    """One cached answer as `to_entry` in trinity/llm/entries.py writes it."""
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


# ---------------------------------------------------------------------- timing


@dataclass
class Measurement:
    """One row's timed call: sync (`get` returns the value) or async (it returns an awaitable)."""

    row: Row
    get: Callable[[str], Any]
    is_async: bool
    # Untimed, before a batch of distinct keys is read: empties the tiers above the one
    # measured, in one go (one Redis round trip for the batch, not one per get).
    prepare: Callable[[list[str]], None] | None = None
    # The tier `lookup_async` must report the hit from.
    expect: str | None = None
    samples: list[int] = field(default_factory=list)
    turn: int = 0


async def take(measurement: Measurement, keys: list[str], count: int, timed: bool) -> None:
    """`count` gets, the keys taken in turn; their times kept if `timed`."""
    clock = time.perf_counter_ns
    get, prepare = measurement.get, measurement.prepare
    done = 0
    while done < count:
        size = min(len(keys), count - done)
        batch = [keys[(measurement.turn + i) % len(keys)] for i in range(size)]
        measurement.turn += size
        done += size
        if prepare is not None:
            prepare(batch)
        for key in batch:
            if measurement.is_async:
                started = clock()
                value = await get(key)
                elapsed = clock() - started
            else:
                started = clock()
                value = get(key)
                elapsed = clock() - started
            if timed:
                measurement.samples.append(elapsed)
            _check(measurement, value)


def _check(measurement: Measurement, value: Any) -> None:
    label = measurement.row.label
    if value is None:
        raise SystemExit(f"{label}: a get missed; the numbers would not be hit latencies")
    if measurement.expect is not None and value[1] != measurement.expect:
        raise SystemExit(f"{label}: the hit came from {value[1]}, not {measurement.expect}")


async def run_rounds(
    measurements: list[Measurement], keys: list[str], gets: int, warmup: int, rounds: int
) -> None:
    """Every measurement in turn, in `rounds` slices, so that a noisy moment on a shared
    machine spreads over all rows instead of landing on one."""
    for measurement in measurements:
        await take(measurement, keys, warmup, timed=False)
    for number in range(rounds):
        print(f"  round {number + 1}/{rounds}", file=sys.stderr)
        share = gets // rounds + (1 if number < gets % rounds else 0)
        gc.collect()
        for measurement in measurements:
            # A few untimed gets first: the other rows have just run on this core.
            await take(measurement, keys, min(warmup, 10), timed=False)
            # The references only explain the other rows: a fifth of the gets will do.
            count = share if measurement.row.group != "reference" else max(1, share // 5)
            await take(measurement, keys, count, timed=True)
    for measurement in measurements:
        summarise(measurement.row, measurement.samples)


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
            stop(process)
            log.close()
    tail = (folder / "redis.log").read_text(errors="replace").strip().splitlines()[-5:]
    raise SystemExit("redis-server did not start:\n" + "\n".join(tail))


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
    return output.strip().split("\n")[0] or "unknown"


# ---------------------------------------------------------------------- the machine


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
    keys = make_keys(args.keys, "bench:")
    memory = MemoryTier(max_entries=max(10_000, len(keys)))
    disk = DiskTier(disk_dir / "cache")
    redis_tier = (
        RedisTier(host="127.0.0.1", port=redis_port, prefix="trinity-bench:")
        if redis_port is not None
        else None
    )
    tiers: list[Any] = [memory, redis_tier, disk]
    # For the benchmark's own untimed chores.
    admin = redis.Redis(host="127.0.0.1", port=redis_port) if redis_port is not None else None
    for index, key in enumerate(keys):
        entry = make_entry(index)
        for tier in tiers:
            if tier is not None:
                tier.set(key, entry)

    async def measure() -> list[Row]:
        rows: list[Row] = []
        measurements: list[Measurement] = []

        def add(row: Row, get: Callable[[str], Any] | None, is_async: bool, **extra: Any) -> None:
            rows.append(row if get is not None else _skipped(row))
            if get is not None:
                measurements.append(Measurement(row, get, is_async, **extra))

        # Each tier alone: sync, and the build's path.
        for name, tier in zip(("memory", "redis", "disk"), tiers, strict=True):
            if tier is None:
                add(Row("alone", f"{name}: tier.get (sync)", name), None, False)
                add(Row("alone", f"{name}: await manager.lookup_async (async)", name), None, True)
                continue
            add(Row("alone", f"{name}: tier.get (sync)", name), tier.get, False)
            add(
                Row("alone", f"{name}: await manager.lookup_async (async)", name),
                CacheManager([tier]).lookup_async,
                True,
            )

        # The full stack, a hit in each position.
        stack_tiers = [tier for tier in tiers if tier is not None]
        stack = CacheManager(stack_tiers)
        names = " -> ".join(tier.name for tier in stack_tiers)
        for position, tier in enumerate(stack_tiers):
            above = stack_tiers[:position]

            def clear_above(batch: list[str], above: list[Any] = above) -> None:
                for upper in above:
                    if upper is redis_tier:
                        admin.delete(*(redis_tier.prefix + key for key in batch))
                    else:
                        for key in batch:
                            upper.delete(key)

            row = Row("stack", f"stack ({names}): hit in {tier.name}", tier.name)
            prepare = clear_above if above else None
            add(row, stack.lookup_async, True, prepare=prepare, expect=tier.name)
            if tier is memory and redis_tier is None:
                add(Row("stack", "stack: hit in redis", "redis"), None, True)

        # What the tiers' latencies are made of, measured the same way.
        add(Row("reference", "reference: await anyio.to_thread.run_sync(no-op)", ""), _hop, True)
        streams = None
        if redis_port is not None:
            sock = socket.create_connection(("127.0.0.1", redis_port), timeout=1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            streams = await asyncio.open_connection("127.0.0.1", redis_port)
            reader, writer = streams

            def ping(_key: str) -> bytes:
                sock.sendall(b"PING\r\n")
                return sock.recv(64)

            async def ping_async(_key: str) -> bytes:
                writer.write(b"PING\r\n")
                return await reader.readuntil(b"\r\n")

            add(Row("reference", "reference: raw PING over a blocking socket", ""), ping, False)
            add(Row("reference", "reference: raw PING over asyncio streams", ""), ping_async, True)
        try:
            await run_rounds(measurements, keys, args.gets, args.warmup, args.rounds)
            if stack.tiers != stack_tiers:
                raise SystemExit("a tier failed and the manager dropped it")
        finally:
            if streams is not None:
                sock.close()
                streams[1].close()
            if redis_tier is not None:
                await redis_tier.aclose()
        return rows

    try:
        return anyio.run(measure, backend="asyncio")
    finally:
        disk.close()
        if redis_tier is not None and admin is not None:
            redis_tier.clear()
            redis_tier.close()
            admin.close()


async def _hop(key: str) -> str:
    return await anyio.to_thread.run_sync(str, key)


def _skipped(row: Row) -> Row:
    row.note = "skipped: redis-server not found"
    return row


# ---------------------------------------------------------------------- output


HEADERS = ("hit", "p50 (us)", "p99 (us)", "original docs", "our aim", "aim")


def _cells(row: Row) -> tuple[str, ...]:
    original = ORIGINAL.get(row.tier, "")
    aim = f"< {AIM_US[row.tier]:.0f} us" if row.tier in AIM_US else ""
    if row.p50_us is None or row.p99_us is None:
        return (row.label, "-", "-", original, aim, row.note)
    return (row.label, f"{row.p50_us:.1f}", f"{row.p99_us:.1f}", original, aim, row.verdict)


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
    parser.add_argument("--warmup", type=int, default=500, help="untimed gets per row first")
    parser.add_argument(
        "--rounds", type=int, default=10, help="slices the rows take turns in (spreads noise)"
    )
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

    load = load_at_start("tails")
    started, times = time.perf_counter(), cpu_times()
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
    elapsed, steal = time.perf_counter() - started, steal_share(times, cpu_times())

    print()
    print(f"Cache hit latency, {args.gets} gets per row ({args.warmup} warm-up), {elapsed:.0f} s")
    print(f"Machine: {description}")
    print(f"Load average at start: {load:.2f}; CPU steal during the run: {steal}")
    print()
    print(plain_table(HEADERS, [_cells(row) for row in rows]))
    print("\n'aim' is met when p99 is under it; 'p50 only' when just the median is.")
    if args.markdown:
        print()
        print(f"Machine: {description}.")
        print()
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
