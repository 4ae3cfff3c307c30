"""The Redis tier: answers shared between machines (CI runners, teammates), as JSON bytes.

A cache must never slow a build down. Every call has a short connection and socket
timeout (100 ms by default), redis-py's own retries are off, and a small circuit breaker
opens on the first failure: after one warning the tier reads as a miss and writes
nothing, without waiting on Redis again, for the rest of the run (or until `reset_after`
seconds have passed, for long-lived processes that ask for it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from trinity.cache.codec import decode, encode
from trinity.cache.tier import Keep, TierUsage
from trinity.logs import get_logger
from trinity.messages import one_line

log = get_logger(__name__)

T = TypeVar("T")

# What a broken, stopped or unreachable Redis raises; redis-py wraps most of it already.
_FAILURES = (redis.RedisError, OSError, TimeoutError)
_SCAN_BATCH = 1000


class RedisBreaker:
    """Open after the first failure; closed again only after `reset_after` seconds, if set."""

    def __init__(
        self, reset_after: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reset_after = reset_after
        self.clock = clock
        self.opened_at: float | None = None
        self.openings = 0

    @property
    def is_open(self) -> bool:
        if self.opened_at is None:
            return False
        if self.reset_after is not None and self.clock() - self.opened_at >= self.reset_after:
            self.opened_at = None  # let the next call try Redis again
            return False
        return True

    def trip(self) -> bool:
        """Open the breaker; True if this call opened it (and so should say why)."""
        if self.opened_at is not None:
            return False
        self.opened_at = self.clock()
        self.openings += 1
        return True


class RedisTier:
    name = "redis"

    def __init__(
        self,
        *,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        password: str | None = None,
        prefix: str = "trinity:",
        timeout: float = 0.1,
        ttl: float | None = None,
        breaker: RedisBreaker | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.prefix = prefix
        self.timeout = timeout
        self.ttl = ttl
        self.breaker = breaker or RedisBreaker()
        self.clock = clock
        self._password = password
        self._sync: redis.Redis | None = None
        self._async: redis.asyncio.Redis | None = None
        # Seconds spent in calls that failed: what an outage cost the build.
        self.failed_calls = 0
        self.time_lost = 0.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.db}"

    @property
    def location(self) -> str:
        return f"redis://{self.address} {self.prefix}*"

    # ------------------------------------------------------------------ sync

    def get(self, key: str) -> Any | None:
        raw = self._run(lambda r: r.get(self.prefix + key), None)
        return decode(raw)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        payload, seconds = encode(value), self._expiry(ttl)
        self._run(lambda r: r.set(self.prefix + key, payload, ex=seconds), None)

    def delete(self, key: str) -> None:
        self._run(lambda r: r.delete(self.prefix + key), None)

    def clear(self) -> int:
        """Delete this prefix's keys only: the Redis may hold other programs' data."""
        client = self._client()
        removed = 0
        for batch in self._key_batches(client):
            removed += int(client.unlink(*batch))
        return removed

    def prune(self, keep: Keep) -> int:
        client = self._client()
        prefix = self.prefix.encode("utf-8")
        removed = 0
        for batch in self._key_batches(client):
            values = client.mget(batch)
            doomed = [
                name
                for name, raw in zip(batch, values, strict=True)
                if raw is not None and not _kept(keep, name[len(prefix) :], raw)
            ]
            if doomed:
                removed += int(client.unlink(*doomed))
        return removed

    def usage(self) -> TierUsage:
        client = self._client()
        entries = size = 0
        for batch in self._key_batches(client):
            pipe = client.pipeline(transaction=False)
            for name in batch:
                pipe.strlen(name)
            lengths = pipe.execute()
            entries += len(batch)
            size += sum(int(n) for n in lengths)
        return TierUsage(self.name, entries, size)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # ------------------------------------------------------------------ async

    async def get_async(self, key: str) -> Any | None:
        raw = await self._run_async(lambda r: r.get(self.prefix + key), None)
        return decode(raw)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        payload, seconds = encode(value), self._expiry(ttl)
        await self._run_async(lambda r: r.set(self.prefix + key, payload, ex=seconds), None)

    async def delete_async(self, key: str) -> None:
        await self._run_async(lambda r: r.delete(self.prefix + key), None)

    async def aclose(self) -> None:
        # An asyncio client belongs to its event loop: the next run makes its own.
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _expiry(self, ttl: float | None) -> int | None:
        seconds = self.ttl if ttl is None else ttl
        return None if seconds is None else max(1, round(seconds))

    def _client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis(**self._options(), retry=Retry(NoBackoff(), 0))
        return self._sync

    def _async_client(self) -> redis.asyncio.Redis:
        if self._async is None:
            self._async = redis.asyncio.Redis(**self._options(), retry=AsyncRetry(NoBackoff(), 0))
        return self._async

    def _options(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "password": self._password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }

    def _run(self, command: Callable[[redis.Redis], Any], default: T) -> Any | T:
        if self.breaker.is_open:
            return default
        started = self.clock()
        try:
            return command(self._client())
        except _FAILURES as exc:
            self._failed(exc, started)
            return default

    async def _run_async(
        self, command: Callable[[redis.asyncio.Redis], Awaitable[Any]], default: T
    ) -> Any | T:
        if self.breaker.is_open:
            return default
        started = self.clock()
        try:
            return await command(self._async_client())
        except _FAILURES as exc:
            self._failed(exc, started)
            return default

    def _failed(self, exc: BaseException, started: float) -> None:
        self.failed_calls += 1
        self.time_lost += self.clock() - started
        if self.breaker.trip():
            log.warning(
                "Redis cache at %s failed (%s); continuing without it for the rest of this run",
                self.address,
                one_line(exc),
            )

    def _key_batches(self, client: redis.Redis) -> Iterator[list[bytes]]:
        pattern = _glob_escape(self.prefix) + "*"
        batch: list[bytes] = []
        for name in client.scan_iter(match=pattern, count=_SCAN_BATCH):
            batch.append(name)
            if len(batch) == _SCAN_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _kept(keep: Keep, name: bytes, raw: Any) -> bool:
    value = decode(raw)
    return value is not None and keep(name.decode("utf-8", "replace"), value)


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)
