"""The circuit breaker: opening on a failure rate, fail-fast, one trial call, cancellation,
and a state machine."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine, Generator, Iterator
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.fakeclock import FakeClock
from trinity.errors import (
    BadRequestError,
    CircuitBreakerOpen,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitedError,
)
from trinity.llm.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    counts_as_failure,
)
from trinity.llm.http import error_for_status


class Endpoint:
    """An async callable that answers "ok" or raises `error`, counting its calls."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


def down() -> Endpoint:
    return Endpoint(LLMConnectionError("connection refused"))


async def open_breaker(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(LLMConnectionError):
            await breaker.call_async(down())
    assert breaker.state is OPEN


async def half_open(
    threshold: int, timeout: float = 10.0, name: str = ""
) -> tuple[CircuitBreaker, FakeClock]:
    """A breaker opened by `threshold` failures whose timeout has just run out: the next
    call is its trial."""
    clock = FakeClock()
    breaker = CircuitBreaker(threshold, timeout, name=name, clock=clock)
    await open_breaker(breaker)
    clock.advance(timeout)
    return breaker, clock


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the breaker logs (a handler on its own logger, whatever else configured logging)."""
    caught: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    logger = logging.getLogger("trinity.llm.breaker")
    handler = ListHandler(level=logging.DEBUG)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield caught
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# ---------------------------------------------------------------------------- basics


def test_states_are_strings() -> None:
    assert (CLOSED, OPEN, HALF_OPEN) == ("closed", "open", "half_open")
    assert isinstance(CLOSED, str)
    assert BreakerState("half_open") is HALF_OPEN


def test_defaults_and_validation() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.timeout, breaker.name) == (5, 60.0, "")
    assert (breaker.failure_rate, breaker.window) == (0.5, 50)
    assert breaker.state is CLOSED
    assert breaker.retry_at is None
    # The window always holds enough calls to judge.
    assert CircuitBreaker(80, window=20).window == 80
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(timeout=-1)
    for rate in (0.0, 1.5):
        with pytest.raises(ValueError):
            CircuitBreaker(failure_rate=rate)


def test_built_from_the_settings_policy() -> None:
    clock = FakeClock()
    policy = BreakerPolicy(failure_threshold=3, failure_rate=0.75, window=20, timeout=30.0)
    breaker = CircuitBreaker.from_policy(policy, name="openai api.test", clock=clock)
    assert (breaker.failure_threshold, breaker.failure_rate) == (3, 0.75)
    assert (breaker.window, breaker.timeout, breaker.name) == (20, 30.0, "openai api.test")
    assert breaker.clock is clock
    default = CircuitBreaker.from_policy(BreakerPolicy())
    assert (default.failure_threshold, default.timeout) == (
        CircuitBreaker().failure_threshold,
        60.0,
    )


@pytest.mark.anyio
async def test_closed_calls_through_with_arguments() -> None:
    breaker = CircuitBreaker()

    async def echo(a: int, *, b: str) -> str:
        return f"{a}{b}"

    assert await breaker.call_async(echo, 1, b="x") == "1x"
    assert breaker.calls == 1


@pytest.mark.anyio
async def test_a_dead_endpoint_opens_it_after_threshold_calls_and_fails_fast() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 30.0, name="ollama localhost", clock=clock)
    for expected in (1, 2):
        with pytest.raises(LLMConnectionError):
            await breaker.call_async(down())
        assert (breaker.state, breaker.recent) == (CLOSED, (expected, expected))
    with pytest.raises(LLMConnectionError):
        await breaker.call_async(down())
    assert breaker.state is OPEN
    assert breaker.retry_at == 1030.0

    clock.advance(12.5)
    endpoint = Endpoint()
    with pytest.raises(CircuitBreakerOpen) as caught:
        await breaker.call_async(endpoint)
    assert endpoint.calls == 0
    assert caught.value.name == "ollama localhost"
    assert (caught.value.retry_at, caught.value.remaining) == (1030.0, 17.5)
    assert "ollama localhost" in str(caught.value)
    assert caught.value.retryable is False
    assert breaker.rejected == 1
    # Refused later, a block fails for the same reason, word for word: a build tells it
    # once and groups every block behind it (the wait is `remaining`, not in the text).
    clock.advance(10)
    with pytest.raises(CircuitBreakerOpen) as later:
        await breaker.call_async(endpoint)
    assert later.value.remaining == 7.5
    assert str(later.value) == str(caught.value)


async def calls(breaker: CircuitBreaker, pattern: str) -> None:
    """Make one call per letter of `pattern`: "s" succeeds, "f" fails (connection refused)."""
    for letter in pattern:
        if letter == "s":
            await breaker.call_async(Endpoint())
        else:
            with pytest.raises(LLMConnectionError):
                await breaker.call_async(down())


@pytest.mark.anyio
async def test_a_few_failures_among_many_successes_never_open_it() -> None:
    """Issue 13: connection resets now and then under load are noise, not an outage.

    Nine failures among 176 answers, five of them in a row: a count of five opened the
    old breaker; a rate of 50 % over the window does not.
    """
    breaker = CircuitBreaker(clock=FakeClock())
    await calls(breaker, "s" * 40 + "f" * 5 + "s" * 60 + ("s" * 18 + "f") * 4 + "s" * 4)
    assert breaker.state is CLOSED
    assert breaker.total_failures == 9
    assert breaker.recent == (3, 50)


@pytest.mark.anyio
async def test_it_opens_at_the_failure_rate_once_the_window_holds_enough_calls() -> None:
    breaker = CircuitBreaker(5, failure_rate=0.5, window=10, clock=FakeClock())
    await calls(breaker, "fsfs")
    assert (breaker.state, breaker.recent) == (CLOSED, (2, 4)), "too few calls to judge"
    await calls(breaker, "s")
    assert (breaker.state, breaker.recent) == (CLOSED, (2, 5)), "40 % is below the rate"
    await calls(breaker, "f")
    assert breaker.state is OPEN, "50 % of six calls"


@pytest.mark.anyio
async def test_a_success_never_opens_it() -> None:
    """Three early failures (one block's three attempts), then answers: it stays closed."""
    breaker = CircuitBreaker(5, failure_rate=0.5, clock=FakeClock())
    await calls(breaker, "fffss")
    assert (breaker.state, breaker.recent) == (CLOSED, (3, 5))
    await calls(breaker, "s" * 20)
    assert breaker.state is CLOSED


@pytest.mark.anyio
async def test_old_outcomes_leave_the_window() -> None:
    breaker = CircuitBreaker(5, failure_rate=0.5, window=10, clock=FakeClock())
    await calls(breaker, "f" + "s" * 10)
    assert breaker.recent == (0, 10), "the failure slid out"
    # A server that dies after answering: half the window must fail, not all of it.
    await calls(breaker, "ffff")
    assert (breaker.state, breaker.recent) == (CLOSED, (4, 10))
    await calls(breaker, "f")
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "error",
    [
        LLMConnectionError("refused"),
        LLMTimeoutError("slow"),
        *(error_for_status(status, "x") for status in (500, 501, 502, 503, 504)),
    ],
    ids=lambda error: f"{type(error).__name__}-{getattr(error, 'status', '')}",
)
def test_what_counts_as_a_failure(error: LLMError) -> None:
    assert counts_as_failure(error)


@pytest.mark.parametrize(
    "error",
    [
        *(error_for_status(status, "x") for status in (400, 401, 403, 404, 408, 409, 422, 429)),
        MalformedResponseError("not JSON"),
        CircuitBreakerOpen("inner", retry_at=0.0, remaining=0.0),
        ValueError("a bug"),
        asyncio.CancelledError(),
    ],
    ids=lambda error: f"{type(error).__name__}-{getattr(error, 'status', '')}",
)
def test_what_does_not_count(error: BaseException) -> None:
    assert not counts_as_failure(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad", status=404),
        RateLimitedError("slow down", retry_after=1.0),
        MalformedResponseError("truncated"),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_uncounted_errors_pass_through_and_never_open(error: Exception) -> None:
    breaker = CircuitBreaker(2, clock=FakeClock())
    for _ in range(5):
        with pytest.raises(type(error)) as caught:
            await breaker.call_async(Endpoint(error))
        assert caught.value is error
    assert breaker.state is CLOSED
    assert breaker.total_failures == 0


@pytest.mark.anyio
async def test_an_answer_from_the_server_counts_as_a_success() -> None:
    # A 4xx is proof of life: the server answered.
    breaker = CircuitBreaker(3, clock=FakeClock())
    with pytest.raises(LLMError):
        await breaker.call_async(down())
    with pytest.raises(BadRequestError):
        await breaker.call_async(Endpoint(BadRequestError("no such model", status=404)))
    assert breaker.recent == (1, 2)
    with pytest.raises(ValueError):
        await breaker.call_async(Endpoint(ValueError("our bug")))
    assert breaker.recent == (1, 2)  # our own bug said nothing either way


# ---------------------------------------------------------------------------- half-open


@pytest.mark.anyio
async def test_after_the_timeout_a_trial_success_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    await open_breaker(breaker)
    clock.advance(9.99)
    assert breaker.state is OPEN
    clock.advance(0.01)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_at is None
    assert await breaker.call_async(Endpoint()) == "ok"
    assert breaker.state is CLOSED
    assert breaker.recent == (0, 0), "a closed breaker starts with an empty window"


@pytest.mark.anyio
async def test_a_trial_failure_reopens_with_a_new_timeout() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    await open_breaker(breaker)
    clock.advance(15)
    with pytest.raises(LLMTimeoutError):
        await breaker.call_async(Endpoint(LLMTimeoutError("still slow")))
    assert breaker.state is OPEN
    assert breaker.retry_at == clock.now + 10.0
    clock.advance(9)
    with pytest.raises(CircuitBreakerOpen):
        await breaker.call_async(Endpoint())
    clock.advance(1)
    assert breaker.state is HALF_OPEN


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "state"),
    [
        (None, CLOSED),
        (BadRequestError("bad", status=422), CLOSED),  # a client error is proof of life
        (LLMTimeoutError("still slow"), OPEN),
        (ValueError("bug"), HALF_OPEN),  # our own bug says nothing: the next call is a trial
    ],
    ids=lambda value: type(value).__name__,
)
async def test_the_trial_decides_the_next_state(error: Exception | None, state: str) -> None:
    breaker, _ = await half_open(1, 5.0)
    if error is None:
        assert await breaker.call_async(Endpoint()) == "ok"
    else:
        with pytest.raises(type(error)):
            await breaker.call_async(Endpoint(error))
    assert (breaker.state, breaker.trial_in_flight) == (state, False)


