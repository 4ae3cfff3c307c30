"""Per-API-key rate limits, and a pool of keys that spreads requests over them.

Each key has three sliding one-minute windows (requests, input tokens, output tokens).
A request reserves an *estimate* before it is sent and reconciles to the real usage when
the answer arrives, giving back what it did not use (aiolimiter cannot). On top of the
windows a key can be cooling down (after a 429 and its Retry-After) or paced by the
provider's own rate-limit headers (`x-ratelimit-remaining-*`, `anthropic-ratelimit-*`):
when the provider says nothing is left, the key waits for the reset it announced.

With a shared Redis (trinity.llm.sharedlimits), this process's limiter stays in front,
and a key it would use now is reserved in Redis too, where every process building at once
counts: the request is sent only once that reservation succeeds. A key's daily budget
(trinity.llm.budgets) is held when it is picked; a key whose budget is spent is skipped.

Every class takes its clock (`time.monotonic` style seconds) and its async sleep as
arguments, so tests drive a fake clock and never really wait.

Secrets never appear in `repr` or `str` of anything here; keys are shown by their name.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio

from trinity.errors import RateLimitedError
from trinity.llm.budgets import DailyBudgets, Hold, Refusal, Scope, key_scope
from trinity.llm.headers import (
    INPUT_TOKEN_LIMITS,
    OUTPUT_TOKEN_LIMITS,
    REQUEST_LIMITS,
    TOKEN_LIMITS,
    LimitHeaders,
    read_limit,
)
from trinity.llm.pricing import BATCH_DISCOUNT, Price, cost
from trinity.llm.sharedlimits import (
    WINDOW_MARGIN,
    SharedKey,
    SharedLimits,
    SharedReservation,
    key_identity,
)
from trinity.llm.types import LLMRequest

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float slack when comparing times, so that sleeping exactly the wait we computed frees
# the window instead of leaving a wait of 1e-15 s.
_EPSILON = 1e-9

# Cooldown after a 429 that did not say how long to wait.
DEFAULT_COOLDOWN = 1.0


def estimate_tokens(text: str) -> int:
    """A cheap estimate of the tokens in `text`: about four characters a token, at least 1."""
    return max(1, (len(text) + 3) // 4)


def estimate_request_tokens(request: LLMRequest) -> tuple[int, int]:
    """(input, output) tokens to reserve for a request: its text, and its max_tokens."""
    text_tokens = sum(estimate_tokens(message.content) + 4 for message in request.messages)
    if request.document is not None:
        text_tokens += estimate_tokens(request.document)
    return max(1, text_tokens), max(0, request.max_tokens)


def reserved_cost(price: Price | None, request: LLMRequest, *, batch: bool = False) -> float:
    """What `--max-cost` holds for a request before it is sent: its cost at the reserved
    tokens (all of max_tokens), at the batch price with `batch`. The batch pass holds it,
    and the dry run's verdict replays it, so the two agree."""
    held = cost(price, *estimate_request_tokens(request))
    return held * BATCH_DISCOUNT if batch else held


class _Entry:
    """One amount recorded in a window; mutable so a reservation can be reconciled."""

    __slots__ = ("amount", "at")

    def __init__(self, at: float, amount: int) -> None:
        self.at = at
        self.amount = amount


class SlidingWindow:
    """At most `limit` units in any `window` seconds; `limit=None` means no limit.

    An amount recorded at time t counts until t + window (exclusive). An amount larger
    than the whole limit is let through once the window is empty, rather than never.
    """

    def __init__(
        self, limit: int | None, window: float = 60.0, clock: Clock = time.monotonic
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"a window limit must be at least 1, got {limit}")
        if window <= 0:
            raise ValueError(f"a window must last more than 0 s, got {window}")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._entries: deque[_Entry] = deque()
        self._last: _Entry | None = None

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit}, window={self.window}, used={self.used()})"

    def _prune(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0].at + self.window <= now + _EPSILON:
            entries.popleft()

    def used(self, now: float | None = None) -> int:
        """Units counted in the window at `now` (default: the clock's now)."""
        now = self._clock() if now is None else now
        self._prune(now)
        return sum(entry.amount for entry in self._entries)

    def available(self, now: float | None = None) -> float:
        """Units that fit at `now`: `math.inf` without a limit, never below 0."""
        if self.limit is None:
            return math.inf
        return max(0, self.limit - self.used(now))

    def wait_time(self, amount: int) -> float:
        """Seconds until `amount` fits; 0 if it fits now."""
        if self.limit is None:
            return 0.0
        now = self._clock()
        self._prune(now)
        amount = min(max(0, amount), self.limit)  # too big: wait for an empty window
        excess = sum(entry.amount for entry in self._entries) + amount - self.limit
        if excess <= 0:
            return 0.0
        for entry in self._entries:  # oldest first: wait until enough of them expire
            excess -= entry.amount
            if excess <= 0:
                return max(0.0, entry.at + self.window - now)
        return 0.0  # unreachable: the window emptied frees everything

    def add(self, amount: int) -> _Entry:
        """Record `amount` now; returns the entry, which `adjust` can correct later."""
        entry = _Entry(self._clock(), max(0, amount))
        if self.limit is not None:  # an unlimited window need not remember anything
            self._prune(entry.at)
            self._entries.append(entry)
        self._last = entry
        return entry

    def adjust(self, delta: int, entry: _Entry | None = None) -> None:
        """Add (delta > 0) or give back (delta < 0) units of a recorded amount.

        The amount is `entry` (by default the most recent one) and never goes below zero.
        An amount that already left the window changes nothing.
        """
        entry = self._last if entry is None else entry
        if entry is not None:
            entry.amount = max(0, entry.amount + delta)


