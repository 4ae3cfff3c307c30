"""A circuit breaker for one LLM endpoint: fail fast while it is down, probe with one call.

States::

    CLOSED ──(a failure, with failure_rate of the last `window` calls failed and
              at least failure_threshold calls in it)──> OPEN
    OPEN ──(timeout seconds pass)──> HALF_OPEN
    HALF_OPEN ──(the one trial call succeeds)──> CLOSED (an empty window)
    HALF_OPEN ──(the trial call fails)──> OPEN (a new timeout)

It opens on a failure *rate* over a sliding window of the last `window` counted calls,
as resilience4j and Polly do, not on a count: under load a few connection resets among
hundreds of answers are noise, not an outage. `failure_threshold` is the fewest calls the
window must hold before the rate may open it, so a dead server (every call fails, a rate
of 100 %) is still cut off after exactly that many calls. The window is never shorter
than `failure_threshold`.

What counts as a failure (`counts_as_failure`): evidence that the endpoint is unhealthy,
namely connection errors, timeouts and HTTP 5xx. Client errors (4xx) and 429 do not
count: the server answered, and rate limits are the limiter's business. Any other
answer from the server (an HTTP error that is not a failure, or a malformed body) is
proof of life and counts as a success; it is still raised to the caller.

Exceptions that say nothing about the endpoint (cancellation, KeyboardInterrupt, a bug
in our own code, CircuitBreakerOpen from an inner breaker, BudgetExceeded) change no
counts. If they end the HALF_OPEN trial, the trial slot is
released and the next caller becomes the trial, so the breaker can never stay stuck.

While OPEN, and while HALF_OPEN with the trial in flight, `call_async` raises
CircuitBreakerOpen without calling. Outcomes of calls that started before a state change
are ignored: a slow success from before the breaker opened does not close it.

Every state change is logged on "trinity.llm.breaker" (WARNING when it opens, INFO
otherwise), counted in `transitions` ("closed->open": n, ...), and passed to
`on_change(name, old_state, new_state)`. The clock is injectable (time.monotonic by
default). Not thread-safe: one event loop uses it, and no await separates a check from
the update it guards.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

from trinity.errors import (
    CircuitBreakerOpen,
    LLMConnectionError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
)

log = logging.getLogger("trinity.llm.breaker")

P = ParamSpec("P")
T = TypeVar("T")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


CLOSED = BreakerState.CLOSED
OPEN = BreakerState.OPEN
HALF_OPEN = BreakerState.HALF_OPEN

# What a finished call tells the breaker.
_SUCCESS = "success"
_FAILURE = "failure"
_NEUTRAL = "neutral"


def counts_as_failure(error: BaseException) -> bool:
    """True for errors that mean the endpoint is unhealthy: connection, timeout, 5xx."""
    if isinstance(error, LLMConnectionError | LLMTimeoutError):
        return True
    return isinstance(error, LLMStatusError) and error.status >= 500


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how long it stays open: `llm.breaker` of the settings."""

    failure_threshold: int = 5  # the fewest calls in the window before it may open
    failure_rate: float = 0.5  # the share of failed calls in the window that opens it
    window: int = 50  # the last calls judged
    timeout: float = 60.0