@pytest.mark.anyio
async def test_half_open_lets_exactly_one_trial_through() -> None:
    breaker, _ = await half_open(2, name="openai")

    started, release = anyio.Event(), anyio.Event()
    trial_calls = 0
    results: list[str] = []

    async def trial() -> str:
        nonlocal trial_calls
        trial_calls += 1
        started.set()
        await release.wait()
        return "trial ok"

    async def run_trial() -> None:
        results.append(await breaker.call_async(trial))

    others = Endpoint()
    rejected: list[CircuitBreakerOpen] = []

    async def other() -> None:
        try:
            await breaker.call_async(others)
        except CircuitBreakerOpen as error:
            rejected.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(run_trial)
        await started.wait()
        assert breaker.state is HALF_OPEN
        assert breaker.trial_in_flight
        async with anyio.create_task_group() as crowd:
            for _ in range(10):
                crowd.start_soon(other)
        # Every other caller failed fast while the trial was held.
        assert len(rejected) == 10
        assert others.calls == 0
        assert "openai" in str(rejected[0])
        assert "trial" in str(rejected[0])
        release.set()

    assert (trial_calls, results) == (1, ["trial ok"])
    assert breaker.state is CLOSED
    assert await breaker.call_async(others) == "ok"


@pytest.mark.anyio
async def test_cancelling_the_trial_frees_the_slot() -> None:
    breaker, _ = await half_open(2)
    started = anyio.Event()

    async def hangs() -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as group:
        group.start_soon(breaker.call_async, hangs)
        await started.wait()
        assert breaker.trial_in_flight
        group.cancel_scope.cancel()

    assert breaker.state is HALF_OPEN
    assert not breaker.trial_in_flight
    assert breaker.total_failures == 2  # the cancellation was not a failure
    assert await breaker.call_async(Endpoint()) == "ok"
    assert breaker.state is CLOSED


