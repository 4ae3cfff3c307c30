"""What a build's model calls cost: a pinned price table and a spending budget.

The per-block ledger (model, attempts, latency, tokens, cost, savings) is the build
report's list of BlockResults (trinity.report).

Prices are USD per million tokens. The table below is pinned in the package; settings
(`llm.prices: {model: {input: ..., output: ...}}`) override it. Models on a local server
(the embedded model, Ollama) cost nothing; models we do not know are counted at 0 and
flagged unpriced, so the summary can say so rather than claim a build was free.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trinity.errors import BudgetExceeded

# Providers whose models run on the user's own machine: free.
FREE_PROVIDERS = frozenset({"local", "ollama"})


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float


FREE = Price(0.0, 0.0)


def _table(entries: dict[tuple[str, ...], tuple[float, float]]) -> Mapping[str, Price]:
    return MappingProxyType(
        {name: Price(*prices) for names, prices in entries.items() for name in names}
    )


# Public list prices (standard tier, no batch or cached-input discounts) as published by
# OpenAI and Anthropic, checked 2025-08. They change; `llm.prices` in the settings
# overrides any of them, and adds models missing here.
PRICES: Mapping[str, Price] = _table(
    {
        # OpenAI
        ("gpt-5",): (1.25, 10.00),
        ("gpt-5-mini",): (0.25, 2.00),
        ("gpt-5-nano",): (0.05, 0.40),
        ("gpt-4.1",): (2.00, 8.00),
        ("gpt-4.1-mini",): (0.40, 1.60),
        ("gpt-4.1-nano",): (0.10, 0.40),
        ("gpt-4o",): (2.50, 10.00),
        ("gpt-4o-mini",): (0.15, 0.60),
        ("o4-mini",): (1.10, 4.40),
        ("o3",): (2.00, 8.00),
        ("o3-mini",): (1.10, 4.40),
        ("o1",): (15.00, 60.00),
        ("o1-mini",): (1.10, 4.40),
        ("gpt-4-turbo",): (10.00, 30.00),
        ("gpt-3.5-turbo",): (0.50, 1.50),
        # Anthropic: aliases ("-latest", "-0") and dated snapshots share a price.
        ("claude-opus-4-1",): (15.00, 75.00),
        ("claude-opus-4-0", "claude-opus-4"): (15.00, 75.00),
        ("claude-sonnet-4-0", "claude-sonnet-4"): (3.00, 15.00),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"): (3.00, 15.00),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"): (3.00, 15.00),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"): (0.80, 4.00),
        ("claude-3-opus-latest", "claude-3-opus"): (15.00, 75.00),
        ("claude-3-haiku",): (0.25, 1.25),
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
    "provider:model", with `input` and `output` in USD per million tokens; they win over
    everything, even a local model's 0. A missing side keeps the table's (or 0).
    """
    for key in (f"{provider}:{model}", model):
        if overrides and key in overrides:
            base = _table_price(model) or FREE
            given = overrides[key]
            return Price(
                float(given.get("input", base.input_per_mtok)),
                float(given.get("output", base.output_per_mtok)),
            )
    if provider in FREE_PROVIDERS:
        return FREE
    return _table_price(model)


def cost(price: Price | None, input_tokens: int, output_tokens: int) -> float:
    """USD for these tokens at `price`; 0 for an unknown price."""
    if price is None:
        return 0.0
    return (
        max(0, input_tokens) * price.input_per_mtok + max(0, output_tokens) * price.output_per_mtok
    ) / 1_000_000


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
