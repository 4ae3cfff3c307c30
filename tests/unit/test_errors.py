"""The exception tree: exit codes, which errors are retryable, status mapping, Retry-After."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity import errors
from trinity.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    BuildFailed,
    BuildInterrupted,
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
    error_for_status,
    parse_retry_after,
    resource_error,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

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
        (BuildInterrupted, TrinityError),
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
    assert BuildInterrupted("x").exit_code == EXIT_INTERRUPTED
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


def test_circuit_breaker_open_names_the_endpoint_and_the_wait() -> None:
    error = CircuitBreakerOpen("openai api.example", retry_at=130.0, remaining=12.34)
    assert error.name == "openai api.example"
    assert (error.retry_at, error.remaining) == (130.0, 12.34)
    assert "openai api.example" in str(error)
    assert "12.3 s" in str(error)
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


# ---------------------------------------------------------------------------- parse_retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 3 ", 3.0),
        ("0.25", 0.25),
    ],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after(later, NOW) == 90.0
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:30 GMT", NOW) == 30.0


def test_retry_after_date_in_another_zone_and_naive_now() -> None:
    plus_two = timezone(timedelta(hours=2))
    later = format_datetime((NOW + timedelta(seconds=10)).astimezone(plus_two))
    assert parse_retry_after(later, NOW) == 10.0
    assert parse_retry_after(later, NOW.replace(tzinfo=None)) == 10.0
    # A date with the "-0000" zone (no zone information) is read as UTC.
    assert parse_retry_after("Sat, 01 Mar 2025 12:00:05 -0000", NOW) == 5.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Sat, 01 Mar 2025 11:00:00 GMT", NOW) == 0.0


def test_retry_after_date_defaults_to_the_current_time() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    seconds = parse_retry_after(soon)
    assert seconds is not None
    assert 3000 < seconds <= 3600


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-1", "-0.5", "nan", "inf", "-inf", "1e999", "12 seconds", "Mon"],
)
def test_retry_after_absent_or_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_retry_after_round_trips_seconds(seconds: float) -> None:
    assert parse_retry_after(repr(seconds), NOW) == seconds


# ---------------------------------------------------------------------------- resources


@pytest.mark.parametrize(
    ("number", "reason", "fix"),
    [
        (errno.ENOSPC, "no space left on device", "free some space and build again"),
        (
            errno.EDQUOT,
            "disk quota exceeded",
            "free some space or raise the disk quota, and build again",
        ),
        (
            errno.EROFS,
            "read-only file system",
            "choose another output folder on a writable file system and build again",
        ),
        (
            errno.EACCES,
            "permission denied",
            "let this user write to it and to the folder that holds it, or choose another "
            "output folder, and build again",
        ),
        (
            errno.EPERM,
            "operation not permitted",
            "let this user write to it and to the folder that holds it, or choose another "
            "output folder, and build again",
        ),
        (errno.EIO, "input/output error", "check the file system and build again"),
    ],
)
def test_resource_error_says_what_happened_where_and_what_to_do(
    number: int, reason: str, fix: str
) -> None:
    exc = OSError(number, errno.errorcode[number], "/somewhere/output/x.html")
    exc.strerror = reason[:1].upper() + reason[1:]  # as the system words it

    error = resource_error(
        exc,
        "output/",
        "writing x.html",
        instead="another output folder",
        again="build again",
        after="the previous site was left as it was",
    )

    assert str(error) == (
        f"output/: {reason} while writing x.html; {fix}; the previous site was left as it was"
    )
    assert (error.path, error.errno, error.exit_code) == ("output/", number, EXIT_BUILD_FAILED)


def test_resource_error_without_an_aftermath_or_a_reason() -> None:
    error = resource_error(OSError("no details"), ".cache/", "taking the lock .lock")
    assert str(error) == (
        ".cache/: no details while taking the lock .lock; check the file system and try again"
    )
    assert error.errno is None