@pytest.mark.anyio
async def test_an_asyncio_cancel_of_the_trial_frees_the_slot() -> None:
    breaker, _ = await half_open(1)
    started = asyncio.Event()

    async def hangs() -> str:
        started.set()
        await asyncio.sleep(3600)
        return "never"

    task = asyncio.create_task(breaker.call_async(hangs))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (breaker.state, breaker.trial_in_flight) == (HALF_OPEN, False)


@pytest.mark.anyio
async def test_slow_calls_from_before_a_change_are_ignored() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, clock=clock)
    release = anyio.Event()
    outcome: list[BaseException | None] = [None]

    async def slow() -> str:
        await release.wait()
        if outcome[0] is not None:
            raise outcome[0]
        return "late"

    async with anyio.create_task_group() as group:
        group.start_soon(breaker.call_async, slow)
        await anyio.lowlevel.checkpoint()
        await open_breaker(breaker)
        release.set()
    # A success that started before the breaker opened does not close it.
    assert breaker.state is OPEN

    clock.advance(10)
    release = anyio.Event()
    outcome[0] = LLMConnectionError("late failure")
    breaker.reset()
    assert breaker.state is CLOSED
    with pytest.raises(ExceptionGroup):
        async with anyio.create_task_group() as group:
            group.start_soon(breaker.call_async, slow)
            await anyio.lowlevel.checkpoint()
            breaker.record_failure()
            breaker.record_failure()  # opened by hand while the slow call ran
            clock.advance(10)
            assert breaker.state is HALF_OPEN
            release.set()
    # Its late failure did not count against the new HALF_OPEN state.
    assert breaker.state is HALF_OPEN