@dataclass(frozen=True)
class KeyLimits:
    """Limits of one API key (or of a keyless server): per minute, and per UTC day (tokens
    in and out, USD); None for no limit."""

    rpm: int | None = None
    input_tpm: int | None = None
    output_tpm: int | None = None
    daily_tokens: int | None = None
    daily_cost: float | None = None


NO_LIMITS = KeyLimits()


class _HeaderBudget:
    """What the provider last said is left of one limit, and when it resets."""

    __slots__ = ("remaining", "reset_at")

    def __init__(self, remaining: float, reset_at: float) -> None:
        self.remaining = remaining
        self.reset_at = reset_at

    def wait_time(self, now: float, need: int) -> float:
        if now + _EPSILON >= self.reset_at:
            return 0.0
        if self.remaining <= 0 or self.remaining < need:
            return self.reset_at - now
        return 0.0

    def consume(self, amount: int) -> None:
        self.remaining -= amount


class Reservation:
    """The estimate one request reserved on a key; `reconcile` corrects it to real usage."""

    def __init__(
        self,
        limiter: KeyLimiter,
        entries: tuple[_Entry, _Entry, _Entry],
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        self._limiter = limiter
        self._request_entry, input_entry, output_entry = entries
        self._input_entry = input_entry
        self._output_entry = output_entry
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens

    def __repr__(self) -> str:
        return f"Reservation(input_tokens={self.input_tokens}, output_tokens={self.output_tokens})"

    def reconcile(self, input_tokens: int, output_tokens: int) -> None:
        """Set the reserved tokens to what the request really used (may be called again)."""
        input_tokens, output_tokens = max(0, input_tokens), max(0, output_tokens)
        self._limiter.input_window.adjust(input_tokens - self.input_tokens, self._input_entry)
        self._limiter.output_window.adjust(output_tokens - self.output_tokens, self._output_entry)
        self.input_tokens, self.output_tokens = input_tokens, output_tokens

    def cancel(self) -> None:
        """The request was not sent after all: give back its request and its tokens."""
        self.reconcile(0, 0)
        self._limiter.request_window.adjust(-1, self._request_entry)


class KeyLimiter:
    """The limits of one key: three sliding windows, a cooldown and header pacing."""

    def __init__(
        self,
        limits: KeyLimits = NO_LIMITS,
        clock: Clock = time.monotonic,
        *,
        window: float = 60.0,
        wall_clock: Clock = time.time,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._wall_clock = wall_clock
        self.request_window = SlidingWindow(limits.rpm, window, clock)
        self.input_window = SlidingWindow(limits.input_tpm, window, clock)
        self.output_window = SlidingWindow(limits.output_tpm, window, clock)
        self._cooldown_until = -math.inf
        self._requests: _HeaderBudget | None = None
        self._tokens: _HeaderBudget | None = None
        self._input_tokens: _HeaderBudget | None = None
        self._output_tokens: _HeaderBudget | None = None

    def __repr__(self) -> str:
        return f"KeyLimiter({self.limits!r})"

    @property
    def cooling_down(self) -> bool:
        return self._clock() + _EPSILON < self._cooldown_until

    def wait_time(self, input_est: int, output_est: int) -> float:
        """Seconds until a request of this size may be sent on this key; 0 means now."""
        now = self._clock()
        waits = [
            self._cooldown_until - now,
            self.request_window.wait_time(1),
            self.input_window.wait_time(input_est),
            self.output_window.wait_time(output_est),
        ]
        waits.extend(
            budget.wait_time(now, need) for budget, need in self._budgets(input_est, output_est)
        )
        wait = max(waits)
        return wait if wait > _EPSILON else 0.0

    def reserve(self, input_est: int, output_est: int) -> Reservation:
        """Count a request of this size now, whether or not it fits (check `wait_time`)."""
        input_est, output_est = max(0, input_est), max(0, output_est)
        entries = (
            self.request_window.add(1),
            self.input_window.add(input_est),
            self.output_window.add(output_est),
        )
        for budget, amount in self._budgets(input_est, output_est):
            budget.consume(amount)
        return Reservation(self, entries, input_est, output_est)

    def _budgets(self, input_est: int, output_est: int) -> list[tuple[_HeaderBudget, int]]:
        """Each limit the provider's headers reported, with what a request of this size
        takes from it."""
        return [
            (budget, amount)
            for budget, amount in (
                (self._requests, 1),
                (self._tokens, input_est + output_est),
                (self._input_tokens, input_est),
                (self._output_tokens, output_est),
            )
            if budget is not None
        ]

    def cool_down(self, seconds: float) -> None:
        """Send nothing on this key for `seconds` (after a 429); never shortens a cooldown."""
        self._cooldown_until = max(self._cooldown_until, self._clock() + max(0.0, seconds))

    def update_from_headers(self, headers: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        """Pace from the provider's rate-limit headers: when nothing is left, wait the reset.

        Returns what they said: limit name -> (remaining, seconds until its reset)."""
        found = paced_limits(headers, self._wall_clock())
        now = self._clock()

        def budget(name: str, current: _HeaderBudget | None) -> _HeaderBudget | None:
            if name not in found:
                return current
            remaining, reset = found[name]
            return _HeaderBudget(remaining, now + reset)

        self._requests = budget("requests", self._requests)
        self._tokens = budget("tokens", self._tokens)
        self._input_tokens = budget("input_tokens", self._input_tokens)
        self._output_tokens = budget("output_tokens", self._output_tokens)
        return found


# The limits rate-limit headers report, by the name the shared limits know them by.
_PACED_HEADERS: dict[str, tuple[LimitHeaders, ...]] = {
    "requests": REQUEST_LIMITS,
    "tokens": TOKEN_LIMITS,
    "input_tokens": INPUT_TOKEN_LIMITS,
    "output_tokens": OUTPUT_TOKEN_LIMITS,
}


def paced_limits(headers: Mapping[str, str], wall_now: float) -> dict[str, tuple[float, float]]:
    """What rate-limit headers say: limit name -> (remaining, seconds until its reset); the
    first readable pair of a limit counts."""
    lowered = {name.lower(): value for name, value in headers.items()}
    found = {}
    for name, pairs in _PACED_HEADERS.items():
        for pair in pairs:
            read = read_limit(lowered, pair, wall_now)
            if read is not None:
                found[name] = read
                break
    return found


@dataclass(frozen=True)
class ApiKey:
    """One API key of a pool: the variable it came from (safe to show), its secret and its
    limits. The field names are those of `llm.api_keys` in the settings digest."""

    variable: str
    secret: str = field(repr=False)
    limits: KeyLimits = NO_LIMITS

    def __str__(self) -> str:
        return self.variable


class Lease:
    """A key picked for one request, with its reservations; report back how it went.

    `shared` is its reservation in Redis (None without one, or when Redis gave no
    verdict), `hold` what it holds of the daily `budgets`.
    """

    def __init__(
        self,
        key: ApiKey | None,
        limiter: KeyLimiter,
        reservation: Reservation,
        shared_key: SharedKey | None = None,
    ) -> None:
        self.key = key
        self._limiter = limiter
        self.reservation = reservation
        self._shared_key = shared_key
        self.shared: SharedReservation | None = None
        self.hold: Hold | None = None
        self.budgets: DailyBudgets | None = None

    @property
    def secret(self) -> str | None:
        return self.key.secret if self.key is not None else None

    @property
    def name(self) -> str:
        return self.key.variable if self.key is not None else "no key"

    def __repr__(self) -> str:
        return f"Lease(key={self.name!r})"

    __str__ = __repr__

    async def finish(
        self,
        input_tokens: int,
        output_tokens: int,
        headers: Mapping[str, str] | None = None,
        cost: float = 0.0,
    ) -> None:
        """The request ended: count its real usage (and `cost`), and pace from the answer's
        headers, here and in the shared limits."""
        self.reservation.reconcile(input_tokens, output_tokens)
        if self.shared is not None:
            await self.shared.reconcile(input_tokens, output_tokens)
        if headers:
            found = self._limiter.update_from_headers(headers)
            if found and self._shared_key is not None:
                await self._shared_key.pace(found)
        await self._settle(input_tokens + output_tokens, cost)

    async def rate_limited(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None
    ) -> None:
        """The provider answered 429: rest this key for `retry_after` s (1 s if unknown),
        in every process that shares it."""
        if headers:
            found = self._limiter.update_from_headers(headers)
            if found and self._shared_key is not None:
                await self._shared_key.pace(found)
        seconds = DEFAULT_COOLDOWN if retry_after is None else retry_after
        self._limiter.cool_down(seconds)
        if self._shared_key is not None:
            await self._shared_key.cool_down(seconds)
        await self._settle(0, 0.0)

    async def abandon(self) -> None:
        """The request failed: give back what it held of the daily budgets."""
        with anyio.CancelScope(shield=True):  # Redis answers within its short timeout
            await self._settle(0, 0.0)

    async def _settle(self, tokens: int, cost: float) -> None:
        if self.budgets is not None:
            await self.budgets.settle(self.hold, tokens, cost)


@dataclass
class _Slot:
    key: ApiKey | None
    limiter: KeyLimiter
    shared: SharedKey | None = None
    scope: Scope | None = None  # the key's daily budget, when it has one
    shared_until: float = -math.inf  # the clock's time the shared limits said to wait for
    spent: Refusal | None = None  # the key's daily budget refused a call: skip it

    def wait_time(self, input_est: int, output_est: int, now: float) -> float:
        local = self.limiter.wait_time(input_est, output_est)
        return max(local, self.shared_until - now, 0.0)


@dataclass(frozen=True)
class PoolSharing:
    """What a key pool shares with other processes: `limits` in Redis (None: this
    process's own), the daily `budgets`, and `endpoint`, the endpoint's name (a URL shown
    without credentials), which with a hash of each secret names its keys there."""

    endpoint: str = ""
    limits: SharedLimits | None = None
    budgets: DailyBudgets | None = None


class KeyPool:
    """Round-robin over API keys, skipping keys that are limited or cooling down.

    When every key is limited, `acquire` sleeps until the earliest one frees and looks
    again; past `patience` seconds it raises RateLimitedError rather than sleep. The local
    check and reservation happen with no await between them, so tasks acquiring at once
    never reserve more than a key allows; the shared reservation (`sharing.limits`) comes
    after, and a refusal there gives the local one back. A pool without keys (a server
    that needs none, such as Ollama) leases "no key", limited by `keyless_limits`.
    """

    def __init__(
        self,
        keys: Sequence[ApiKey],
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        wall_clock: Clock = time.time,
        window: float = 60.0,
        keyless_limits: KeyLimits = NO_LIMITS,
        patience: float = math.inf,
        sharing: PoolSharing | None = None,
    ) -> None:
        sharing = sharing or PoolSharing()

        def slot(key: ApiKey | None, limits: KeyLimits) -> _Slot:
            limiter = KeyLimiter(limits, clock, window=window, wall_clock=wall_clock)
            identity = key_identity(sharing.endpoint, key.secret if key else None)
            shared = sharing.limits.key(identity, limits) if sharing.limits else None
            scope = None
            if limits.daily_tokens is not None or limits.daily_cost is not None:
                shown = key.variable if key else sharing.endpoint
                scope = key_scope(identity, shown, limits.daily_tokens, limits.daily_cost)
            return _Slot(key, limiter, shared, scope)

        self._slots = [slot(key, key.limits) for key in keys] or [slot(None, keyless_limits)]
        self._clock = clock
        self._sleep = sleep
        self._next = 0
        self.patience = patience
        self.sharing = sharing
        # A shared window counts a request a little longer than the window (its margin):
        # a wait that long is still the limit's own, not a reason to give up.
        self._slack = window * WINDOW_MARGIN if sharing.limits is not None else 0.0

    def __repr__(self) -> str:
        names = [slot.key.variable if slot.key else "no key" for slot in self._slots]
        return f"KeyPool(keys={names!r})"

    __str__ = __repr__

    def __len__(self) -> int:
        return sum(1 for slot in self._slots if slot.key is not None)

    def limiter(self, name: str) -> KeyLimiter:
        """The limiter of the key called `name` ("no key" for a keyless pool)."""
        for slot in self._slots:
            if (slot.key.variable if slot.key else "no key") == name:
                return slot.limiter
        raise KeyError(name)

    def wait_time(self, input_est: int, output_est: int) -> float:
        """Seconds until some key could take a request of this size, as far as this process
        knows (its own limits, and the last wait the shared ones asked for); 0 means now."""
        now = self._clock()
        waits = [s.wait_time(input_est, output_est, now) for s in self._slots if not s.spent]
        return min(waits, default=0.0)

    def try_acquire(self, input_est: int, output_est: int) -> Lease | None:
        """A lease on the next key free now by this process's own limits, in round-robin
        order; None if all are limited."""
        now = self._clock()
        for slot in self._in_turn():
            if slot.wait_time(input_est, output_est, now) <= 0:
                return self._lease(slot, input_est, output_est)
        return None

    async def acquire(self, input_est: int, output_est: int, cost_est: float = 0.0) -> Lease:
        """A lease on a key that can take this request, waiting for one if none can now.

        Raises RateLimitedError when the wait would pass `patience`, and BudgetExceeded
        when a daily budget (the project's, or every key's) would be passed."""
        while True:
            lease = await self._try_each_key(input_est, output_est, cost_est)
            if lease is not None:
                return lease
            wait = self.wait_time(input_est, output_est)
            if self.too_long(wait):
                raise RateLimitedError(
                    f"every key for {self.sharing.endpoint or 'this server'} is rate limited "
                    f"for {wait:.0f} s",
                    retry_after=wait,
                )
            await self._sleep(wait)

    def too_long(self, wait: float) -> bool:
        """Whether `wait` (from `wait_time`) is longer than the pool waits for a key."""
        return wait > self.patience + self._slack

    def _in_turn(self) -> list[_Slot]:
        """The keys not spent for the day, the next one in round-robin order first."""
        count = len(self._slots)
        turn = [self._slots[(self._next + step) % count] for step in range(count)]
        return [slot for slot in turn if slot.spent is None]

    def _lease(self, slot: _Slot, input_est: int, output_est: int) -> Lease:
        self._next = (self._slots.index(slot) + 1) % len(self._slots)
        reservation = slot.limiter.reserve(input_est, output_est)
        return Lease(slot.key, slot.limiter, reservation, slot.shared)

    async def _try_each_key(self, input_est: int, output_est: int, cost_est: float) -> Lease | None:
        """A lease on a key that both this process and the shared limits let go now, its
        daily budget held; None when none can go now."""
        self._refuse_when_spent()
        for slot in self._in_turn():
            if slot.wait_time(input_est, output_est, self._clock()) > 0:
                continue
            lease = self._lease(slot, input_est, output_est)
            if slot.shared is not None:
                wait, lease.shared = await slot.shared.reserve(input_est, output_est)
                if wait > 0:
                    lease.reservation.cancel()
                    slot.shared_until = self._clock() + wait
                    continue
            if await self._hold_budget(slot, lease, input_est + output_est, cost_est):
                return lease
        self._refuse_when_spent()
        return None

    def _refuse_when_spent(self) -> None:
        """Once every key's daily budget is spent: the first one's BudgetExceeded."""
        refusals = [slot.spent for slot in self._slots]
        if refusals[0] is not None and all(refusals):
            raise refusals[0].error()

    async def _hold_budget(self, slot: _Slot, lease: Lease, tokens: int, cost: float) -> bool:
        """Hold the call's estimate in the daily budgets; False (the key's spent, and the
        lease given back) when its key's budget refuses. The project's refusal raises."""
        budgets = self.sharing.budgets
        scopes = budgets.scopes(slot.scope) if budgets is not None else []
        if budgets is None or not scopes:
            return True
        held = await budgets.reserve(scopes, tokens, cost)
        if not isinstance(held, Refusal):
            lease.hold, lease.budgets = held, budgets
            return True
        lease.reservation.cancel()
        if lease.shared is not None:
            await lease.shared.reconcile(0, 0)
        if held.scope != slot.scope:
            raise held.error()
        slot.spent = held
        return False


__all__ = [
    "DEFAULT_COOLDOWN",
    "NO_LIMITS",
    "ApiKey",
    "KeyLimiter",
    "KeyLimits",
    "KeyPool",
    "Lease",
    "PoolSharing",
    "Reservation",
    "SlidingWindow",
    "estimate_request_tokens",
    "estimate_tokens",
    "paced_limits",
    "reserved_cost",
]
