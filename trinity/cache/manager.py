"""CacheManager: looks tiers up in order, promotes hits upwards, writes every tier.

Lookup order is memory, then Redis, then disk. A hit in a lower tier is copied into the
tiers above it; a new value goes to every tier. A tier that breaks (a full disk, an
unreadable folder) is switched off for the rest of the run after one warning; Redis
carries its own breaker, so an outage there costs one short timeout, not one per call.
A cache is an optimisation, never a reason to fail a build.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread

from trinity.cache.disk import DiskTier
from trinity.cache.memory import MemoryTier
from trinity.cache.settings import CacheSettings
from trinity.cache.tier import CacheTier, Keep, TierUsage
from trinity.logs import get_logger

log = get_logger(__name__)


class CacheManager:
    """A tiered cache of JSON-compatible values.

    Sync methods for scripts, `*_async` twins for the event loop: memory answers inline,
    Redis through its asyncio client, and disk reads inline and writes on a thread of its
    own (see DiskTier). `clear_all_async`, rare and slow, runs in a worker thread.
    """

    def __init__(self, tiers: list[CacheTier] | None = None) -> None:
        self.tiers: list[CacheTier] = list(tiers) if tiers is not None else [MemoryTier()]
        self.hits: dict[str, int] = {tier.name: 0 for tier in self.tiers}
        self.misses = 0

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> CacheManager:
        """The tiers `settings.tiers` names, configured from their sections."""
        tiers: list[CacheTier] = []
        for name in settings.tiers:
            tier = open_tier(settings, name)
            if tier is not None:
                tiers.append(tier)
        return cls(tiers)

    @property
    def lookups(self) -> int:
        return sum(self.hits.values()) + self.misses

    def tier(self, name: str) -> CacheTier | None:
        return next((tier for tier in self.tiers if tier.name == name), None)

    # ------------------------------------------------------------------ sync

    def lookup(self, key: str) -> tuple[Any, str] | None:
        """The value and the name of the tier that had it, or None."""
        tiers = list(self.tiers)  # a tier may be dropped while we look
        for index, tier in enumerate(tiers):
            value = self._call(tier, tier.get, key)
            if value is not None:
                self.hits[tier.name] = self.hits.get(tier.name, 0) + 1
                for upper in self._still_here(tiers[:index]):
                    self._call(upper, upper.set, key, value)
                return value, tier.name
        self.misses += 1
        return None

    def get(self, key: str) -> Any | None:
        found = self.lookup(key)
        return None if found is None else found[0]

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        for tier in list(self.tiers):
            self._call(tier, tier.set, key, value, ttl)

    def delete(self, key: str) -> None:
        for tier in list(self.tiers):
            self._call(tier, tier.delete, key)

    def clear_all(self) -> dict[str, int]:
        """Empty every tier; how many entries each held. A failure here is raised."""
        return {tier.name: tier.clear() for tier in self.tiers}

    def prune(self, keep: Keep | None = None) -> dict[str, int]:
        """Drop expired and unreadable entries, and those `keep` refuses; counts per tier."""
        judge = keep or (lambda key, value: True)
        return {tier.name: tier.prune(judge) for tier in self.tiers}

    def usage(self) -> list[TierUsage]:
        return [tier.usage() for tier in self.tiers]

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    # ------------------------------------------------------------------ async

    async def lookup_async(self, key: str) -> tuple[Any, str] | None:
        tiers = list(self.tiers)  # a tier may be dropped while we look
        for index, tier in enumerate(tiers):
            value = await self._call_async(tier, tier.get_async, key)
            if value is not None:
                self.hits[tier.name] = self.hits.get(tier.name, 0) + 1
                for upper in self._still_here(tiers[:index]):
                    await self._call_async(upper, upper.set_async, key, value)
                return value, tier.name
        self.misses += 1
        return None

    async def get_async(self, key: str) -> Any | None:
        found = await self.lookup_async(key)
        return None if found is None else found[0]

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        for tier in list(self.tiers):
            await self._call_async(tier, tier.set_async, key, value, ttl)

    async def delete_async(self, key: str) -> None:
        for tier in list(self.tiers):
            await self._call_async(tier, tier.delete_async, key)

    async def clear_all_async(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self.clear_all)

    async def aclose(self) -> None:
        for tier in self.tiers:
            await tier.aclose()

    # ------------------------------------------------------------------ failures

    def _call(self, tier: CacheTier, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as exc:  # a broken tier is a warning and a miss, never a failure
            self._drop(tier, exc)
            return None

    async def _call_async(
        self, tier: CacheTier, method: Callable[..., Awaitable[Any]], *args: Any
    ) -> Any:
        try:
            return await method(*args)
        except Exception as exc:  # a broken tier is a warning and a miss, never a failure
            self._drop(tier, exc)
            return None

    def _still_here(self, tiers: list[CacheTier]) -> list[CacheTier]:
        return [tier for tier in tiers if tier in self.tiers]

    def _drop(self, tier: CacheTier, exc: Exception) -> None:
        if tier in self.tiers:
            self.tiers.remove(tier)
            log.warning(
                "%s cache failed at %s (%s); continuing without it", tier.name, tier.location, exc
            )


def open_tier(settings: CacheSettings, name: str) -> CacheTier | None:
    """One tier as `settings` configure it; None (after a warning) if disk is unusable."""
    if name == "memory":
        return MemoryTier(settings.memory.max_entries, settings.memory.ttl)
    if name == "redis":
        # Imported here: redis-py is slow to import, and most builds have no Redis.
        from trinity.cache.redis import RedisTier

        r = settings.redis
        return RedisTier(
            host=r.host,
            port=r.port,
            db=r.db,
            password=r.password,
            prefix=r.prefix,
            timeout=r.timeout,
            ttl=r.ttl,
        )
    if name == "disk":
        disk = settings.disk
        return _open_disk(disk.directory, disk.max_size_mb, disk.ttl)
    raise ValueError(f"no cache tier named {name!r}")


def _open_disk(directory: Path, max_size_mb: int, ttl: float | None) -> DiskTier | None:
    try:
        return DiskTier(directory, max_size_mb=max_size_mb, ttl=ttl)
    except Exception as exc:  # any failure to open the disk tier only costs speed
        log.warning("disk cache at %s is unusable, continuing without it: %s", directory, exc)
        return None
