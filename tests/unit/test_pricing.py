"""Price lookups and overrides, the per-build ledger, and the cost budget."""

from __future__ import annotations

import contextlib

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity.errors import BudgetExceeded, LLMError
from trinity.llm.pricing import (
    FREE,
    PRICES,
    CostBudget,
    Price,
    cost,
    price_for,
    prompt_cache_saving,
    usage_cost,
)
from trinity.llm.types import Usage

FAST = settings(max_examples=100, database=None, deadline=None)


# --- prices --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o4-mini",
        "claude-3-5-haiku-latest",
        "claude-3-7-sonnet-latest",
        "claude-sonnet-4-0",
        "claude-opus-4-0",
    ],
)
def test_common_models_are_in_the_table(model: str) -> None:
    price = PRICES[model]
    assert 0 < price.input_per_mtok <= price.output_per_mtok


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        ("openai", "gpt-4o", Price(2.50, 10.00)),
        ("openai", "gpt-4o-mini", Price(0.15, 0.60)),
        ("openai", "gpt-4o-mini-2024-07-18", Price(0.15, 0.60)),
        ("openai", "gpt-4.1-2025-04-14", Price(2.00, 8.00)),
        ("openai", "GPT-4.1-Nano", Price(0.10, 0.40)),
        ("anthropic", "claude-3-5-haiku-latest", Price(0.80, 4.00)),
        ("anthropic", "claude-3-5-haiku-20241022", Price(0.80, 4.00)),
        ("anthropic", "claude-sonnet-4-20250514", Price(3.00, 15.00)),
        ("anthropic", "claude-opus-4-0", Price(15.00, 75.00)),
    ],
)
def test_price_lookup(provider: str, model: str, expected: Price) -> None:
    assert _list_price(price_for(provider, model, None)) == _list_price(expected)


def _list_price(price: Price | None) -> tuple[float, float] | None:
    """The input and output prices, without the prompt cache's rates."""
    return None if price is None else (price.input_per_mtok, price.output_per_mtok)


def test_a_snapshot_date_is_not_confused_with_a_different_model() -> None:
    # gpt-4o-audio-preview is not gpt-4o: no prefix guessing.
    assert price_for("openai", "gpt-4o-audio-preview", None) is None


@pytest.mark.parametrize("provider", ["local", "ollama"])
@pytest.mark.parametrize("model", ["llama3.2", "gemma3:270m", "gpt-4o"])
def test_local_models_are_free(provider: str, model: str) -> None:
    assert price_for(provider, model, None) == FREE == Price(0.0, 0.0)


def test_unknown_models_have_no_price_and_cost_zero() -> None:
    price = price_for("openai", "my-finetune-v3", None)
    assert price is None
    assert cost(price, 10_000, 10_000) == 0.0


def test_overrides_by_model_or_by_provider_and_model_win() -> None:
    overrides = {
        "gpt-4o": {"input": 1.0, "output": 2.0},
        "openai:gpt-4o-mini": {"input": 0.5, "output": 0.5},
        "my-finetune-v3": {"input": 3.0, "output": 6.0},
        "llama3.2": {"input": 0.01, "output": 0.02},  # even a local model, if asked
    }
    assert price_for("openai", "gpt-4o", overrides) == Price(1.0, 2.0)
    assert price_for("openai", "gpt-4o-mini", overrides) == Price(0.5, 0.5)
    assert price_for("anthropic", "gpt-4o-mini", overrides) == PRICES["gpt-4o-mini"]
    assert price_for("openai", "my-finetune-v3", overrides) == Price(3.0, 6.0)
    assert price_for("ollama", "llama3.2", overrides) == Price(0.01, 0.02)
    assert price_for("openai", "gpt-4.1", overrides) == PRICES["gpt-4.1"]  # untouched


def test_an_override_of_one_side_keeps_the_other() -> None:
    assert price_for("openai", "gpt-4o", {"gpt-4o": {"output": 20.0}}) == Price(
        2.50, 20.0, 1.25, 2.50
    )


def test_an_overridden_input_price_takes_the_providers_cache_shares_along() -> None:
    # Anthropic's cache rates are shares of the input price: they follow an override...
    assert price_for("anthropic", "claude-3-5-haiku", {"claude-3-5-haiku": {"input": 2.0}}) == (
        Price(2.0, 4.0, 0.2, 2.5)
    )
    # ...OpenAI's differ by model, so an overridden input price has no cached rate but itself,
    assert price_for("openai", "gpt-4o", {"gpt-4o": {"input": 2.0}}) == Price(2.0, 10.0)
    # unless the override gives it.
    given = {"gpt-4o": {"input": 2.0, "cached_input": 0.5, "cache_write": 2.0}}
    assert price_for("openai", "gpt-4o", given) == Price(2.0, 10.0, 0.5, 2.0)


def test_cached_input_is_priced_at_its_own_rates() -> None:
    price = Price(3.0, 15.0, 0.3, 3.75)
    # 1M input of which 600k read from the cache and 100k written to it, 1M output.
    usage = Usage(1_000_000, 1_000_000, cached_input_tokens=600_000, cache_write_tokens=100_000)
    assert usage_cost(price, usage) == pytest.approx(0.3 * 3.0 + 0.6 * 0.3 + 0.1 * 3.75 + 15.0)
    assert usage_cost(price, usage, batch=True) == pytest.approx(usage_cost(price, usage) / 2)
    assert prompt_cache_saving(price, usage) == pytest.approx(0.6 * 2.7 - 0.1 * 0.75)
    assert usage_cost(None, usage) == prompt_cache_saving(None, usage) == 0.0


