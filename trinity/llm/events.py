"""What the client tells a listener about its work: each attempt, each retry, each change
of an endpoint's circuit breaker (trinity.metrics counts them for Prometheus).

A client has no listener unless one is given (`AsyncLLMClient(events=...)`), and then
pays one `is None` test an attempt. A listener is called on the event loop, inline: it
must be quick and must not raise.

An attempt's `outcome` is one of `OUTCOMES`, a small fixed set (a label's values must not
grow with what servers say): `ok`; `batch` (an answer that came in a batch, `--batch`,
served by the client as its call); `rate_limited` (429); `server_error` (5xx);
`client_error` (any other HTTP error: 400, 401, 404, 408...); `timeout`;
`connection_error`; `malformed` (a body that is not what the protocol promises, or cut
short); `breaker_open` and `budget_exceeded` (refused before anything was sent: the
endpoint's breaker is open, or `--max-cost` would be passed); `model_failed` (the
embedded model); `error` (any other failure).
"""

from __future__ import annotations

from typing import Protocol

from trinity.errors import (
    BudgetExceeded,
    CircuitBreakerOpen,
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
    ModelFailed,
    RateLimitedError,
)
from trinity.llm.settings import Target
from trinity.llm.types import Usage

OUTCOMES = (
    "ok",
    "batch",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connection_error",
    "malformed",
    "breaker_open",
    "budget_exceeded",
    "model_failed",
    "error",
)
# Outcomes without a latency of their own: attempts refused before a request left, and
# answers that came in a batch (`--batch`), timed only as the whole batch.
UNTIMED = frozenset({"breaker_open", "budget_exceeded", "batch"})

# Most specific first: RateLimitedError is an LLMStatusError too.
_KINDS: tuple[tuple[type[LLMError], str], ...] = (
    (RateLimitedError, "rate_limited"),
    (LLMTimeoutError, "timeout"),
    (LLMConnectionError, "connection_error"),
    (MalformedResponseError, "malformed"),
    (CircuitBreakerOpen, "breaker_open"),
    (BudgetExceeded, "budget_exceeded"),
    (ModelFailed, "model_failed"),
)


def attempt_outcome(error: LLMError) -> str:
    """The outcome (one of OUTCOMES) of an attempt that failed with `error`."""
    if isinstance(error, LLMStatusError) and not isinstance(error, RateLimitedError):
        return "server_error" if error.status >= 500 else "client_error"
    for kind, outcome in _KINDS:
        if isinstance(error, kind):
            return outcome
    return "error"


class ClientEvents(Protocol):
    """Hears what an AsyncLLMClient does."""

    def attempted(
        self, target: Target, outcome: str, seconds: float, usage: Usage | None, cost: float
    ) -> None:
        """One attempt at `target` ended with `outcome` after `seconds` (an answer's
        without the wait for a rate limit or a free slot; a failure's with it); an `ok`
        one brought `usage`, priced `cost` USD (0 when the model has no price)."""

    def retried(self, target: Target) -> None:
        """A failed attempt at `target` is about to be tried again."""

    def breaker_changed(self, endpoint: str, old: str, new: str) -> None:
        """The circuit breaker of `endpoint` (its name, as messages show it) went from
        state `old` to `new` (closed, open, half_open)."""


__all__ = ["OUTCOMES", "UNTIMED", "ClientEvents", "attempt_outcome"]
