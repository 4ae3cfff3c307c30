"""Sliding windows, per-key limiters and the key pool, on a fake clock that never waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakeclock import FakeClock
from trinity.cache.redislink import RedisLink
from trinity.errors import BudgetExceeded, RateLimitedError
from trinity.llm.budgets import BudgetSettings, DailyBudgets
from trinity.llm.ratelimit import (
    ApiKey,
    KeyLimiter,
    KeyLimits,
    KeyPool,
    Lease,
    PoolSharing,
    SlidingWindow,
    estimate_request_tokens,
    estimate_tokens,
    paced_limits,
)
from trinity.llm.sharedlimits import WINDOW_MARGIN, SharedLimits, key_identity
from trinity.llm.sharedlimits import verdict as shared_verdict
from trinity.llm.types import LLMRequest

FAST = settings(max_examples=60, database=None, deadline=None)

WALL = 1_800_000_000.0  # the fake wall clock's "now", Unix seconds
SECRET = "sk-live-SECRET-0123456789"


def pool(*limits: KeyLimits, clock: FakeClock) -> KeyPool:
    keys = [ApiKey(f"key {i}", f"{SECRET}-{i}", lim) for i, lim in enumerate(limits, 1)]
    return KeyPool(keys, clock=clock, sleep=clock.sleep, wall_clock=lambda: WALL)


# --- SlidingWindow -------------------------------------------------------------------


def test_window_counts_an_amount_until_exactly_one_window_later() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(3, 60.0, clock)
    for at in (0.0, 10.0, 20.0):
        clock.now = at
        window.add(1)
    clock.now = 30.0
    assert window.available() == 0
    assert window.wait_time(1) == pytest.approx(30.0)
    clock.now = 59.5
    assert window.wait_time(1) == pytest.approx(0.5)
    clock.now = 60.0  # the entry from t=0 leaves at exactly t=60
    assert window.wait_time(1) == 0.0
    assert window.available() == 1
    assert window.used() == 2


def test_window_waits_for_as_many_old_entries_as_the_amount_needs() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(10, 60.0, clock)
    window.add(4)
    clock.now = 10.0
    window.add(4)
    clock.now = 20.0
    assert window.wait_time(2) == 0.0
    assert window.wait_time(3) == pytest.approx(40.0)  # the t=0 entry must go
    assert window.wait_time(10) == pytest.approx(50.0)  # both must go
    # More than the whole limit: let through once the window is empty, not never.
    assert window.wait_time(1_000) == pytest.approx(50.0)
    assert window.wait_time(0) == 0.0


def test_window_available_at_a_given_time() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(5, 60.0, clock)
    window.add(5)
    assert window.available(0.0) == 0
    assert window.available(59.0) == 0
    assert window.available(60.0) == 5


def test_unlimited_window_never_waits_and_remembers_nothing() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(None, clock=clock)
    for _ in range(1000):
        window.add(10**6)
    assert window.wait_time(10**9) == 0.0
    assert window.available() == float("inf")
    assert window.used() == 0


def test_adjust_gives_back_and_adds_but_never_goes_below_zero() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(100, 60.0, clock)
    window.add(80)
    assert window.wait_time(30) == pytest.approx(60.0)
    window.adjust(-60)
    assert window.used() == 20
    assert window.wait_time(30) == 0.0
    window.adjust(-1000)
    assert window.used() == 0
    window.adjust(+15)
    assert window.used() == 15


def test_adjust_targets_the_given_entry() -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(100, 60.0, clock)
    first = window.add(50)
    window.add(30)
    window.adjust(-40, first)
    assert window.used() == 40


@pytest.mark.parametrize(("limit", "span"), [(0, 60.0), (-1, 60.0), (5, 0.0)])
def test_window_rejects_nonsense(limit: int, span: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindow(limit, span, FakeClock(now=0.0))


@FAST
@given(
    limit=st.integers(1, 50),
    steps=st.lists(st.tuples(st.floats(0, 30), st.integers(0, 20)), max_size=60),
)
def test_window_admits_no_more_than_its_limit_in_any_window(
    limit: int, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock(now=0.0)
    window = SlidingWindow(limit, 60.0, clock)
    added: list[tuple[float, int]] = []
    for gap, amount in steps:
        clock.advance(gap)
        amount = min(amount, limit)
        wait = window.wait_time(amount)
        assert wait >= 0
        clock.advance(wait)
        assert window.wait_time(amount) == 0.0
        window.add(amount)
        added.append((clock.now, amount))
        in_window = sum(a for t, a in added if t > clock.now - 60.0 + 1e-9)
        assert in_window <= limit


# --- KeyLimiter ----------------------------------------------------------------------


def test_rpm_limit_waits_for_the_oldest_request() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(rpm=2), clock)
    limiter.reserve(10, 10)
    clock.now = 1.0
    limiter.reserve(10, 10)
    assert limiter.wait_time(10, 10) == pytest.approx(59.0)


def test_reconcile_gives_unused_tokens_back() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(input_tpm=1000, output_tpm=1000), clock)
    reservation = limiter.reserve(900, 800)
    assert limiter.wait_time(500, 0) == pytest.approx(60.0)
    assert limiter.wait_time(0, 500) == pytest.approx(60.0)
    reservation.reconcile(100, 50)
    assert limiter.input_window.used() == 100
    assert limiter.output_window.used() == 50
    assert limiter.wait_time(500, 500) == 0.0


def test_reconcile_counts_usage_above_the_estimate_and_may_be_repeated() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(input_tpm=1000), clock)
    reservation = limiter.reserve(100, 0)
    reservation.reconcile(950, 0)
    assert limiter.wait_time(100, 0) == pytest.approx(60.0)
    reservation.reconcile(200, 0)  # relative to the last reconcile, not the estimate
    assert limiter.input_window.used() == 200


def test_reconcile_of_one_request_leaves_the_others_alone() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(input_tpm=1000), clock)
    first = limiter.reserve(400, 0)
    limiter.reserve(400, 0)
    first.reconcile(0, 0)
    assert limiter.input_window.used() == 400


def test_cooldown_blocks_and_is_never_shortened() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock)
    limiter.cool_down(5.0)
    assert limiter.cooling_down
    assert limiter.wait_time(1, 1) == pytest.approx(5.0)
    limiter.cool_down(1.0)
    assert limiter.wait_time(1, 1) == pytest.approx(5.0)
    clock.now = 5.0
    assert not limiter.cooling_down
    assert limiter.wait_time(1, 1) == 0.0


def openai_headers(
    requests: int, tokens: int, reset_requests: str = "6m0s", reset_tokens: str = "20ms"
) -> dict[str, str]:
    return {
        "X-RateLimit-Limit-Requests": "500",
        "X-RateLimit-Remaining-Requests": str(requests),
        "X-RateLimit-Reset-Requests": reset_requests,
        "x-ratelimit-remaining-tokens": str(tokens),
        "x-ratelimit-reset-tokens": reset_tokens,
    }


def test_openai_headers_with_no_requests_left_wait_for_the_reset() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(openai_headers(requests=0, tokens=10_000))
    assert limiter.wait_time(10, 10) == pytest.approx(360.0)
    clock.now = 360.0
    assert limiter.wait_time(10, 10) == 0.0


def test_openai_headers_let_the_remaining_requests_through_then_wait() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(openai_headers(requests=2, tokens=10_000, reset_requests="1s"))
    for _ in range(2):
        assert limiter.wait_time(10, 10) == 0.0
        limiter.reserve(10, 10)
    assert limiter.wait_time(10, 10) == pytest.approx(1.0)


def test_openai_headers_with_too_few_tokens_left_wait_for_the_token_reset() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(openai_headers(requests=100, tokens=300, reset_tokens="1.5s"))
    assert limiter.wait_time(100, 100) == 0.0
    assert limiter.wait_time(200, 200) == pytest.approx(1.5)


def test_newer_headers_replace_older_ones() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(openai_headers(requests=0, tokens=0))
    limiter.update_from_headers(openai_headers(requests=10, tokens=10_000))
    assert limiter.wait_time(10, 10) == 0.0


def anthropic_reset(seconds: float) -> str:
    moment = datetime.fromtimestamp(WALL, UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


def test_anthropic_headers_wait_until_the_rfc3339_reset() -> None:
    clock = FakeClock(now=100.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": anthropic_reset(30),
            "anthropic-ratelimit-tokens-remaining": "40000",
            "anthropic-ratelimit-tokens-reset": anthropic_reset(2),
        }
    )
    assert limiter.wait_time(10, 10) == pytest.approx(30.0)
    clock.now = 130.0
    assert limiter.wait_time(10, 10) == 0.0


def test_anthropic_input_and_output_token_headers_pace_separately() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(
        {
            "anthropic-ratelimit-input-tokens-remaining": "1000",
            "anthropic-ratelimit-input-tokens-reset": anthropic_reset(4),
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": anthropic_reset(7),
        }
    )
    assert limiter.wait_time(500, 0) == pytest.approx(7.0)  # no output tokens left at all
    clock.now = 7.0
    assert limiter.wait_time(500, 100) == 0.0


def test_headers_that_make_no_sense_are_ignored() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(), clock, wall_clock=lambda: WALL)
    limiter.update_from_headers(
        {
            "x-ratelimit-remaining-requests": "lots",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "soon",
            "anthropic-ratelimit-requests-remaining": "0",  # no reset: nothing to wait for
        }
    )
    assert limiter.wait_time(10, 10) == 0.0


# --- KeyPool -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pool_goes_round_robin() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(), KeyLimits(), KeyLimits(), clock=clock)
    names = [(await keys.acquire(10, 10)).name for _ in range(7)]
    assert names == ["key 1", "key 2", "key 3", "key 1", "key 2", "key 3", "key 1"]
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_pool_skips_a_limited_key() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(), KeyLimits(rpm=1), KeyLimits(), clock=clock)
    names = [(await keys.acquire(10, 10)).name for _ in range(6)]
    assert names == ["key 1", "key 2", "key 3", "key 1", "key 3", "key 1"]
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_pool_skips_a_key_whose_tokens_are_spent() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(input_tpm=1000), KeyLimits(input_tpm=1000), clock=clock)
    assert (await keys.acquire(900, 0)).name == "key 1"
    assert (await keys.acquire(900, 0)).name == "key 2"
    lease = await keys.acquire(50, 0)  # key 1 has 100 left
    assert lease.name == "key 1"
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_pool_with_every_key_limited_sleeps_until_the_earliest_frees() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(rpm=1), KeyLimits(rpm=1), clock=clock)
    assert (await keys.acquire(1, 1)).name == "key 1"  # t=0
    clock.now = 10.0
    assert (await keys.acquire(1, 1)).name == "key 2"  # t=10
    clock.now = 20.0
    lease = await keys.acquire(1, 1)
    assert clock.sleeps == [pytest.approx(40.0)]  # key 1 frees at t=60
    assert lease.name == "key 1"
    assert clock.now == pytest.approx(60.0)


@pytest.mark.anyio
async def test_a_rate_limited_key_cools_down_and_is_skipped() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(), KeyLimits(), clock=clock)
    first = await keys.acquire(1, 1)
    assert first.name == "key 1"
    await first.rate_limited(retry_after=5.0)
    names = [(await keys.acquire(1, 1)).name for _ in range(3)]
    assert names == ["key 2", "key 2", "key 2"]
    clock.now = 5.0
    assert (await keys.acquire(1, 1)).name == "key 1"
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_a_lone_rate_limited_key_waits_its_retry_after_or_one_second() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(), clock=clock)
    await (await keys.acquire(1, 1)).rate_limited(retry_after=7.5)
    lease = await keys.acquire(1, 1)
    assert clock.sleeps == [pytest.approx(7.5)]
    await lease.rate_limited(retry_after=None)
    await keys.acquire(1, 1)
    assert clock.sleeps == [pytest.approx(7.5), pytest.approx(1.0)]


@pytest.mark.anyio
async def test_a_429_can_carry_headers_too() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(), clock=clock)
    lease = await keys.acquire(1, 1)
    await lease.rate_limited(1.0, headers=openai_headers(requests=0, tokens=0, reset_requests="3s"))
    await keys.acquire(1, 1)
    assert clock.sleeps == [pytest.approx(3.0)]


@pytest.mark.anyio
async def test_finish_reconciles_tokens_and_paces_from_headers() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(input_tpm=1000), clock=clock)
    lease = await keys.acquire(900, 0)
    await lease.finish(100, 20)
    assert keys.limiter("key 1").input_window.used() == 100
    await keys.acquire(800, 0)  # fits only because 800 were given back
    assert clock.sleeps == []
    await lease.finish(
        100, 20, headers=openai_headers(requests=0, tokens=5000, reset_requests="2s")
    )
    await keys.acquire(1, 0)
    assert clock.sleeps == [pytest.approx(2.0)]


@pytest.mark.anyio
async def test_pool_without_keys_leases_no_secret_and_no_limits() -> None:
    clock = FakeClock(now=0.0)
    keys = KeyPool([], clock=clock, sleep=clock.sleep)
    assert len(keys) == 0
    for _ in range(500):
        lease = await keys.acquire(10_000, 10_000)
        assert lease.secret is None
        assert lease.key is None
        assert lease.name == "no key"
        await lease.finish(10_000, 10_000)
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_pool_without_keys_can_still_be_limited_and_cool_down() -> None:
    clock = FakeClock(now=0.0)
    keys = KeyPool([], clock=clock, sleep=clock.sleep, keyless_limits=KeyLimits(rpm=2))
    await keys.acquire(1, 1)
    lease = await keys.acquire(1, 1)
    await lease.rate_limited(3.0)  # an Ollama queue that is full
    await keys.acquire(1, 1)
    assert clock.sleeps == [pytest.approx(60.0)]


@pytest.mark.anyio
async def test_concurrent_acquirers_never_over_reserve() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(rpm=3), KeyLimits(rpm=3), clock=clock)
    granted: list[tuple[float, str]] = []

    async def one() -> None:
        lease = await keys.acquire(1, 1)
        granted.append((clock.now, lease.name))

    async with anyio.create_task_group() as tg:
        for _ in range(14):
            tg.start_soon(one)
    assert len(granted) == 14
    assert_within_limits(granted, rpm=3)
    assert sum(1 for at, _ in granted if at < 60.0) == 6


def assert_within_limits(granted: list[tuple[float, str]], rpm: int) -> None:
    for at, name in granted:
        recent = [t for t, n in granted if n == name and at - 60.0 + 1e-9 < t <= at]
        assert len(recent) <= rpm, (at, name, recent)


@FAST
@given(key_count=st.integers(1, 4), rpm=st.integers(1, 60), tasks=st.integers(1, 12))
def test_n_keys_admit_n_times_the_requests_in_a_minute(
    key_count: int, rpm: int, tasks: int
) -> None:
    clock = FakeClock(now=0.0)
    keys = pool(*[KeyLimits(rpm=rpm)] * key_count, clock=clock)
    granted: list[tuple[float, str]] = []

    async def worker() -> None:
        while clock.now < 120.0:
            lease = await keys.acquire(estimate_tokens("a prompt"), 50)
            if clock.now < 120.0:
                granted.append((clock.now, lease.name))
            await anyio.lowlevel.checkpoint()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(worker)

    anyio.run(main)
    assert sum(1 for at, _ in granted if at < 60.0) == key_count * rpm
    assert len(granted) == 2 * key_count * rpm
    assert_within_limits(granted, rpm)


def test_60_rpm_on_3_keys_admits_180_requests_in_a_minute() -> None:
    clock = FakeClock(now=0.0)
    keys = pool(KeyLimits(rpm=60), KeyLimits(rpm=60), KeyLimits(rpm=60), clock=clock)
    admitted = 0
    while True:
        lease = keys.try_acquire(100, 100)
        if lease is None:
            break
        admitted += 1
    assert admitted == 180
    assert keys.wait_time(100, 100) == pytest.approx(60.0)
    one_key = pool(KeyLimits(rpm=60), clock=FakeClock(now=0.0))
    assert sum(1 for _ in iter(lambda: one_key.try_acquire(1, 1), None)) == 60


# --- secrets -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_secrets_never_appear_in_repr_or_str() -> None:
    clock = FakeClock(now=0.0)
    key = ApiKey("OPENAI_API_KEY", SECRET, KeyLimits(rpm=5))
    keys = KeyPool([key], clock=clock, sleep=clock.sleep)
    lease = await keys.acquire(1, 1)
    assert lease.secret == SECRET
    for thing in (key, lease, keys, lease.reservation, keys.limiter("OPENAI_API_KEY")):
        assert SECRET not in repr(thing)
        assert SECRET not in str(thing)
        assert SECRET not in f"{thing}"
    assert "OPENAI_API_KEY" in repr(key)
    assert str(key) == "OPENAI_API_KEY"
    assert "OPENAI_API_KEY" in repr(lease)
    assert "OPENAI_API_KEY" in repr(keys)


@FAST
@given(secret=st.text(min_size=12).filter(lambda s: s.strip() == s and len(set(s)) > 3))
def test_no_secret_leaks_into_a_key_repr(secret: str) -> None:
    key = ApiKey("key 1", secret)
    assert secret not in repr(key)
    assert secret not in str(key)
    assert secret not in repr(Lease(key, KeyLimiter(), KeyLimiter().reserve(1, 1)))


# --- estimates -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), [("", 1), ("abc", 1), ("abcd", 1), ("abcde", 2)])
def test_estimate_tokens_small(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


@FAST
@given(st.text())
def test_estimate_tokens_is_about_a_quarter_of_the_length(text: str) -> None:
    tokens = estimate_tokens(text)
    assert tokens >= 1
    assert abs(tokens - len(text) / 4) <= 1


def test_estimate_request_tokens_counts_messages_and_reserves_max_tokens() -> None:
    request = LLMRequest.from_prompt(
        "x" * 400, system="y" * 40, model="m", temperature=0.0, max_tokens=256
    )
    input_est, output_est = estimate_request_tokens(request)
    assert 110 <= input_est <= 130
    assert output_est == 256


# --- patience, cancelled reservations, daily budgets, shared names -----------------


@pytest.mark.anyio
async def test_acquire_raises_rather_than_sleep_past_its_patience() -> None:
    clock = FakeClock(now=0.0)
    keys = KeyPool(
        [ApiKey("key 1", SECRET, KeyLimits(rpm=1))],
        clock=clock,
        sleep=clock.sleep,
        patience=30.0,
        sharing=PoolSharing("openai https://api.example"),
    )
    await keys.acquire(1, 1)
    with pytest.raises(RateLimitedError, match=r"every key for openai https://api\.example") as e:
        await keys.acquire(1, 1)
    assert e.value.retry_after == pytest.approx(60.0)
    assert clock.sleeps == []


def test_a_cancelled_reservation_gives_its_request_and_tokens_back() -> None:
    clock = FakeClock(now=0.0)
    limiter = KeyLimiter(KeyLimits(rpm=1, input_tpm=100), clock)
    limiter.reserve(90, 0).cancel()
    assert limiter.wait_time(100, 0) == 0.0


@pytest.mark.anyio
async def test_a_spent_project_budget_refuses_at_once_and_gives_the_key_back() -> None:
    clock = FakeClock(now=0.0)
    budgets = DailyBudgets(BudgetSettings(daily_tokens=100, scope="site"))
    keys = KeyPool(
        [ApiKey("key 1", SECRET, KeyLimits(rpm=2))],
        clock=clock,
        sleep=clock.sleep,
        sharing=PoolSharing("openai x", None, budgets),
    )
    lease = await keys.acquire(60, 20)
    with pytest.raises(BudgetExceeded, match=r"project 'site' \(llm\.budget daily_tokens\)"):
        await keys.acquire(60, 20)
    assert keys.wait_time(1, 1) == 0.0, "the refused call holds no request"
    await lease.finish(10, 10)  # it used 20 of its 80: 80 left today
    assert (await keys.acquire(60, 20)).name == "key 1"


def test_paced_limits_read_each_limit_from_the_first_readable_pair() -> None:
    found = paced_limits(
        {
            **openai_headers(requests=3, tokens=100, reset_requests="2s"),
            "anthropic-ratelimit-output-tokens-remaining": "0",
            "anthropic-ratelimit-output-tokens-reset": "bogus",
        },
        WALL,
    )
    assert found == {"requests": (3, pytest.approx(2.0)), "tokens": (100, pytest.approx(0.02))}


def test_a_key_is_named_in_redis_by_its_endpoint_and_a_hash_never_its_secret() -> None:
    named = key_identity("openai https://api.openai.com", SECRET)
    assert SECRET not in named
    assert named.startswith("openai https://api.openai.com key:")
    assert named == key_identity("openai https://api.openai.com", SECRET)  # on any machine
    assert named != key_identity("openai https://api.openai.com", SECRET + "x")
    assert key_identity("ollama http://localhost:11434", None) == "ollama http://localhost:11434"


@pytest.mark.parametrize("answer", [None, [], [1], "ok", [0, -5], [0, "soon"], [2, 5, 7], b"\x00"])
def test_an_unreadable_answer_from_redis_is_no_verdict(answer: object) -> None:
    assert shared_verdict(answer) is None


def test_a_shared_window_s_margin_is_not_a_reason_to_give_up() -> None:
    """A full shared window asks for up to its margin more than a local one: with the
    default cap (60 s) and window (60 s), such a wait is waited for, not failed over."""
    local = KeyPool([], patience=60.0)
    shared = KeyPool([], patience=60.0, sharing=PoolSharing("x", SharedLimits(RedisLink(port=1))))
    limit = 60.0 * (1 + WINDOW_MARGIN)
    assert (local.too_long(60.0), local.too_long(limit)) == (False, True)
    assert (shared.too_long(limit), shared.too_long(limit + 0.01)) == (False, True)
