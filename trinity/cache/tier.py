"""What every cache tier offers the manager, and the sizes it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread

# Decides, for `prune`, whether an entry (its key and value) is still worth keeping.
Keep = Callable[[str, Any], bool]


@dataclass(frozen=True)
class TierUsage:
    """What a tier holds now."""

    name: str
    entries: int
    bytes: int


class CacheTier(Protocol):
    name: str

    @property
    def location(self) -> str: ...

    def get(self, key: str) -> Any | None: ...
    def set(self, key: str, value: Any, ttl: float | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def clear(self) -> int: ...
    def prune(self, keep: Keep) -> int: ...
    def usage(self) -> TierUsage: ...
    def close(self) -> None: ...
    async def get_async(self, key: str) -> Any | None: ...
    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None: ...
    async def delete_async(self, key: str) -> None: ...
    async def aclose(self) -> None: ...


class ThreadedAsync:
    """Async twins for a tier whose calls block (files, SQLite): run them in a worker thread."""

    def get(self, key: str) -> Any | None:
        raise NotImplementedError

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    async def get_async(self, key: str) -> Any | None:
        return await anyio.to_thread.run_sync(self.get, key)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        await anyio.to_thread.run_sync(self.set, key, value, ttl)

    async def delete_async(self, key: str) -> None:
        await anyio.to_thread.run_sync(self.delete, key)

    async def aclose(self) -> None:
        self.close()
