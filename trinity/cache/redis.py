"""The Redis tier: answers shared between machines (CI runners, teammates), as JSON bytes.

A cache must never slow a build down: the tier talks to Redis through a RedisLink
(trinity.cache.redislink), whose short timeouts and breaker make an outage cost one
warning and one short wait, after which the tier reads as a miss and writes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio

from trinity.cache.codec import decode, encode
from trinity.cache.namespaces import SHARED_NAMESPACES
from trinity.cache.redislink import RedisBreaker, RedisLink
from trinity.cache.tier import Keep, TierUsage

T = TypeVar("T")

_SCAN_BATCH = 1000


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
        timeout: float = 0.5,
        ttl: float | None = None,
        breaker: RedisBreaker | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.link = RedisLink(
            host=host,
            port=port,
            db=db,
            password=password,
            prefix=prefix,
            timeout=timeout,
            breaker=breaker,
            clock=clock,
            purpose="Redis cache",
        )
        self.host, self.port, self.db = host, port, db
        self.prefix = prefix
        self.timeout = timeout
        self.ttl = ttl
        self.breaker = self.link.breaker

    @property
    def failed_calls(self) -> int:
        return self.link.failed_calls

    @property
    def time_lost(self) -> float:
        """Seconds spent in calls that failed: what an outage cost the build."""
        return self.link.time_lost

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
        self.link.close()

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
        await self.link.aclose()

    # ------------------------------------------------------------------ plumbing

    def _expiry(self, ttl: float | None) -> int | None:
        seconds = self.ttl if ttl is None else ttl
        return None if seconds is None else max(1, round(seconds))

    def _client(self) -> redis.Redis:
        return self.link.client()

    def _run(self, command: Callable[[redis.Redis], Any], default: T) -> Any | T:
        return self.link.run(command, default)

    async def _run_async(
        self, command: Callable[[redis.asyncio.Redis], Awaitable[Any]], default: T
    ) -> Any | T:
        return await self.link.run_async(command, default)

    def _key_batches(self, client: redis.Redis) -> Iterator[list[bytes]]:
        """The names of this prefix's cached answers, in batches (not the shared state)."""
        pattern = _glob_escape(self.prefix) + "*"
        shared = tuple((self.prefix + space).encode("utf-8") for space in SHARED_NAMESPACES)
        batch: list[bytes] = []
        for name in client.scan_iter(match=pattern, count=_SCAN_BATCH):
            if name.startswith(shared):
                continue
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