def test_a_price_without_cache_rates_charges_cached_input_in_full() -> None:
    usage = Usage(1000, 10, cached_input_tokens=800, cache_write_tokens=100)
    assert usage_cost(Price(1.0, 2.0), usage) == pytest.approx(cost(Price(1.0, 2.0), 1000, 10))
    assert prompt_cache_saving(Price(1.0, 2.0), usage) == 0.0


def test_cache_counts_a_server_inflates_are_bounded_by_the_input() -> None:
    price = Price(1.0, 1.0, 0.0, 10.0)
    hostile = Usage(100, 0, cached_input_tokens=10**9, cache_write_tokens=10**9)
    assert usage_cost(price, hostile) == 0.0  # all 100 read from the cache, none written
    assert usage_cost(price, Usage(-5, -5, -5, -5)) == 0.0


@FAST
@given(
    total=st.integers(0, 10**7),
    read=st.integers(0, 10**7),
    written=st.integers(0, 10**7),
    out=st.integers(0, 10**7),
)
def test_usage_without_cache_counts_costs_what_cost_says(
    total: int, read: int, written: int, out: int
) -> None:
    price = PRICES["claude-sonnet-4-0"]
    assert usage_cost(price, Usage(total, out)) == pytest.approx(cost(price, total, out))
    # Whatever the cache counts, a call costs no more than writing every input token.
    usage = Usage(total, out, read, written)
    ceiling = (total * price.cache_write + out * price.output_per_mtok) / 1_000_000
    assert 0 <= usage_cost(price, usage) <= ceiling + 1e-12


def test_cost_per_million_tokens() -> None:
    assert cost(Price(2.50, 10.00), 1_000_000, 0) == pytest.approx(2.50)
    assert cost(Price(2.50, 10.00), 0, 1_000_000) == pytest.approx(10.00)
    assert cost(PRICES["gpt-4o-mini"], 1000, 500) == pytest.approx(0.00015 + 0.0003)
    assert cost(FREE, 10**9, 10**9) == 0.0
    assert cost(Price(1.0, 1.0), -5, -5) == 0.0


@FAST
@given(
    a=st.integers(0, 10**8),
    b=st.integers(0, 10**8),
    c=st.integers(0, 10**8),
    d=st.integers(0, 10**8),
)
def test_cost_is_additive(a: int, b: int, c: int, d: int) -> None:
    price = PRICES["claude-sonnet-4-0"]
    assert cost(price, a + c, b + d) == pytest.approx(cost(price, a, b) + cost(price, c, d))


# --- budget --------------------------------------------------------------------------


def test_no_budget_never_refuses_but_still_counts() -> None:
    budget = CostBudget(None)
    budget.check(10**9)
    token = budget.reserve(5.0)
    budget.settle(token, 4.0)
    assert budget.spent == 4.0
    assert budget.remaining is None


def test_check_refuses_what_would_pass_the_cap() -> None:
    budget = CostBudget(1.0)
    budget.check(1.0)  # exactly the cap is allowed
    budget.settle(budget.reserve(0.75), 0.75)
    budget.check(0.25)
    with pytest.raises(BudgetExceeded) as caught:
        budget.check(0.26)
    error = caught.value
    assert isinstance(error, LLMError)
    assert not error.retryable
    assert error.spent == pytest.approx(0.75)
    assert error.limit == 1.0
    assert "$1.0000" in str(error)


def test_reservations_count_until_settled() -> None:
    budget = CostBudget(1.0)
    first = budget.reserve(0.6)
    assert budget.reserved == pytest.approx(0.6)
    assert budget.remaining == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded, match="held by calls in flight"):
        budget.reserve(0.5)
    budget.settle(first, 0.2)  # cost less than estimated: the rest comes back
    assert budget.spent == pytest.approx(0.2)
    assert budget.reserved == 0.0
    budget.reserve(0.5)


def test_settle_counts_once_and_release_gives_back() -> None:
    budget = CostBudget(1.0)
    token = budget.reserve(0.4)
    budget.settle(token, 0.3)
    budget.settle(token, 0.3)
    assert budget.spent == pytest.approx(0.3)
    other = budget.reserve(0.7)
    budget.release(other)
    assert budget.spent == pytest.approx(0.3)
    assert budget.reserved == 0.0
    assert other.settled


@pytest.mark.anyio
async def test_concurrent_calls_cannot_overshoot_together() -> None:
    budget = CostBudget(1.0)
    admitted: list[int] = []
    refused: list[int] = []

    async def call(i: int) -> None:
        try:
            token = budget.reserve(0.3)
        except BudgetExceeded:
            refused.append(i)
            return
        admitted.append(i)
        await anyio.lowlevel.checkpoint()  # every call is in flight at once
        await anyio.lowlevel.checkpoint()
        budget.settle(token, 0.3)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(call, i)
    assert len(admitted) == 3
    assert len(refused) == 7
    assert budget.spent == pytest.approx(0.9)
    assert budget.spent <= 1.0


@FAST
@given(
    cap=st.floats(0, 10),
    calls=st.lists(st.tuples(st.floats(0, 2), st.floats(0, 1)), max_size=40),
)
def test_spending_never_passes_the_cap_when_calls_cost_at_most_their_estimate(
    cap: float, calls: list[tuple[float, float]]
) -> None:
    budget = CostBudget(cap)
    open_tokens = []
    for estimate, share in calls:
        with contextlib.suppress(BudgetExceeded):
            open_tokens.append((budget.reserve(estimate), estimate * share))
        assert budget.spent + budget.reserved <= cap + 1e-9
    for token, actual in open_tokens:
        budget.settle(token, actual)
    assert budget.spent <= cap + 1e-9
