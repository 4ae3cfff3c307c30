"""The endpoint's adaptive concurrency: halved on a 429, grown back by successes (AIMD)."""

from __future__ import annotations

import anyio
import pytest

from tests.fakeclock import FakeClock
from trinity.llm.adaptive import AdaptiveConcurrency

pytestmark = pytest.mark.anyio


def test_starts_at_the_ceiling_and_rejects_nonsense() -> None:
    pacing = AdaptiveConcurrency(8)
    assert (pacing.limit, pacing.ceiling, pacing.cuts, pacing.limited_since) == (8, 8, 0, None)
    with pytest.raises(ValueError):
        AdaptiveConcurrency(0)


def test_a_429_halves_the_limit_never_below_one() -> None:
    pacing = AdaptiveConcurrency(32)
    limits = []
    for _ in range(7):
        pacing.rate_limited(pacing.epoch)
        limits.append(pacing.limit)
    assert limits == [16, 8, 4, 2, 1, 1, 1]
    assert pacing.lowest == 1


def test_a_burst_of_429s_sent_at_one_limit_cuts_it_once() -> None:
    pacing = AdaptiveConcurrency(32)
    sent_at = pacing.epoch
    for _ in range(32):  # every request on the wire comes back 429
        pacing.rate_limited(sent_at)
    assert (pacing.limit, pacing.cuts) == (16, 1)


def test_successes_grow_it_back_by_one_per_run_up_to_the_ceiling() -> None:
    pacing = AdaptiveConcurrency(4)
    pacing.rate_limited(pacing.epoch)
    pacing.rate_limited(pacing.epoch)
    assert pacing.limit == 1
    grown = []
    for _ in range(12):
        pacing.succeeded()
        grown.append(pacing.limit)
    # A run as long as the limit adds one: after 1, then 2, then 3 more successes.
    assert grown == [2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]


def test_limited_since_is_the_first_429_since_the_last_success() -> None:
    clock = FakeClock(now=50.0)
    pacing = AdaptiveConcurrency(4, clock=clock)
    pacing.rate_limited(pacing.epoch)
    clock.now += 3
    pacing.rate_limited(pacing.epoch)
    assert pacing.limited_since == 50.0
    pacing.succeeded()
    assert pacing.limited_since is None


async def test_the_limit_bounds_the_requests_in_flight() -> None:
    pacing = AdaptiveConcurrency(4)
    pacing.rate_limited(pacing.epoch)  # down to 2
    peak = 0
    inside = 0

    async def request() -> None:
        nonlocal peak, inside
        async with pacing.slot():
            inside += 1
            peak = max(peak, inside)
            await anyio.sleep(0.01)
            inside -= 1

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(request)
    assert peak == 2


async def test_lowering_it_leaves_requests_in_flight_alone() -> None:
    pacing = AdaptiveConcurrency(4)
    release = anyio.Event()
    entered = 0

    async def request() -> None:
        nonlocal entered
        async with pacing.slot() as epoch:
            entered += 1
            await release.wait()
            pacing.rate_limited(epoch)

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(request)
        await anyio.wait_all_tasks_blocked()
        assert (entered, pacing.in_flight) == (4, 4)
        release.set()
    assert (pacing.limit, pacing.cuts, pacing.in_flight) == (2, 1, 0)
