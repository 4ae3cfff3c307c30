"""What a reply's headers say about waiting: every Retry-After and rate-limit header
Trinity reads, named and parsed in one place.

- `Retry-After` (seconds or an HTTP date) and `retry-after-ms`, sent with a 429 or a 503,
  say how long a refused request should wait.
- Rate-limit headers come in (remaining, reset) pairs, one pair a limit: OpenAI's
  `x-ratelimit-*` and Anthropic's `anthropic-ratelimit-*`. A reset is a Go-style duration
  ("6m0s"), plain seconds, or an RFC 3339 time.

The provider adapters pick the table of their wire format (`OPENAI_RATE_LIMITS`,
`ANTHROPIC_RATE_LIMITS`) to read how long a refusal asks them to wait; the key limiter
reads the tables by limit (`REQUEST_LIMITS`, `TOKEN_LIMITS`, ...) to pace a key before it
is refused; the HTTP backend keeps on an answer only what `rate_headers` picks.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_AFTER = "retry-after"
RETRY_AFTER_MS = "retry-after-ms"

# (remaining, reset) header names of one rate limit a provider reports.
LimitHeaders = tuple[str, str]

OPENAI_REQUESTS: LimitHeaders = ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
OPENAI_TOKENS: LimitHeaders = ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
ANTHROPIC_REQUESTS: LimitHeaders = (
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
)
ANTHROPIC_TOKENS: LimitHeaders = (
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
)
ANTHROPIC_INPUT_TOKENS: LimitHeaders = (
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
)
ANTHROPIC_OUTPUT_TOKENS: LimitHeaders = (
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
)

# By wire format: every limit a provider's answers may report (an Anthropic-compatible
# server may send OpenAI's headers too).
OPENAI_RATE_LIMITS: tuple[LimitHeaders, ...] = (OPENAI_REQUESTS, OPENAI_TOKENS)
ANTHROPIC_RATE_LIMITS: tuple[LimitHeaders, ...] = (
    ANTHROPIC_REQUESTS,
    ANTHROPIC_TOKENS,
    ANTHROPIC_INPUT_TOKENS,
    ANTHROPIC_OUTPUT_TOKENS,
    *OPENAI_RATE_LIMITS,
)

# By limit: the pairs that report it, whichever provider sent them (the first found counts).
REQUEST_LIMITS: tuple[LimitHeaders, ...] = (OPENAI_REQUESTS, ANTHROPIC_REQUESTS)
TOKEN_LIMITS: tuple[LimitHeaders, ...] = (OPENAI_TOKENS, ANTHROPIC_TOKENS)
INPUT_TOKEN_LIMITS: tuple[LimitHeaders, ...] = (ANTHROPIC_INPUT_TOKENS,)
OUTPUT_TOKEN_LIMITS: tuple[LimitHeaders, ...] = (ANTHROPIC_OUTPUT_TOKENS,)

# Headers worth keeping from an answer: the provider's rate-limit accounting.
_KEPT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", RETRY_AFTER)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|h|m|s)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def rate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The rate-limit and Retry-After headers among `headers`, as they were sent."""
    return {k: v for k, v in headers.items() if k.lower().startswith(_KEPT_PREFIXES)}


def parse_number(value: str | None) -> float | None:
    """A header's finite number (white space around it allowed); None if absent or not one."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    Returns a number >= 0 (a date in the past gives 0), or None when the header is
    absent or cannot be read. `now` (default: the current UTC time) is for dates.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = parse_number(text)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    # Not a finite number (inf and nan are not dates either): an HTTP date, or nothing.
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_reset(value: str, wall_now: float) -> float | None:
    """Seconds from now until a rate-limit reset, or None if `value` makes no sense.

    Accepts plain seconds ("12", "0.5"), Go-style durations as OpenAI sends them ("1s",
    "6m0s", "20ms", "1h2m3.5s") and RFC 3339 times as Anthropic sends them
    ("2026-01-01T12:00:00Z"), the latter measured against `wall_now` (Unix seconds).
    """
    text = value.strip()
    if not text:
        return None
    seconds = parse_number(text)
    if seconds is not None:
        return max(0.0, seconds)
    parts = _DURATION_PART.findall(text)
    if parts and "".join(number + unit for number, unit in parts) == text:
        return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone could be anything
    return max(0.0, moment.timestamp() - wall_now)


def read_limit(
    headers: Mapping[str, str], names: LimitHeaders, wall_now: float
) -> tuple[float, float] | None:
    """(remaining, seconds until reset) of one limit; None unless both headers are readable.

    `headers` are keyed by lower-case name; `wall_now` is the Unix time a reset given as
    a date is measured from.
    """
    remaining_name, reset_name = names
    remaining = parse_number(headers.get(remaining_name))
    reset_value = headers.get(reset_name)
    if remaining is None or reset_value is None:
        return None
    reset = parse_reset(reset_value, wall_now)
    if reset is None:
        return None
    return remaining, reset


def retry_after(
    headers: Mapping[str, str], limits: tuple[LimitHeaders, ...], *, now: float | None = None
) -> float | None:
    """Seconds a reply's headers ask us to wait before trying again; None if they don't say.

    `retry-after-ms`, then `Retry-After` (seconds or an HTTP date), then the reset of a
    rate limit in `limits` whose remaining count is 0 (the longest, if several are spent).
    `now` is the Unix time dates are measured from (default: the current time).
    """
    found = {k.lower(): v.strip() for k, v in headers.items()}
    wall = time.time() if now is None else now
    millis = parse_number(found.get(RETRY_AFTER_MS))
    if millis is not None and millis >= 0:
        return millis / 1000
    seconds = parse_retry_after(found.get(RETRY_AFTER), datetime.fromtimestamp(wall, tz=UTC))
    if seconds is not None:
        return seconds
    spent = [limit for limit in (read_limit(found, names, wall) for names in limits) if limit]
    waits = [reset for remaining, reset in spent if remaining == 0]
    return max(waits) if waits else None
