"""CacheManager: looks up tiers in order, promotes hits upwards, writes every tier.

A tier that breaks (a full disk, an unreadable folder) is switched off for the rest of
the run after one warning: a cache is an optimisation, never a reason to fail a build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread

from trinity.cache.disk import DiskTier
from trinity.cache.memory import MemoryTier
from trinity.logs import get_logger

log = get_logger(__name__)


class CacheTier(Protocol):
    name: str

    def get(self, key: str) -> Any | None: ...
    def set(self, key: str, value: Any, ttl: float | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def clear(self) -> None: ...


class CacheManager:
    """A tiered cache of JSON-compatible values: memory first, then disk.

    Sync methods for scripts, `*_async` twins for the event loop (they run the slow
    tiers in a worker thread).
    """

    def __init__(self, tiers: list[CacheTier] | None = None) -> None:
        self.tiers: list[CacheTier] = list(tiers) if tiers is not None else [MemoryTier()]
        self.hits: dict[str, int] = {tier.name: 0 for tier in self.tiers}
        self.misses = 0

    @classmethod
    def for_directory(
        cls, directory: Path, *, ttl: float | None = None, max_size_mb: int = 1024
    ) -> CacheManager:
        """Memory in front of a disk tier in `directory`; memory only if it is unusable."""
        tiers: list[CacheTier] = [MemoryTier(ttl=ttl)]
        try:
            tiers.append(DiskTier(directory, max_size_mb=max_size_mb, ttl=ttl))
        except Exception as exc:  # any failure to open the disk tier only costs speed
            log.warning("disk cache at %s is unusable, continuing without it: %s", directory, exc)
        return cls(tiers)

    def lookup(self, key: str) -> tuple[Any, str] | None:
        """The value and the name of the tier that had it, or None."""
        for index, tier in enumerate(list(self.tiers)):
            value = self._call(tier, "get", key)
            if value is not None:
                self.hits[tier.name] = self.hits.get(tier.name, 0) + 1
                for upper in self.tiers[:index]:
                    self._call(upper, "set", key, value)
                return value, tier.name
        self.misses += 1
        return None

    def get(self, key: str) -> Any | None:
        found = self.lookup(key)
        return None if found is None else found[0]

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        for tier in list(self.tiers):
            self._call(tier, "set", key, value, ttl)

    def delete(self, key: str) -> None:
        for tier in list(self.tiers):
            self._call(tier, "delete", key)

    def clear_all(self) -> None:
        for tier in list(self.tiers):
            self._call(tier, "clear")

    async def lookup_async(self, key: str) -> tuple[Any, str] | None:
        return await anyio.to_thread.run_sync(self.lookup, key)

    async def get_async(self, key: str) -> Any | None:
        return await anyio.to_thread.run_sync(self.get, key)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        await anyio.to_thread.run_sync(self.set, key, value, ttl)

    async def delete_async(self, key: str) -> None:
        await anyio.to_thread.run_sync(self.delete, key)

    async def clear_all_async(self) -> None:
        await anyio.to_thread.run_sync(self.clear_all)

    def close(self) -> None:
        for tier in self.tiers:
            close = getattr(tier, "close", None)
            if close is not None:
                close()

    def _call(self, tier: CacheTier, method: str, *args: Any) -> Any:
        try:
            return getattr(tier, method)(*args)
        except Exception as exc:  # a broken tier is a warning and a miss, never a failure
            if tier in self.tiers:
                self.tiers.remove(tier)
                log.warning("%s cache failed (%s); continuing without it", tier.name, exc)
            return None
