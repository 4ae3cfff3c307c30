"""What every cache tier offers the manager, the sizes it reports, and a thread of its own
for a tier whose blocking calls must all run on one thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Args = TypeVarTuple("Args")

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


class OwnThread:
    """One thread that runs blocking calls in the order they were asked for.

    anyio's worker threads take turns at whatever is sent to them, so state a library keeps
    per thread (diskcache's SQLite connection and its page cache) would be made again on
    each of up to 40 of them; here it is made once. The thread starts on the first call.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, func: Callable[[*Args], T], *args: *Args) -> T:
        """`func(*args)` on this thread; the event loop runs on meanwhile."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        return await _wait(self._executor.submit(func, *args))

    def stop(self, last: Callable[[], object]) -> None:
        """Run `last` on the thread after every call already asked for; end the thread.

        A later `run` starts a new thread.
        """
        finishing = self._finish(last)
        if finishing is not None:
            finishing.result()

    async def astop(self, last: Callable[[], object]) -> None:
        """`stop` without blocking the event loop while earlier calls finish."""
        finishing = self._finish(last)
        if finishing is not None:
            await _wait(finishing)

    def _finish(self, last: Callable[[], object]) -> Future[object] | None:
        if self._executor is None:
            return None
        executor, self._executor = self._executor, None
        finishing = executor.submit(last)
        # Takes no more calls; the thread ends once `last`, queued behind the rest, has run.
        executor.shutdown(wait=False)
        return finishing


async def _wait(future: Future[T]) -> T:
    # Shielded, as anyio.to_thread.run_sync is: a cancelled caller still waits for the call
    # it started, so a write is never dropped from the queue, nor left running behind a
    # caller told it had stopped. wrap_future needs asyncio, which Trinity always runs on
    # (the Redis tier's client is asyncio's too).
    with anyio.CancelScope(shield=True):
        result = await asyncio.wrap_future(future)
    return result
