"""Reading reply headers: Retry-After, rate-limit resets and counts, and the tables of
header names each provider and each limit reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity.llm.headers import (
    ANTHROPIC_RATE_LIMITS,
    INPUT_TOKEN_LIMITS,
    OPENAI_RATE_LIMITS,
    OUTPUT_TOKEN_LIMITS,
    REQUEST_LIMITS,
    TOKEN_LIMITS,
    parse_number,
    parse_reset,
    parse_retry_after,
    rate_headers,
    read_limit,
    retry_after,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
WALL = 1_800_000_000.0  # the fake wall clock's "now", Unix seconds


def anthropic_reset(seconds: float) -> str:
    moment = datetime.fromtimestamp(WALL, UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- parse_number


@pytest.mark.parametrize(
    ("value", "number"),
    [("0", 0.0), (" 12 ", 12.0), ("-3", -3.0), ("1.5", 1.5), ("1e3", 1000.0)],
)
def test_parse_number(value: str, number: float) -> None:
    assert parse_number(value) == number


@pytest.mark.parametrize("value", [None, "", "  ", "many", "nan", "inf", "-inf", "1e999"])
def test_parse_number_refuses_what_is_not_a_finite_number(value: str | None) -> None:
    assert parse_number(value) is None


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


# ---------------------------------------------------------------------------- parse_reset


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("500us", 0.0005),
        ("0.5", 0.5),
        ("12", 12.0),
        (" 3 ", 3.0),
        ("-4", 0.0),
        (anthropic_reset(45), 45.0),
        (anthropic_reset(-45), 0.0),  # already past
        ("2027-01-15T10:00:00+00:00", datetime(2027, 1, 15, 10, tzinfo=UTC).timestamp() - WALL),
    ],
)
def test_parse_reset(value: str, seconds: float) -> None:
    assert parse_reset(value, WALL) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "soon", "1x", "5s later", "2027-01-15T10:00:00", "nan"])
def test_parse_reset_rejects_nonsense(value: str) -> None:
    assert parse_reset(value, WALL) is None


# ---------------------------------------------------------------------------- read_limit


def test_read_limit_needs_a_count_and_a_readable_reset() -> None:
    remaining, reset = OPENAI_RATE_LIMITS[0]
    assert read_limit({remaining: "-1", reset: "2s"}, (remaining, reset), WALL) == (-1.0, 2.0)
    assert read_limit({remaining: "0"}, (remaining, reset), WALL) is None
    assert read_limit({reset: "2s"}, (remaining, reset), WALL) is None
    assert read_limit({remaining: "x", reset: "2s"}, (remaining, reset), WALL) is None
    assert read_limit({remaining: "0", reset: "soon"}, (remaining, reset), WALL) is None


# ---------------------------------------------------------------------------- retry_after


def test_a_negative_retry_after_ms_falls_back_to_retry_after() -> None:
    headers = {"retry-after-ms": "-250", "Retry-After": "2"}
    assert retry_after(headers, OPENAI_RATE_LIMITS, now=WALL) == 2.0


def test_retry_after_reads_only_the_limits_it_is_given() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": anthropic_reset(5),
    }
    assert retry_after(headers, ANTHROPIC_RATE_LIMITS, now=WALL) == 5.0
    assert retry_after(headers, OPENAI_RATE_LIMITS, now=WALL) is None


# ---------------------------------------------------------------------------- tables


def test_every_limit_table_is_read_by_a_wire_format() -> None:
    by_limit = {*REQUEST_LIMITS, *TOKEN_LIMITS, *INPUT_TOKEN_LIMITS, *OUTPUT_TOKEN_LIMITS}
    assert by_limit == set(ANTHROPIC_RATE_LIMITS)
    assert set(OPENAI_RATE_LIMITS) < set(ANTHROPIC_RATE_LIMITS)


def test_rate_headers_keeps_the_accounting_as_sent() -> None:
    sent = httpx.Headers(
        {
            "X-RateLimit-Remaining-Requests": "4",
            "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
            "Retry-After": "3",
            "retry-after-ms": "3000",
            "content-type": "application/json",
            "x-request-id": "abc",
        }
    )
    assert rate_headers(sent) == {
        "x-ratelimit-remaining-requests": "4",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:00Z",
        "retry-after": "3",
        "retry-after-ms": "3000",
    }
    assert rate_headers({"Retry-After": "3"}) == {"Retry-After": "3"}
