"""How many requests one endpoint may have on the wire: cut on a 429, grown back on success.

A 429 says "slow down", not "fail": the server is healthy but busy. So, as TCP's
congestion control does (AIMD), the limit is halved (never below 1) when a request is
rate limited, and grows by one after a run of successes as long as the limit, never
above the ceiling (`llm.concurrency`). Only one cut is made per burst: the requests that
were already on the wire when the limit was cut carry news of the old limit, and their
429s do not cut it again (TCP likewise cuts once per window of losses).

`limited_since` is when the endpoint began answering every request with 429 (None
after any success): the retry loop uses it so that, against a server that refuses
everything, blocks stop waiting once the endpoint has refused for the whole wait bound,
instead of each block sitting out the bound one after another.

Not thread-safe: one event loop uses it, and no await separates a check from its update.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio


class AdaptiveConcurrency:
    """An AIMD limit on the requests in flight to one endpoint, between 1 and `ceiling`."""

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ceiling < 1:
            raise ValueError(f"ceiling must be at least 1, not {ceiling}")
        self.ceiling = ceiling
        self.clock = clock
        self._slots = anyio.CapacityLimiter(ceiling)
        self._epoch = 0  # bumped by every cut
        self._successes = 0  # in a row since the limit last changed
        self.limited_since: float | None = None
        self.cuts = 0
        self.lowest = ceiling

    def __repr__(self) -> str:
        return f"AdaptiveConcurrency(limit={self.limit}, ceiling={self.ceiling})"

    @property
    def limit(self) -> int:
        return int(self._slots.total_tokens)

    @property
    def epoch(self) -> int:
        """What `slot` yields now: the number of cuts so far."""
        return self._epoch

    @property
    def in_flight(self) -> int:
        return self._slots.borrowed_tokens

    def slot(self) -> _Slot:
        """Hold one of the `limit` slots (`async with pacing.slot() as epoch`); the epoch
        is what to pass to `rate_limited`."""
        return _Slot(self)

    def rate_limited(self, epoch: int) -> None:
        """A request sent in `epoch` got a 429: halve the limit, once per epoch."""
        if self.limited_since is None:
            self.limited_since = self.clock()
        self._successes = 0
        if epoch != self._epoch:
            return  # sent before the last cut: that cut already answered this burst
        self._epoch += 1
        self.cuts += 1
        self._set(max(1, self.limit // 2))
        self.lowest = min(self.lowest, self.limit)

    def succeeded(self) -> None:
        """A request was answered: one more in the run; a run as long as the limit adds one."""
        self.limited_since = None
        if self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._set(self.limit + 1)

    def _set(self, limit: int) -> None:
        self._successes = 0
        # Lowering it leaves requests already in flight alone; they just are not replaced.
        self._slots.total_tokens = limit


class _Slot:
    """One slot of an AdaptiveConcurrency, held inside `async with`.

    A class rather than an `asynccontextmanager`: every request passes through one, and a
    generator-based manager costs several times as much.
    """

    __slots__ = ("_pacing",)

    def __init__(self, pacing: AdaptiveConcurrency) -> None:
        self._pacing = pacing

    async def __aenter__(self) -> int:
        await acquire_promptly(self._pacing._slots)
        return self._pacing.epoch

    async def __aexit__(self, *exc_info: object) -> None:
        self._pacing._slots.release()


async def acquire_promptly(limiter: anyio.CapacityLimiter) -> None:
    """Take a token of `limiter`: at once when one is free, else in line with the others.

    `limiter.acquire()` goes once around the event loop even when a token is free, behind
    every task ready to run: on the path of each request, with a build's dozens of tasks
    ready at once, that delayed every request's sending. FIFO order is kept: a token is
    taken at once only when nobody waits for one. Release it with `limiter.release()`.
    """
    try:
        limiter.acquire_nowait()
    except anyio.WouldBlock:
        await limiter.acquire()


__all__ = ["AdaptiveConcurrency", "acquire_promptly"]