# ---------------------------------------------------------------------------- observing


@pytest.mark.anyio
async def test_changes_are_logged_counted_and_reported(records: list[logging.LogRecord]) -> None:
    clock = FakeClock()
    changes: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker(
        1, 5.0, name="anthropic", clock=clock, on_change=lambda *c: changes.append(c)
    )
    await open_breaker(breaker)
    clock.advance(5)
    with pytest.raises(LLMError):
        await breaker.call_async(down())
    clock.advance(5)
    await breaker.call_async(Endpoint())

    assert changes == [
        ("anthropic", "closed", "open"),
        ("anthropic", "open", "half_open"),
        ("anthropic", "half_open", "open"),
        ("anthropic", "open", "half_open"),
        ("anthropic", "half_open", "closed"),
    ]
    assert breaker.transitions == {
        "closed->open": 1,
        "open->half_open": 2,
        "half_open->open": 1,
        "half_open->closed": 1,
    }
    levels = [(record.levelno, record.getMessage()) for record in records]
    assert len(levels) == 5
    assert [level for level, _ in levels] == [
        logging.WARNING,
        logging.INFO,
        logging.WARNING,
        logging.INFO,
        logging.INFO,
    ]
    assert all("anthropic" in message for _, message in levels)
    assert "closed -> open" in levels[0][1]


