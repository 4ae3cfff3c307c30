"""A clock under test control, for the code that takes its clock and its sleep as arguments."""

from __future__ import annotations

import anyio.lowlevel


class FakeClock:
    """Monotonic seconds under test control; `sleep` records its argument and moves time.

    Reading the clock moves it on by `step` first (0: it stands still until `advance`).
    Tasks sleeping at once each move time to at least their own wake-up time, so time
    never runs backwards and a sleeper never wakes before it asked to.
    """

    def __init__(self, now: float = 1000.0, *, step: float = 0.0) -> None:
        self.now = now
        self.step = step
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + seconds
        await anyio.lowlevel.checkpoint()
        self.now = max(self.now, wake)