class CircuitBreaker:
    """Opens when `failure_rate` of the recent calls failed; probes after `timeout` seconds.

    The recent calls are the last `window` (at least `failure_threshold`) counted ones; the
    rate is judged once there are `failure_threshold` of them.
    """

    def __init__(
        self,
        failure_threshold: int = BreakerPolicy.failure_threshold,
        timeout: float = BreakerPolicy.timeout,
        *,
        failure_rate: float = BreakerPolicy.failure_rate,
        window: int = BreakerPolicy.window,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str, str], None] | None = None,
        is_failure: Callable[[BaseException], bool] = counts_as_failure,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if not timeout >= 0:
            raise ValueError(f"timeout must be a number >= 0, not {timeout!r}")
        if not 0 < failure_rate <= 1:
            raise ValueError(f"failure_rate must be above 0 and at most 1, not {failure_rate!r}")
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.window = max(window, failure_threshold)
        self.timeout = timeout
        self.name = name
        self.clock = clock
        self.on_change = on_change
        self.is_failure = is_failure
        self._state = CLOSED
        # The outcomes of the last `window` counted calls while CLOSED (True: a failure).
        self._recent: deque[bool] = deque()
        self._failures = 0  # how many of them are failures
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._generation = 0  # bumped by every state change
        self.transitions: dict[str, int] = {}
        self.calls = 0  # calls let through
        self.rejected = 0  # calls refused with CircuitBreakerOpen
        self.total_failures = 0  # counted failures, all time

    @classmethod
    def from_policy(
        cls,
        policy: BreakerPolicy,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str, str], None] | None = None,
    ) -> CircuitBreaker:
        """A breaker for one endpoint, set as the settings' `llm.breaker` says."""
        return cls(
            policy.failure_threshold,
            policy.timeout,
            failure_rate=policy.failure_rate,
            window=policy.window,
            name=name,
            clock=clock,
            on_change=on_change,
        )

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose timeout has passed is HALF_OPEN."""
        self._refresh()
        return self._state

    @property
    def recent(self) -> tuple[int, int]:
        """(failures, calls) in the window, while CLOSED."""
        return self._failures, len(self._recent)

    @property
    def trial_in_flight(self) -> bool:
        return self._trial_in_flight

    @property
    def retry_at(self) -> float | None:
        """Clock time when the next trial call may go through, while OPEN; else None."""
        if self.state is OPEN:
            return self._opened_at + self.timeout
        return None

    def _refresh(self) -> None:
        if self._state is OPEN and self.clock() >= self._opened_at + self.timeout:
            self._move(HALF_OPEN)

    def _move(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._trial_in_flight = False
        if new is CLOSED:
            self._forget()
        elif new is OPEN:
            self._opened_at = self.clock()
        change = f"{old}->{new}"
        self.transitions[change] = self.transitions.get(change, 0) + 1
        label = self.name or "endpoint"
        if new is OPEN:
            log.warning(
                "circuit breaker %s: %s -> %s; requests fail fast for %g s",
                label,
                old,
                new,
                self.timeout,
            )
        else:
            log.info("circuit breaker %s: %s -> %s", label, old, new)
        if self.on_change is not None:
            try:
                self.on_change(self.name, str(old), str(new))
            except Exception:
                log.exception("circuit breaker %s: on_change callback failed", label)

    # ------------------------------------------------------------------ outcomes

    def _forget(self) -> None:
        self._recent.clear()
        self._failures = 0

    def _remember(self, failed: bool) -> None:
        """Add one outcome to the window, dropping the oldest once it is full."""
        if len(self._recent) >= self.window and self._recent.popleft():
            self._failures -= 1
        self._recent.append(failed)
        self._failures += failed

    def _failing(self) -> bool:
        """True when the window holds enough calls and enough of them failed."""
        calls = len(self._recent)
        return calls >= self.failure_threshold and self._failures >= self.failure_rate * calls

    def _judge(self, failed: bool) -> None:
        """Add an outcome while CLOSED; a failure opens it if the window shows the rate.

        Only a failure opens it: a success that fills the window to `failure_threshold`
        calls after a few early failures (one block failing its three attempts at the
        start of a build) is the endpoint recovering, not going down.
        """
        self._remember(failed)
        if failed and self._failing():
            self._move(OPEN)

    def record_success(self) -> None:
        """The endpoint answered: add it to the window, and close if not CLOSED."""
        self._refresh()
        if self._state is CLOSED:
            self._judge(False)
        else:
            self._move(CLOSED)

    def record_failure(self) -> None:
        """The endpoint failed: add it; open at the failure rate, or reopen if HALF_OPEN."""
        self._refresh()
        self.total_failures += 1
        if self._state is CLOSED:
            self._judge(True)
        elif self._state is HALF_OPEN:
            self._move(OPEN)
        # Already OPEN: the timeout is not extended.

    def reset(self) -> None:
        """Back to CLOSED with an empty window."""
        if self._state is CLOSED:
            self._forget()
        else:
            self._move(CLOSED)

    def _classify(self, error: BaseException) -> str:
        if self.is_failure(error):
            return _FAILURE
        if isinstance(error, LLMStatusError | MalformedResponseError):
            return _SUCCESS  # the server answered, so it is alive
        return _NEUTRAL

    # ------------------------------------------------------------------ calling

    def _admit(self) -> bool:
        """Let a call through (True when it is the HALF_OPEN trial), or raise."""
        self._refresh()
        if self._state is CLOSED:
            return False
        now = self.clock()
        retry_at = self._opened_at + self.timeout
        if self._state is OPEN:
            self.rejected += 1
            raise CircuitBreakerOpen(self.name, retry_at=retry_at, remaining=retry_at - now)
        if self._trial_in_flight:
            self.rejected += 1
            raise CircuitBreakerOpen(
                self.name,
                retry_at=now,
                remaining=0.0,
                detail="half-open, a trial request is in flight",
            )
        self._trial_in_flight = True
        return True

    def _settle(self, generation: int, trial: bool, outcome: str) -> None:
        if generation != self._generation:
            return  # the breaker changed state while this call ran; its news is stale
        if trial:
            self._trial_in_flight = False
        if outcome == _SUCCESS:
            self.record_success()
        elif outcome == _FAILURE:
            self.record_failure()

    async def call_async(
        self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`await fn(*args, **kwargs)` if the breaker allows it, recording the outcome."""
        trial = self._admit()
        generation = self._generation
        self.calls += 1
        outcome = _NEUTRAL
        try:
            result = await fn(*args, **kwargs)
        except Exception as error:
            outcome = self._classify(error)
            raise
        else:
            outcome = _SUCCESS
            return result
        finally:
            # Also runs on cancellation (outcome stays neutral), which frees the trial slot.
            self._settle(generation, trial, outcome)


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "counts_as_failure",
]