@pytest.mark.anyio
async def test_a_failing_callback_does_not_break_the_breaker(
    records: list[logging.LogRecord],
) -> None:
    def broken(name: str, old: str, new: str) -> None:
        raise RuntimeError("callback bug")

    breaker = CircuitBreaker(1, 5.0, clock=FakeClock(), on_change=broken)
    await open_breaker(breaker)
    assert breaker.state is OPEN
    assert any("on_change" in record.getMessage() for record in records)


def test_record_helpers_and_reset() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 10.0, failure_rate=0.6, clock=clock)
    breaker.record_failure()
    breaker.record_success()
    assert (breaker.state, breaker.recent) == (CLOSED, (1, 2))
    breaker.record_failure()
    assert breaker.state is OPEN
    breaker.record_failure()  # already open: the timeout is not extended
    assert breaker.retry_at == 1010.0
    clock.advance(10)
    breaker.record_success()
    assert breaker.state is CLOSED
    breaker.record_failure()
    breaker.record_failure()
    breaker.reset()
    assert (breaker.state, breaker.recent) == (CLOSED, (0, 0))


# ---------------------------------------------------------------------------- state machine


class _Suspend:
    """Awaiting this suspends the coroutine once, so a test can resume or cancel it."""

    def __await__(self) -> Generator[None, None, None]:
        yield


def _step(coro: Coroutine[Any, Any, str], throw: BaseException | None = None) -> tuple[str, Any]:
    """Drive `coro` by hand: ("suspended", None), ("returned", value) or ("raised", error)."""
    try:
        if throw is None:
            coro.send(None)
        else:
            coro.throw(throw)
    except StopIteration as stop:
        return "returned", stop.value
    except BaseException as error:
        return "raised", error
    return "suspended", None


THRESHOLD = 3  # the fewest calls judged
WINDOW = 5
RATE = 0.6
TIMEOUT = 10.0
OUTCOMES = {
    "success": None,
    "failure": LLMConnectionError("down"),
    "server_error": error_for_status(503, "busy"),
    "client_error": error_for_status(400, "bad"),
    "rate_limited": error_for_status(429, "slow"),
    "bug": ValueError("bug"),
}
OUTCOME_EFFECT = {
    "success": "success",
    "failure": "failure",
    "server_error": "failure",
    "client_error": "success",
    "rate_limited": "success",
    "bug": "neutral",
    "cancel": "neutral",
}


