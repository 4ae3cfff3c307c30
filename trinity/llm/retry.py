"""Retrying failed LLM requests: at most `attempts` calls, full-jitter backoff, Retry-After.

This is the one retry layer in Trinity (nested retries multiply; see LESSONS.md): the
provider adapters never retry, and neither does httpx.

Rules, after the OpenAI and Anthropic SDKs:

- Only errors whose `retryable` is true are retried: connection errors, timeouts and
  HTTP 408, 409, 429, 500, 502, 503, 504. Anything else is re-raised at once.
- At most `policy.attempts` failed calls (3 by default: the first and two retries).
- The wait before retry n (1-based) is full jitter:
  ``random() * min(max_delay, base_delay * 2 ** (n - 1))``, so 0-0.5 s, then 0-1 s, ...
- When the server said how long to wait (Retry-After, on a 429 or a 503), that wait is
  used instead, unless it is longer than `policy.retry_after_cap`: then the error is
  re-raised at once, without sleeping, so the caller can fail over to another key or
  model rather than sit idle.
- A build-wide `RetryBudget` stops retry storms: retries may be at most `ratio` of the
  requests made (but always `minimum` of them), so an outage costs little more than one
  try per block.
- A 429 (RateLimitedError) is a pacing signal, not a failure: it is waited out (its
  Retry-After, capped as above, or the backoff) without counting against `attempts` or
  the budget, until the request has been rate limited for `policy.rate_limit_wait`
  seconds in all. Rate limited means since its own first 429, or since the endpoint
  began refusing everything (`limited_since`), whichever is earlier. Then it fails with
  a RateLimitedError that says so and names the setting.
- The error that ends the attempts is re-raised unchanged, with `attempts` set to the
  number of calls made.

The sleep is injected (tests pass a fake that records and returns at once), and so is
the random source.
"""

from __future__ import annotations

import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from trinity.errors import LLMError, LLMStatusError, RateLimitedError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: total attempts, backoff bounds and the longest Retry-After obeyed.

    This is `llm.retry` of the settings as is: the settings reader checks the ranges
    (naming the file and key), and the field names are those of the settings digest.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    retry_after_cap: float = 60.0
    budget: float = 0.2  # retries may not exceed this share of requests in a build
    rate_limit_wait: float = 300.0  # a block rate limited (429) this long in all fails


def backoff_delay(policy: RetryPolicy, retry_number: int, random: Callable[[], float]) -> float:
    """Seconds to wait before retry `retry_number` (1 for the first retry), full jitter."""
    if retry_number < 1:
        raise ValueError(f"retry_number starts at 1, not {retry_number}")
    try:
        # base_delay * 2 ** (n - 1), exact however small base_delay is; past the largest
        # float it is forever, and max_delay applies.
        grown = math.ldexp(policy.base_delay, retry_number - 1)
    except OverflowError:
        grown = math.inf
    ceiling = min(policy.max_delay, grown)
    return random() * ceiling


class RetryBudget:
    """A build-wide allowance of retries: at most `ratio` of requests, at least `minimum`.

    `note_request()` counts a first attempt; `try_spend()` takes one retry from the
    budget, or returns False when it is spent. Not thread-safe: one event loop uses it.
    """

    def __init__(self, ratio: float = RetryPolicy.budget, minimum: int = 5) -> None:
        if ratio < 0 or minimum < 0:
            raise ValueError("ratio and minimum must be >= 0")
        self.ratio = ratio
        self.minimum = minimum
        self.requests = 0
        self.retries = 0
        self.denied = 0

    @property
    def allowed(self) -> float:
        """How many retries the requests so far allow in all."""
        return max(float(self.minimum), self.ratio * self.requests)

    def note_request(self) -> None:
        self.requests += 1

    def try_spend(self) -> bool:
        if self.retries < self.allowed:
            self.retries += 1
            return True
        self.denied += 1
        return False


def retry_wait(
    error: LLMError, retry_number: int, policy: RetryPolicy, random: Callable[[], float]
) -> float | None:
    """Seconds to wait before retrying after `error`, or None to give up at once.

    The server's Retry-After wins when it sent one; above the policy's cap it means
    "fail over now" (None). Otherwise full-jitter backoff.
    """
    retry_after = error.retry_after if isinstance(error, LLMStatusError) else None
    if retry_after is not None:
        return retry_after if retry_after <= policy.retry_after_cap else None
    return backoff_delay(policy, retry_number, random)


class _RateLimitClock:
    """How long one request has been rate limited, and how much longer it may wait."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Callable[[], float],
        endpoint_since: Callable[[], float | None] | None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.endpoint_since = endpoint_since
        self.since: float | None = None
        self.count = 0

    def note(self) -> float:
        """Count a 429; the seconds left to wait (<= 0: the bound is spent)."""
        self.count += 1
        now = self.clock()
        starts = [now if self.since is None else self.since]
        endpoint = self.endpoint_since() if self.endpoint_since is not None else None
        if endpoint is not None:
            starts.append(endpoint)
        self.since = min(starts)
        return self.policy.rate_limit_wait - (now - self.since)

    def exhausted(self, error: LLMError) -> RateLimitedError:
        bound = self.policy.rate_limit_wait
        spent = RateLimitedError(
            f"rate limited for {bound:g} s in all (llm.retry.rate_limit_wait): {error}",
            retry_after=error.retry_after if isinstance(error, LLMStatusError) else None,
        )
        spent.attempts = error.attempts
        return spent


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    random: Callable[[], float] = _random.random,
    budget: RetryBudget | None = None,
    on_retry: Callable[[int, LLMError, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    limited_since: Callable[[], float | None] | None = None,
) -> T:
    """`await fn()`, retried by `policy`'s rules (see the module docstring).

    `on_retry(n, error, delay)` is called before the wait for retry n (n is also the
    number of the attempt that just failed). `limited_since()` is when the endpoint began
    answering only 429s (None when it is not). Exceptions that are not LLMError
    (including cancellation) pass straight through.
    """
    if budget is not None:
        budget.note_request()
    attempt = 1
    failures = 0  # failed calls that count against policy.attempts (429s do not)
    rate_limit = _RateLimitClock(policy, clock, limited_since)
    while True:
        try:
            return await fn()
        except LLMError as error:
            error.attempts = attempt
            paced = isinstance(error, RateLimitedError)
            if paced:
                left = rate_limit.note()
                if left <= 0:
                    raise rate_limit.exhausted(error) from None
                number = rate_limit.count
            else:
                failures += 1
                if not error.retryable or failures >= policy.attempts:
                    raise
                left, number = math.inf, failures
            delay = retry_wait(error, number, policy, random)
            if delay is None:
                raise  # the server asks for a longer wait than we will give: fail over
            if not paced and budget is not None and not budget.try_spend():
                raise
            delay = min(delay, left)
            if on_retry is not None:
                on_retry(attempt, error, delay)
        # Sleep outside the except block, so the error is not the context of what follows.
        await sleep(delay)
        attempt += 1


__all__ = ["RetryBudget", "RetryPolicy", "backoff_delay", "call_with_retry", "retry_wait"]
