"""The exception tree: exit codes, which errors are retryable, and the HTTP status mapping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity import errors
from trinity.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    BuildFailed,
    CircuitBreakerOpen,
    ConfigError,
    ContentError,
    InputError,
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
    MissingDependencyError,
    RateLimitedError,
    ResourceError,
    ServerError,
    ThemeError,
    TrinityError,
)
from trinity.llm.http import error_for_status

RETRYABLE = (408, 409, 429, 500, 502, 503, 504)
NEVER_RETRYABLE = (400, 401, 403, 404, 422)


# ---------------------------------------------------------------------------- the tree


@pytest.mark.parametrize(
    ("kind", "parent"),
    [
        (InputError, TrinityError),
        (ConfigError, InputError),
        (ContentError, InputError),
        (ThemeError, InputError),
        (MissingDependencyError, InputError),
        (BuildFailed, TrinityError),
        (ResourceError, TrinityError),
        (LLMError, TrinityError),
        (LLMConnectionError, LLMError),
        (LLMTimeoutError, LLMError),
        (LLMStatusError, LLMError),
        (RateLimitedError, LLMStatusError),
        (AuthenticationError, LLMStatusError),
        (BadRequestError, LLMStatusError),
        (ServerError, LLMStatusError),
        (MalformedResponseError, LLMError),
        (CircuitBreakerOpen, LLMError),
        (BudgetExceeded, LLMError),
    ],
)
def test_hierarchy(kind: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(kind, parent)


def test_every_class_is_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, TrinityError)
    ]
    assert len(classes) >= 18
    assert "\n    TrinityError " in doc
    for kind in classes:
        if kind is not TrinityError:
            assert f"── {kind.__name__} " in doc, kind.__name__


def test_exit_codes() -> None:
    assert ConfigError("x").exit_code == EXIT_BAD_INPUT
    assert ThemeError("x").exit_code == EXIT_BAD_INPUT
    for error in (
        LLMError("x"),
        RateLimitedError("x"),
        CircuitBreakerOpen("ollama", retry_at=1.0, remaining=1.0),
        BudgetExceeded("x"),
    ):
        assert error.exit_code == EXIT_BUILD_FAILED


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (LLMError("x"), False),
        (LLMConnectionError("x"), True),
        (LLMTimeoutError("x"), True),
        (MalformedResponseError("x"), False),
        (RateLimitedError("x"), True),
        (AuthenticationError("x"), False),
        (AuthenticationError("x", status=403), False),
        (BadRequestError("x"), False),
        (ServerError("x"), True),
        (ServerError("x", status=501), False),
        (CircuitBreakerOpen("e", retry_at=0.0, remaining=0.0), False),
        (BudgetExceeded("x", spent=1.5, limit=1.0), False),
    ],
)
def test_retryable_per_class(error: LLMError, retryable: bool) -> None:
    assert error.retryable is retryable
    assert error.attempts == 1


def test_status_error_kept_its_constructor() -> None:
    error = LLMStatusError("boom", status=503)
    assert (error.status, error.retryable, error.retry_after, str(error)) == (
        503,
        True,
        None,
        "boom",
    )
    assert LLMStatusError("x", status=418).retryable is False


def test_circuit_breaker_open_names_the_endpoint_and_keeps_the_wait_apart() -> None:
    error = CircuitBreakerOpen("openai api.example", retry_at=130.0, remaining=12.34)
    assert error.name == "openai api.example"
    assert (error.retry_at, error.remaining) == (130.0, 12.34)
    assert "openai api.example" in str(error)
    assert "12.3" not in str(error)  # one reason for every block it refuses
    assert CircuitBreakerOpen("", retry_at=0.0, remaining=-3.0).remaining == 0.0
    trial = CircuitBreakerOpen("local", retry_at=0.0, remaining=0.0, detail="trial in flight")
    assert "trial in flight" in str(trial)


def test_budget_exceeded_keeps_its_figures() -> None:
    error = BudgetExceeded("--max-cost 1.00 would be exceeded", spent=0.98, limit=1.0)
    assert (error.spent, error.limit) == (0.98, 1.0)
    assert "--max-cost" in str(error)


# ---------------------------------------------------------------------------- error_for_status


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, BadRequestError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (408, LLMStatusError),
        (409, LLMStatusError),
        (413, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitedError),
        (500, ServerError),
        (501, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (529, ServerError),
        (302, LLMStatusError),
    ],
)
def test_error_for_status_picks_the_class(status: int, kind: type[LLMStatusError]) -> None:
    error = error_for_status(status, f"HTTP {status}")
    assert type(error) is kind
    assert error.status == status
    assert str(error) == f"HTTP {status}"


@pytest.mark.parametrize("status", RETRYABLE)
def test_retryable_statuses(status: int) -> None:
    assert error_for_status(status, "x").retryable is True


@pytest.mark.parametrize("status", NEVER_RETRYABLE)
def test_statuses_never_retried(status: int) -> None:
    assert error_for_status(status, "x").retryable is False


@given(st.integers(min_value=100, max_value=999))
def test_retryable_exactly_for_the_retryable_statuses(status: int) -> None:
    error = error_for_status(status, "x")
    assert error.retryable is (status in errors.RETRYABLE_STATUSES)


def test_error_for_status_carries_retry_after() -> None:
    limited = error_for_status(429, "slow down", retry_after=2.5)
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == 2.5
    assert error_for_status(503, "busy", 7.0).retry_after == 7.0
    assert error_for_status(500, "x").retry_after is None