class BreakerMachine(RuleBasedStateMachine):
    """The breaker against a plain model, with calls that finish at once or later."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(
            THRESHOLD, TIMEOUT, failure_rate=RATE, window=WINDOW, name="model", clock=self.clock
        )
        self.state = "closed"
        self.window: deque[bool] = deque(maxlen=WINDOW)  # True: a failure
        self.opened_at = 0.0
        self.trial = False
        self.epoch = 0
        self.moves = 0
        self.pending: list[tuple[Coroutine[Any, Any, str], int, bool, list[str]]] = []

    # --- the model

    def move(self, new: str) -> None:
        self.state = new
        self.epoch += 1
        self.moves += 1
        self.trial = False
        if new == "closed":
            self.window.clear()
        elif new == "open":
            self.opened_at = self.clock.now

    def refresh(self) -> None:
        if self.state == "open" and self.clock.now >= self.opened_at + TIMEOUT:
            self.move("half_open")

    def failing(self) -> bool:
        return len(self.window) >= THRESHOLD and sum(self.window) / len(self.window) >= RATE

    def admits(self) -> bool | None:
        """None if the model refuses the call, else whether it is the trial."""
        self.refresh()
        if self.state == "closed":
            return False
        if self.state == "open" or self.trial:
            return None
        self.trial = True
        return True

    def settle(self, epoch: int, trial: bool, effect: str) -> None:
        if epoch != self.epoch:
            return
        if trial:
            self.trial = False
        if effect in ("success", "failure") and self.state == "closed":
            self.window.append(effect == "failure")
            if effect == "failure" and self.failing():
                self.move("open")
        elif effect == "success":
            self.move("closed")
        elif effect == "failure" and self.state == "half_open":
            self.move("open")
        # A failure while already open changes nothing, and the timeout is not extended.

    # --- the rules

    def start(self, box: list[str]) -> Coroutine[Any, Any, str]:
        async def endpoint() -> str:
            box.append("called")
            await _Suspend()
            error = OUTCOMES[box[0]]
            if error is not None:
                raise error
            return "ok"

        return self.breaker.call_async(endpoint)

    @rule(outcome=st.sampled_from(sorted(OUTCOMES)))
    def call(self, outcome: str) -> None:
        """A call that completes at once (well, after one suspension)."""
        box = [outcome]
        expected = self.admits()
        coro = self.start(box)
        kind, value = _step(coro)
        if expected is None:
            assert kind == "raised"
            assert isinstance(value, CircuitBreakerOpen)
            assert box == [outcome]  # the endpoint was never called
            return
        assert kind == "suspended"
        kind, value = _step(coro)
        if OUTCOMES[outcome] is None:
            assert (kind, value) == ("returned", "ok")
        else:
            assert (kind, value) == ("raised", OUTCOMES[outcome])
        self.settle(self.epoch, expected, OUTCOME_EFFECT[outcome])

    @rule(seconds=st.sampled_from([0.0, 4.5, 9.99, 10.0, 25.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: len(self.pending) < 4)
    @rule()
    def begin(self) -> None:
        """A call that stays in flight until `finish` resumes it."""
        box: list[str] = []
        expected = self.admits()
        coro = self.start(box)
        kind, value = _step(coro)
        if expected is None:
            assert kind == "raised"
            assert isinstance(value, CircuitBreakerOpen)
            assert box == []
            return
        assert (kind, box) == ("suspended", ["called"])
        self.pending.append((coro, self.epoch, expected, box))

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), outcome=st.sampled_from([*sorted(OUTCOMES), "cancel"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1))
        coro, epoch, trial, box = self.pending.pop(index)
        if outcome == "cancel":
            kind, value = _step(coro, throw=asyncio.CancelledError())
            assert kind == "raised"
            assert isinstance(value, asyncio.CancelledError)
        else:
            box.insert(0, outcome)
            kind, _ = _step(coro)
            assert kind == ("returned" if OUTCOMES[outcome] is None else "raised")
        self.settle(epoch, trial, OUTCOME_EFFECT[outcome])

    @rule(effect=st.sampled_from(["success", "failure"]))
    def record(self, effect: str) -> None:
        self.refresh()
        if effect == "success":
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        self.settle(self.epoch, False, effect)

    # --- the invariants

    @invariant()
    def agrees_with_the_model(self) -> None:
        self.refresh()
        assert self.breaker.state == self.state
        assert self.breaker.trial_in_flight is self.trial
        assert sum(self.breaker.transitions.values()) == self.moves

    @invariant()
    def closed_means_below_the_rate(self) -> None:
        if self.breaker.state is CLOSED:
            assert self.breaker.recent == (sum(self.window), len(self.window))
            if self.window and self.window[-1]:
                assert not self.failing(), "a failure at the rate opens it"
            assert not self.breaker.trial_in_flight

    @invariant()
    def open_means_waiting(self) -> None:
        retry_at = self.breaker.retry_at
        if self.breaker.state is OPEN:
            assert retry_at is not None
            assert self.clock.now < retry_at <= self.clock.now + TIMEOUT
        else:
            assert retry_at is None

    @invariant()
    def at_most_one_trial(self) -> None:
        live_trials = [p for p in self.pending if p[2] and p[1] == self.epoch]
        assert len(live_trials) <= 1
        if live_trials:
            assert self.breaker.state is HALF_OPEN

    def teardown(self) -> None:
        for coro, *_ in self.pending:
            coro.close()


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBreakerStateMachine = BreakerMachine.TestCase
