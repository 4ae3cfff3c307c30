"""The memory tier: a bounded LRU of JSON-compatible values, with an optional TTL."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from trinity.cache.tier import Keep, TierUsage


class MemoryTier:
    """At most `max_entries` values, the least recently used evicted first.

    Its calls never block, so the async twins run inline, not in a thread.
    """

    name = "memory"
    location = "this process"

    def __init__(
        self,
        max_entries: int = 10_000,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float | None, Any]] = OrderedDict()
        # Scripts may share one manager between threads.
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires is not None and self.clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else ttl
        expires = None if ttl is None else self.clock() + ttl
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            return count

    def prune(self, keep: Keep) -> int:
        now = self.clock()
        with self._lock:
            doomed = [
                key
                for key, (expires, value) in self._entries.items()
                if (expires is not None and now >= expires) or not keep(key, value)
            ]
            for key in doomed:
                del self._entries[key]
        return len(doomed)

    def usage(self) -> TierUsage:
        with self._lock:
            values = [value for _, value in self._entries.values()]
        size = sum(len(json.dumps(v, ensure_ascii=False).encode("utf-8")) for v in values)
        return TierUsage(self.name, len(values), size)

    def close(self) -> None:
        """Nothing to release: the entries go with the process."""

    async def get_async(self, key: str) -> Any | None:
        return self.get(key)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.set(key, value, ttl)

    async def delete_async(self, key: str) -> None:
        self.delete(key)

    async def aclose(self) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._entries)
