"""The dry run's estimator: tokens (tokenizer, history, default), output from the history
of blocks alike, cost per model, and the verdict on --max-cost."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

import pytest

from trinity.estimate import (
    DEFAULT_CHARS_PER_TOKEN,
    MESSAGE_OVERHEAD,
    BlockEstimate,
    HistoryIndex,
    budget_verdict,
    estimate_jobs,
    tokenizer_text,
)
from trinity.llm.settings import LLMSettings, Target
from trinity.llm.types import CompletionFrame, LLMRequest
from trinity.plan import Job
from trinity.site import Block, Page
from trinity.usagehistory import UsageEntry, UsageHistory

PRICED = LLMSettings(
    provider="openai",
    model="gpt-x",
    prices=MappingProxyType({"gpt-x": MappingProxyType({"input": 1.0, "output": 4.0})}),
)
PROMPT = "Describe the project in two short paragraphs for a portfolio page."


def job(
    name: str = "intro",
    *,
    fmt: str = "markdown",
    max_tokens: int = 400,
    model: str = "gpt-x",
    prompt: str = PROMPT,
    frame: CompletionFrame | None = None,
) -> Job:
    block = Block(name=name, prompt=prompt, format=fmt, max_tokens=max_tokens)
    page = Page(slug=f"page-{name}", title="T", template="page.html", blocks=(block,))
    request = LLMRequest.from_prompt(
        prompt, model=model, temperature=0.2, max_tokens=max_tokens, frame=frame
    )
    return Job(page=page, block=block, request=request, key=name)


def history(*entries: UsageEntry) -> UsageHistory:
    return UsageHistory(entries)


def used(block: str, fmt: str = "markdown", *, calls: int = 2, output: int = 240) -> UsageEntry:
    # 2 calls of 300 prompt characters that the provider counted as 50 tokens each: 6 a token.
    return UsageEntry("gpt-x", block, fmt, 400, calls, 50 * calls, output, 300 * calls)


def test_with_no_history_the_prompt_is_counted_at_the_default_ratio_and_max_tokens() -> None:
    (block,) = estimate_jobs(PRICED, [job()], history()).blocks

    expected = -(-len(PROMPT) // int(DEFAULT_CHARS_PER_TOKEN)) + MESSAGE_OVERHEAD
    assert (block.input_tokens, block.input_basis) == (expected, "default")
    assert (block.output_tokens, block.output_basis) == (400, "max_tokens")
    assert block.cost == pytest.approx((expected * 1.0 + 400 * 4.0) / 1e6)
    assert (block.model, block.provider, block.priced) == ("gpt-x", "openai", True)


def test_the_history_teaches_the_models_characters_per_token() -> None:
    (block,) = estimate_jobs(PRICED, [job()], history(used("other"))).blocks

    assert (block.input_tokens, block.input_basis) == (round(len(PROMPT) / 6), "history")


def test_output_comes_from_the_same_block_first_then_its_format() -> None:
    past = history(used("intro", output=100), used("table", "json", output=600))

    intro, json_block, text = estimate_jobs(
        PRICED, [job("intro"), job("facts", fmt="json"), job("new", fmt="text")], past
    ).blocks

    assert (intro.output_tokens, intro.output_basis) == (50, "history: block")
    assert (json_block.output_tokens, json_block.output_basis) == (300, "history: format")
    assert (text.output_tokens, text.output_basis) == (400, "max_tokens")


def test_the_history_never_raises_output_above_max_tokens() -> None:
    past = history(used("intro", output=5000))

    (block,) = estimate_jobs(PRICED, [job(max_tokens=100)], past).blocks

    assert block.output_tokens == 100


def test_another_models_history_is_not_used() -> None:
    (block,) = estimate_jobs(PRICED, [job(model="gpt-y")], history(used("intro"))).blocks

    assert (block.input_basis, block.output_basis) == ("default", "max_tokens")
    assert block.priced is False  # no price known: counted at 0, and said so
    assert block.cost == 0


def test_the_prompt_cache_is_expected_to_serve_the_share_it_served_before() -> None:
    # Of 100 input tokens, the provider read 60 from its prompt cache and wrote 10 there.
    past = UsageEntry("gpt-x", "intro", "markdown", 400, 1, 100, 20, 600, 60, 10)
    settings = LLMSettings(
        provider="openai",
        model="gpt-x",
        prices=MappingProxyType(
            {
                "gpt-x": MappingProxyType(
                    {"input": 1.0, "output": 4.0, "cached_input": 0.1, "cache_write": 1.25}
                )
            }
        ),
    )

    (block,) = estimate_jobs(settings, [job(prompt="x" * 600)], history(past)).blocks

    assert (block.input_tokens, block.output_tokens) == (100, 20)
    assert block.cost == pytest.approx((30 * 1.0 + 60 * 0.1 + 10 * 1.25 + 20 * 4.0) / 1e6)


@pytest.mark.parametrize("chars", [10, 10**6])
def test_a_ratio_no_tokenizer_has_is_not_learned(chars: int) -> None:
    lie = UsageEntry("gpt-x", "intro", "markdown", 400, 1, 100, 10, chars)

    assert HistoryIndex([lie]).chars_per_token("gpt-x") is None


def test_a_tokenizer_counts_its_models_prompts_once_for_all() -> None:
    calls: list[tuple[Target, list[str]]] = []

    def count(target: Target, texts: Sequence[str]) -> list[int] | None:
        calls.append((target, list(texts)))
        return [len(t.split()) for t in texts] if target.provider == "local" else None

    settings = LLMSettings(provider="local", model="gemma3-270m")
    frame = CompletionFrame("Site\n\n# Page\n\n## About\n\n", lead="")
    jobs = [job("a", model="gemma3-270m", frame=frame), job("b", model="openai:gpt-x")]

    local, remote = estimate_jobs(settings, jobs, history(), count).blocks

    assert calls == [
        (Target("local", "gemma3-270m"), [frame.document]),
        (Target("openai", "gpt-x"), [tokenizer_text(jobs[1].request)]),
    ]
    assert (local.input_tokens, local.input_basis) == (len(frame.document.split()), "tokenizer")
    assert (local.cost, local.priced) == (0.0, True)  # the embedded model is free
    assert remote.input_basis == "default"


def test_a_tokenizer_that_answers_the_wrong_count_is_not_believed() -> None:
    def count(target: Target, texts: Sequence[str]) -> list[int] | None:
        return [1]

    blocks = estimate_jobs(PRICED, [job("a"), job("b")], history(), count).blocks

    assert {b.input_basis for b in blocks} == {"default"}


def test_cost_is_summed_per_model_and_in_total() -> None:
    jobs = [job("a"), job("b"), job("c", model="openai:gpt-z")]

    estimate = estimate_jobs(PRICED, jobs, history())
    data = estimate.as_json()

    assert [(m["model"], m["blocks"]) for m in data["models"]] == [("gpt-x", 2), ("gpt-z", 1)]
    assert data["cost_usd"] == pytest.approx(sum(b.cost for b in estimate.blocks), abs=1e-6)
    assert data["priced"] is False
    assert data["input_tokens"] == sum(b.input_tokens for b in estimate.blocks)


def block(cost: float, ceiling: float) -> BlockEstimate:
    return BlockEstimate(
        "p", "b", "m", "openai", 1, 1, cost, "default", "max_tokens", True, ceiling
    )


def test_no_cap_stops_nothing() -> None:
    verdict = budget_verdict(None, [block(1.0, 2.0)] * 3)

    assert verdict.as_json() == {
        "max_cost_usd": None,
        "stops": False,
        "blocks_before_stop": None,
        "blocks_refused": 0,
    }


def test_a_cap_refuses_the_call_whose_ceiling_does_not_fit() -> None:
    # Spent 0, 1, 2: the third call's ceiling (2 + 1.5) passes 3.
    verdict = budget_verdict(3.0, [block(1.0, 1.5)] * 4)

    assert (verdict.stops, verdict.completed, verdict.refused) == (True, 2, 2)


def test_a_cheaper_block_after_a_refused_one_still_fits() -> None:
    verdict = budget_verdict(1.0, [block(0.5, 0.6), block(0.5, 0.9), block(0.1, 0.2)])

    assert (verdict.completed, verdict.refused) == (1, 1)


def test_a_cap_above_every_ceiling_stops_nothing() -> None:
    verdict = budget_verdict(10.0, [block(1.0, 1.5)] * 4)

    assert (verdict.stops, verdict.completed, verdict.refused) == (False, 4, 0)
