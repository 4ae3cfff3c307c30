"""What a build's model calls cost: a pinned price table and a spending budget.

The per-block ledger (model, attempts, latency, tokens, cost, savings) is the build
report's list of BlockResults (trinity.report).

Prices are USD per million tokens. The table below is pinned in the package; settings
(`llm.prices: {model: {input: ..., output: ..., cached_input: ..., cache_write: ...}}`)
override it. Models on a local server (the embedded model, Ollama) cost nothing; models we
do not know are counted at 0 and flagged unpriced, so the summary can say so rather than
claim a build was free.

Input the provider read from its prompt cache costs less (OpenAI: a half to a tenth of the
input price, by model; Anthropic: a tenth), and Anthropic charges a quarter more to write
it there; a batch (`--batch`) costs half of everything (BATCH_DISCOUNT).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trinity.errors import BudgetExceeded
from trinity.llm.types import Usage

# Providers whose models run on the user's own machine: free.
FREE_PROVIDERS = frozenset({"local", "ollama"})


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens; and per million input tokens read from
    the provider's prompt cache, or written to it (None: at the input price)."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    @property
    def cached_input(self) -> float:
        return (
            self.input_per_mtok
            if self.cached_input_per_mtok is None
            else self.cached_input_per_mtok
        )

    @property
    def cache_write(self) -> float:
        return (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )


FREE = Price(0.0, 0.0)

# What a batch costs of the same calls made live: half, at OpenAI and Anthropic alike (the
# discount applies to every kind of token, cached ones included).
BATCH_DISCOUNT = 0.5

# Anthropic's prompt cache: a read costs a tenth of the input price, a write (the default
# five-minute cache) a quarter more than it.
ANTHROPIC_CACHE_READ = 0.1
ANTHROPIC_CACHE_WRITE = 1.25


def _openai(input_: float, output: float, cached: float | None) -> Price:
    # OpenAI caches prompts by itself and charges nothing more to write them.
    return Price(input_, output, cached, None if cached is None else input_)


def _anthropic(input_: float, output: float) -> Price:
    return Price(input_, output, input_ * ANTHROPIC_CACHE_READ, input_ * ANTHROPIC_CACHE_WRITE)


def _table(entries: dict[tuple[str, ...], Price]) -> Mapping[str, Price]:
    return MappingProxyType({name: price for names, price in entries.items() for name in names})


# Public list prices (standard tier) as published by OpenAI and Anthropic, checked 2025-08,
# with each model's cached-input price (OpenAI: none for the oldest models). They change;
# `llm.prices` in the settings overrides any of them, and adds models missing here.
PRICES: Mapping[str, Price] = _table(
    {
        # OpenAI
        ("gpt-5",): _openai(1.25, 10.00, 0.125),
        ("gpt-5-mini",): _openai(0.25, 2.00, 0.025),
        ("gpt-5-nano",): _openai(0.05, 0.40, 0.005),
        ("gpt-4.1",): _openai(2.00, 8.00, 0.50),
        ("gpt-4.1-mini",): _openai(0.40, 1.60, 0.10),
        ("gpt-4.1-nano",): _openai(0.10, 0.40, 0.025),
        ("gpt-4o",): _openai(2.50, 10.00, 1.25),
        ("gpt-4o-mini",): _openai(0.15, 0.60, 0.075),
        ("o4-mini",): _openai(1.10, 4.40, 0.275),
        ("o3",): _openai(2.00, 8.00, 0.50),
        ("o3-mini",): _openai(1.10, 4.40, 0.55),
        ("o1",): _openai(15.00, 60.00, 7.50),
        ("o1-mini",): _openai(1.10, 4.40, 0.55),
        ("gpt-4-turbo",): _openai(10.00, 30.00, None),
        ("gpt-3.5-turbo",): _openai(0.50, 1.50, None),
        # OpenAI's embeddings (the semantic cache's): input only.
        ("text-embedding-3-small",): _openai(0.02, 0.0, None),
        ("text-embedding-3-large",): _openai(0.13, 0.0, None),
        ("text-embedding-ada-002",): _openai(0.10, 0.0, None),
        # Anthropic: aliases ("-latest", "-0") and dated snapshots share a price.
        ("claude-opus-4-1",): _anthropic(15.00, 75.00),
        ("claude-opus-4-0", "claude-opus-4"): _anthropic(15.00, 75.00),
        ("claude-sonnet-4-0", "claude-sonnet-4"): _anthropic(3.00, 15.00),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"): _anthropic(3.00, 15.00),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"): _anthropic(3.00, 15.00),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"): _anthropic(0.80, 4.00),
        ("claude-3-opus-latest", "claude-3-opus"): _anthropic(15.00, 75.00),
        ("claude-3-haiku",): _anthropic(0.25, 1.25),
    }
)

# A snapshot date at the end of a model name: gpt-4o-2024-08-06, claude-3-5-haiku-20241022.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


def _table_price(model: str) -> Price | None:
    name = model.strip().lower()
    for candidate in (name, _SNAPSHOT.sub("", name), name.removesuffix("-latest")):
        if candidate in PRICES:
            return PRICES[candidate]
    return None


def price_for(
    provider: str,
    model: str,
    overrides: Mapping[str, Mapping[str, float]] | None = None,
) -> Price | None:
    """The price of `model` at `provider`; None if unknown (count it at 0, flag it).

    `overrides` (the settings' `llm.prices`) are keyed by model name, or by
    "provider:model", with `input`, `output`, `cached_input` and `cache_write` in USD per
    million tokens; they win over everything, even a local model's 0. A missing side keeps
    the table's (or 0); a cache rate not given is the provider's usual share of the input
    price given (Anthropic's), or the input price.
    """
    for key in (f"{provider}:{model}", model):
        if overrides and key in overrides:
            return _overridden(provider, _table_price(model) or FREE, overrides[key])
    if provider in FREE_PROVIDERS:
        return FREE
    return _table_price(model)


def _overridden(provider: str, base: Price, given: Mapping[str, float]) -> Price:
    input_ = float(given.get("input", base.input_per_mtok))
    read, write = base.cached_input_per_mtok, base.cache_write_per_mtok
    if "input" in given:  # the table's cache rates were shares of another input price
        anthropic = provider == "anthropic"
        read = input_ * ANTHROPIC_CACHE_READ if anthropic else None
        write = input_ * ANTHROPIC_CACHE_WRITE if anthropic else None
    return Price(
        input_,
        float(given.get("output", base.output_per_mtok)),
        float(given["cached_input"]) if "cached_input" in given else read,
        float(given["cache_write"]) if "cache_write" in given else write,
    )


def cost(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    """USD for these tokens at `price`; 0 for an unknown price."""
    if price is None:
        return 0.0
    return (
        max(0, input_tokens) * price.input_per_mtok + max(0, output_tokens) * price.output_per_mtok
    ) / 1_000_000


def usage_cost(price: Price | None, usage: Usage, *, batch: bool = False) -> float:
    """USD for one call's `usage` at `price` (0 for an unknown price): the input read from
    or written to the prompt cache at their own rates, and with `batch`, at the batch rate.
    The cache counts are parts of `input_tokens`, and are bounded by it (a server's
    numbers are not trusted to add up)."""
    if price is None:
        return 0.0
    read, written, plain = input_parts(usage)
    usd = (
        plain * price.input_per_mtok
        + read * price.cached_input
        + written * price.cache_write
        + max(0, usage.output_tokens) * price.output_per_mtok
    ) / 1_000_000
    return usd * BATCH_DISCOUNT if batch else usd


def prompt_cache_saving(price: Price | None, usage: Usage, *, batch: bool = False) -> float:
    """What the prompt cache saved on one call, USD: its input at the full input price,
    less what it cost (negative when writing the cache cost more than reading saved)."""
    if price is None:
        return 0.0
    read, written, _ = input_parts(usage)
    usd = (
        read * (price.input_per_mtok - price.cached_input)
        - written * (price.cache_write - price.input_per_mtok)
    ) / 1_000_000
    return usd * BATCH_DISCOUNT if batch else usd


def input_parts(usage: Usage) -> tuple[int, int, int]:
    """(read from the prompt cache, written to it, neither) of a call's input tokens: a
    server's numbers need not add up, so the cache's parts are bounded by the input."""
    total = max(0, usage.input_tokens)
    read = min(max(0, usage.cached_input_tokens), total)
    written = min(max(0, usage.cache_write_tokens), total - read)
    return read, written, total - read - written


def over_budget(budget: str, used: str, estimate: str) -> str:
    """What a budget that refuses a call says (`--max-cost`, the daily budgets): which
    budget, what it has used, and what the call would have cost."""
    return f"{budget} would be exceeded: {used}, this call estimated at {estimate}"


class BudgetReservation:
    """An estimate held against a CostBudget until the call it was for is settled."""

    __slots__ = ("estimate", "settled")

    def __init__(self, estimate: float) -> None:
        self.estimate = estimate
        self.settled = False

    def __repr__(self) -> str:
        return f"BudgetReservation(estimate={self.estimate!r}, settled={self.settled})"


@dataclass
class CostBudget:
    """A build's spending cap (`--max-cost`, USD); None for no cap, only tracking.

    Each call reserves its estimated cost before it is sent and settles to the real cost
    after, so calls in flight together cannot all pass the check and overshoot as one.
    A call can still overshoot its own estimate; the budget then refuses what follows.
    """

    max_cost: float | None
    _spent: float = field(default=0.0, init=False, repr=False)
    _open: set[BudgetReservation] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def spent(self) -> float:
        return self._spent

    @property
    def reserved(self) -> float:
        with self._lock:
            return math.fsum(r.estimate for r in self._open)

    @property
    def remaining(self) -> float | None:
        """USD left after what is spent and reserved; None without a cap."""
        if self.max_cost is None:
            return None
        return max(0.0, self.max_cost - self._spent - self.reserved)

    def check(self, estimate: float) -> None:
        """Raise BudgetExceeded if a call costing `estimate` would pass the cap."""
        with self._lock:
            self._check(max(0.0, estimate))

    def _check(self, estimate: float) -> None:
        if self.max_cost is None:
            return
        reserved = math.fsum(r.estimate for r in self._open)
        if self._spent + reserved + estimate > self.max_cost + 1e-12:
            held = f", ${reserved:.4f} held by calls in flight" if reserved else ""
            raise BudgetExceeded(
                over_budget(
                    f"the cost budget of ${self.max_cost:.4f}",
                    f"${self._spent:.4f} spent{held}",
                    f"${estimate:.4f}",
                ),
                spent=self._spent,
                limit=self.max_cost,
            )

    def reserve(self, estimate: float) -> BudgetReservation:
        """Hold `estimate` for a call about to be sent; raises BudgetExceeded if it can't."""
        estimate = max(0.0, estimate)
        with self._lock:
            self._check(estimate)
            reservation = BudgetReservation(estimate)
            self._open.add(reservation)
            return reservation

    def settle(self, reservation: BudgetReservation, actual: float) -> None:
        """The call ended and cost `actual`: release its hold and count the cost (once)."""
        with self._lock:
            if reservation.settled or reservation not in self._open:
                return
            reservation.settled = True
            self._open.discard(reservation)
            self._spent += max(0.0, actual)

    def release(self, reservation: BudgetReservation) -> None:
        """The call was never made (or cost nothing): give its hold back."""
        self.settle(reservation, 0.0)
