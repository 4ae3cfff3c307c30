"""In-flight coalescing: however many callers ask for one key at once, one call is made.

The first caller for a key runs the call; the others wait for it and get its result, or
its exception. If the first caller is cancelled, a waiting caller runs the call itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: Exception | None = None
        self.finished = False


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}
        self.waiting = 0  # callers waiting now for another's call

    def __len__(self) -> int:
        """Calls in flight now."""
        return len(self._flights)

    async def run(self, key: str, call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """The result of `call` for `key`, and whether it was shared from another caller."""
        while (flight := self._flights.get(key)) is not None:
            self.waiting += 1
            try:
                await flight.done.wait()
            finally:
                self.waiting -= 1
            if flight.error is not None:
                raise flight.error
            if flight.finished:
                return flight.result, True  # type: ignore[return-value]
            # Its caller was cancelled before an answer came: loop, and run it ourselves.
        flight = _Flight[T]()
        self._flights[key] = flight
        try:
            flight.result = await call()
            flight.finished = True
            return flight.result, False
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()
