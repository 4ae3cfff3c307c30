"""The retry layer: which errors are retried, how long it waits, and when it gives up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakeclock import FakeClock
from trinity.errors import (
    BudgetExceeded,
    CircuitBreakerOpen,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitedError,
)
from trinity.llm.headers import parse_retry_after
from trinity.llm.http import error_for_status
from trinity.llm.retry import RetryBudget, RetryPolicy, backoff_delay, call_with_retry

pytestmark = pytest.mark.anyio

POLICY = RetryPolicy()


class Sleeper:
    """A sleep that records what it was asked and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Flaky:
    """An async call that raises the given errors in turn, then answers "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def always(make: Callable[[], BaseException]) -> Flaky:
    return Flaky(*(make() for _ in range(50)))


def no_random() -> float:
    raise AssertionError("the random source should not be used here")


def sequence(*values: float) -> Callable[[], float]:
    source: Iterator[float] = iter(values)
    return lambda: next(source)


# ---------------------------------------------------------------------------- policy and backoff


def test_policy_defaults_and_frozen() -> None:
    assert (POLICY.attempts, POLICY.base_delay, POLICY.max_delay, POLICY.retry_after_cap) == (
        3,
        0.5,
        8.0,
        60.0,
    )
    with pytest.raises(FrozenInstanceError):
        POLICY.attempts = 5  # type: ignore[misc]


def test_backoff_doubles_up_to_the_ceiling() -> None:
    ceilings = [backoff_delay(POLICY, n, lambda: 1.0) for n in range(1, 9)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert backoff_delay(POLICY, 10_000, lambda: 1.0) == 8.0


def test_backoff_is_full_jitter() -> None:
    assert backoff_delay(POLICY, 1, lambda: 0.0) == 0.0
    assert backoff_delay(POLICY, 3, lambda: 0.25) == 0.5
    with pytest.raises(ValueError):
        backoff_delay(POLICY, 0, lambda: 0.5)


@given(
    retry_number=st.integers(min_value=1, max_value=200),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
    base=st.floats(min_value=0, max_value=10),
    ceiling=st.floats(min_value=0, max_value=100),
)
def test_backoff_stays_within_bounds(
    retry_number: int, r: float, base: float, ceiling: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=ceiling)
    delay = backoff_delay(policy, retry_number, lambda: r)
    bound = min(ceiling, base * 2.0 ** (retry_number - 1))
    assert 0 <= delay <= bound
    assert delay == pytest.approx(r * bound)


# ---------------------------------------------------------------------------- what is retried


async def test_success_needs_one_call() -> None:
    fn, sleep = Flaky(), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert (fn.calls, sleep.delays) == (1, [])


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_each_retryable_status_is_retried(status: int) -> None:
    fn, sleep = Flaky(error_for_status(status, f"HTTP {status}")), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 1.0) == "ok"
    assert fn.calls == 2
    assert sleep.delays == [0.5]


@pytest.mark.parametrize(
    "make",
    [LLMConnectionError, LLMTimeoutError],
)
async def test_connection_errors_and_timeouts_are_retried(make: type[LLMError]) -> None:
    fn, sleep = Flaky(make("down"), make("down")), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 1.0) == "ok"
    assert fn.calls == 3
    assert sleep.delays == [0.5, 1.0]


@pytest.mark.parametrize(
    "error",
    [
        *(error_for_status(status, f"HTTP {status}") for status in (400, 401, 403, 404, 422, 501)),
        MalformedResponseError("not JSON"),
        CircuitBreakerOpen("ollama", retry_at=5.0, remaining=5.0),
        BudgetExceeded("over --max-cost"),
        LLMError("generic"),
    ],
    ids=lambda error: f"{type(error).__name__}-{getattr(error, 'status', '')}",
)
async def test_non_retryable_errors_are_raised_at_once(error: LLMError) -> None:
    fn, sleep = Flaky(error), Sleeper()
    with pytest.raises(LLMError) as caught:
        await call_with_retry(fn, POLICY, sleep=sleep, random=no_random)
    assert caught.value is error
    assert caught.value.attempts == 1
    assert (fn.calls, sleep.delays) == (1, [])


async def test_other_exceptions_pass_straight_through() -> None:
    fn, sleep = Flaky(ValueError("a bug")), Sleeper()
    with pytest.raises(ValueError, match="a bug"):
        await call_with_retry(fn, POLICY, sleep=sleep)
    assert (fn.calls, sleep.delays) == (1, [])


async def test_never_more_than_three_calls_and_the_last_error_is_raised_unchanged() -> None:
    errors = [error_for_status(503, f"busy {n}") for n in range(1, 4)]
    fn, sleep = Flaky(*errors), Sleeper()
    with pytest.raises(LLMError) as caught:
        await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 1.0)
    assert fn.calls == 3
    assert caught.value is errors[2]
    assert type(caught.value) is type(errors[2])
    assert str(caught.value) == "busy 3"
    assert caught.value.attempts == 3
    assert caught.value.__context__ is None  # earlier failures are not chained onto it
    assert sleep.delays == [0.5, 1.0]


@pytest.mark.parametrize("attempts", [1, 2, 5])
async def test_attempts_is_the_total_number_of_calls(attempts: int) -> None:
    fn, sleep = always(lambda: LLMConnectionError("down")), Sleeper()
    with pytest.raises(LLMConnectionError) as caught:
        await call_with_retry(fn, RetryPolicy(attempts=attempts), sleep=sleep, random=lambda: 0.5)
    assert fn.calls == attempts
    assert caught.value.attempts == attempts
    assert len(sleep.delays) == attempts - 1


async def test_a_non_retryable_error_after_retries_stops_at_once() -> None:
    fn, sleep = Flaky(LLMTimeoutError("slow"), error_for_status(401, "bad key")), Sleeper()
    with pytest.raises(LLMError, match="bad key") as caught:
        await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 0.0)
    assert fn.calls == 2
    assert caught.value.attempts == 2


async def test_jitter_uses_the_random_source() -> None:
    fn, sleep = always(lambda: LLMConnectionError("down")), Sleeper()
    policy = RetryPolicy(attempts=4)
    with pytest.raises(LLMConnectionError):
        await call_with_retry(fn, policy, sleep=sleep, random=sequence(0.0, 0.5, 0.999))
    assert sleep.delays == [0.0, 0.5, 2.0 * 0.999]


# ---------------------------------------------------------------------------- Retry-After


async def test_retry_after_seconds_is_honoured_instead_of_backoff() -> None:
    fn, sleep = Flaky(RateLimitedError("slow down", retry_after=2.0)), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert sleep.delays == [2.0]


async def test_retry_after_http_date_is_honoured() -> None:
    now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    error = error_for_status(429, "slow down", parse_retry_after(header, now))
    fn, sleep = Flaky(error), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert sleep.delays == [7.0]


async def test_retry_after_on_a_503_is_honoured_too() -> None:
    fn, sleep = Flaky(error_for_status(503, "queue full", retry_after=1.5)), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert sleep.delays == [1.5]


async def test_retry_after_zero_retries_at_once() -> None:
    fn, sleep = Flaky(RateLimitedError("again", retry_after=0.0)), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert sleep.delays == [0.0]


async def test_rate_limited_without_retry_after_backs_off() -> None:
    fn, sleep = Flaky(RateLimitedError("slow down")), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 0.5) == "ok"
    assert sleep.delays == [0.25]


async def test_retry_after_at_the_cap_is_still_honoured() -> None:
    fn, sleep = Flaky(RateLimitedError("slow down", retry_after=60.0)), Sleeper()
    assert await call_with_retry(fn, POLICY, sleep=sleep, random=no_random) == "ok"
    assert sleep.delays == [60.0]


async def test_retry_after_above_the_cap_fails_over_without_sleeping() -> None:
    error = RateLimitedError("come back tomorrow", retry_after=86_400.0)
    fn, sleep, budget = Flaky(error), Sleeper(), RetryBudget()
    with pytest.raises(RateLimitedError) as caught:
        await call_with_retry(fn, POLICY, sleep=sleep, random=no_random, budget=budget)
    assert caught.value is error
    assert caught.value.attempts == 1
    assert (fn.calls, sleep.delays) == (1, [])
    assert budget.retries == 0


async def test_the_cap_is_the_policys() -> None:
    fn, sleep = Flaky(RateLimitedError("wait", retry_after=5.0)), Sleeper()
    with pytest.raises(RateLimitedError):
        await call_with_retry(fn, RetryPolicy(retry_after_cap=4.0), sleep=sleep)
    assert sleep.delays == []


# ---------------------------------------------------------------------------- 429s pace


def slow_down(retry_after: float | None = 0.5) -> RateLimitedError:
    return RateLimitedError("HTTP 429: slow down", retry_after=retry_after)


async def test_429s_count_neither_against_attempts_nor_the_budget() -> None:
    budget = RetryBudget(ratio=0.0, minimum=0)  # no retry of an error at all
    fn, clock = Flaky(*(slow_down() for _ in range(8))), FakeClock(now=100.0)
    result = await call_with_retry(fn, POLICY, sleep=clock.sleep, clock=clock, budget=budget)
    assert (result, fn.calls) == ("ok", 9)
    assert clock.sleeps == [0.5] * 8
    assert (budget.retries, budget.denied) == (0, 0)


async def test_errors_between_429s_still_stop_at_the_attempts() -> None:
    fn = Flaky(*[slow_down(), error_for_status(500, "HTTP 500")] * 3)
    clock = FakeClock(now=100.0)
    with pytest.raises(LLMError) as caught:
        await call_with_retry(fn, POLICY, sleep=clock.sleep, clock=clock, random=lambda: 1.0)
    assert "HTTP 500" in str(caught.value)
    assert fn.calls == caught.value.attempts == 6  # three failures, three 429s between
    assert clock.sleeps == [0.5, 0.5, 0.5, 1.0, 0.5]


@pytest.mark.parametrize("retry_after", [1.0, None])
async def test_a_request_rate_limited_for_the_whole_wait_fails_naming_the_setting(
    retry_after: float | None,
) -> None:
    fn, clock = always(lambda: slow_down(retry_after)), FakeClock(now=100.0)
    policy = RetryPolicy(rate_limit_wait=5.0, base_delay=1.0, max_delay=1.0)
    with pytest.raises(RateLimitedError) as caught:
        await call_with_retry(fn, policy, sleep=clock.sleep, clock=clock, random=lambda: 1.0)
    message = str(caught.value)
    assert message.startswith("rate limited for 5 s in all (llm.retry.rate_limit_wait): ")
    assert message.endswith("HTTP 429: slow down")
    assert sum(clock.sleeps) == pytest.approx(5.0)
    assert fn.calls == caught.value.attempts == 6
    assert caught.value.retryable, "another model or server may still answer"


async def test_the_last_wait_is_cut_to_what_is_left_of_the_bound() -> None:
    fn, clock = always(lambda: slow_down(2.0)), FakeClock(now=100.0)
    with pytest.raises(RateLimitedError):
        await call_with_retry(fn, RetryPolicy(rate_limit_wait=5.0), sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [2.0, 2.0, 1.0]


async def test_an_endpoint_that_refused_everything_for_the_bound_fails_at_once() -> None:
    """Against a server that 429s everything, later blocks do not each wait the bound."""
    fn, clock = always(slow_down), FakeClock(now=100.0)
    since = clock.now - 5.0
    with pytest.raises(RateLimitedError, match=r"rate limited for 5 s"):
        await call_with_retry(
            fn,
            RetryPolicy(rate_limit_wait=5.0),
            sleep=clock.sleep,
            clock=clock,
            limited_since=lambda: since,
        )
    assert (fn.calls, clock.sleeps) == (1, [])


# ---------------------------------------------------------------------------- the budget


def test_budget_allows_the_minimum_then_a_ratio_of_requests() -> None:
    budget = RetryBudget(ratio=0.2, minimum=2)
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    for _ in range(20):
        budget.note_request()
    assert budget.allowed == 4.0
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    assert (budget.requests, budget.retries, budget.denied) == (20, 4, 2)


def test_budget_defaults() -> None:
    budget = RetryBudget()
    assert (budget.ratio, budget.minimum) == (0.2, 5)
    assert sum(budget.try_spend() for _ in range(10)) == 5
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)


async def test_budget_counts_first_attempts_only() -> None:
    budget = RetryBudget()
    sleep = Sleeper()
    await call_with_retry(Flaky(LLMTimeoutError("t")), POLICY, sleep=sleep, budget=budget)
    await call_with_retry(Flaky(), POLICY, sleep=sleep, budget=budget)
    assert (budget.requests, budget.retries) == (2, 1)


async def test_spent_budget_stops_retries() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1)
    first = always(lambda: LLMConnectionError("down"))
    with pytest.raises(LLMConnectionError) as caught:
        await call_with_retry(first, POLICY, sleep=Sleeper(), budget=budget)
    assert first.calls == 2  # one retry from the budget, then it is spent
    assert caught.value.attempts == 2
    second, sleep = always(lambda: LLMConnectionError("down")), Sleeper()
    with pytest.raises(LLMConnectionError) as caught:
        await call_with_retry(second, POLICY, sleep=sleep, budget=budget)
    assert (second.calls, sleep.delays, caught.value.attempts) == (1, [], 1)
    assert budget.denied == 2


async def test_a_build_wide_outage_costs_little_more_than_one_call_per_request() -> None:
    budget = RetryBudget(ratio=0.2, minimum=5)
    calls = 0
    for _ in range(100):
        fn = always(lambda: error_for_status(503, "down"))
        with pytest.raises(LLMError):
            await call_with_retry(fn, POLICY, sleep=Sleeper(), budget=budget)
        calls += fn.calls
    assert calls <= 100 + 20
    assert budget.retries <= budget.allowed


# ---------------------------------------------------------------------------- on_retry


async def test_on_retry_sees_each_retry_before_the_wait() -> None:
    seen: list[tuple[int, str, float]] = []
    sleep = Sleeper()

    def on_retry(number: int, error: LLMError, delay: float) -> None:
        assert len(sleep.delays) == number - 1  # called before the sleep
        seen.append((number, str(error), delay))

    fn = Flaky(LLMTimeoutError("first"), RateLimitedError("second", retry_after=3.0))
    result = await call_with_retry(fn, POLICY, sleep=sleep, random=lambda: 1.0, on_retry=on_retry)
    assert result == "ok"
    assert seen == [(1, "first", 0.5), (2, "second", 3.0)]
    assert sleep.delays == [0.5, 3.0]


async def test_on_retry_is_not_called_when_giving_up() -> None:
    seen: list[int] = []
    fn = always(lambda: LLMTimeoutError("slow"))
    with pytest.raises(LLMTimeoutError):
        await call_with_retry(
            fn, POLICY, sleep=Sleeper(), on_retry=lambda n, error, delay: seen.append(n)
        )
    assert seen == [1, 2]
