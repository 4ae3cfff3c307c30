"""The batched engine with the real embedded model (Gemma 3 270M): several blocks decoded
together in one llama.cpp context, each answer as if it had been generated alone.

Answers are short (a few dozen tokens) to keep the tests quick; the engine has 4
sequences (the most allowed), so a batch of 6 also refills freed sequences.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import pytest

from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers.batched import BatchedEngine, Outcome, engine_for
from trinity.llm.providers.local import SAMPLING_ATTEMPTS, LocalBackend, ModelRunner
from trinity.llm.settings import LLMSettings
from trinity.llm.types import CompletionFrame, LLMRequest

pytestmark = pytest.mark.slow

SEQUENCES = 4
SETTINGS = LLMSettings(
    provider="local", api_url="", threads=2, sequences=SEQUENCES, max_tokens=24, context=512
)
LEADS = ("Mara is", "The project", "Oslo is", "Her garden", "Python is", "In 2020,")


def request(
    lead: str,
    *,
    stop: tuple[str, ...] = ("\n\n",),
    options: dict[str, object] | None = None,
    **params: Any,
) -> LLMRequest:
    """A block as the client frames it for the embedded model, `options` over its own."""
    document = f"Mara Quinn: a Python developer\n\n# Home\n\n## {lead.split()[0]}\n\n{lead}"
    client = AsyncLLMClient(SETTINGS)
    made = client.request("Write.", frame=CompletionFrame(document, lead, stop), **params)
    return replace(made, options=MappingProxyType({**made.options, **(options or {})}))


@pytest.fixture(scope="module")
def engine() -> Iterator[BatchedEngine]:
    runner = ModelRunner(SETTINGS)
    made = engine_for(runner)
    assert isinstance(made, BatchedEngine)
    yield made
    assert not made.busy
    made.close()


def run(
    engine: BatchedEngine, requests: Sequence[LLMRequest], cancel: int | None = None
) -> dict[int, Outcome]:
    """Every request's outcome, by its position; `cancel` is dropped after the first step."""
    for ident, each in enumerate(requests):
        engine.submit(ident, each)
    outcomes: dict[int, Outcome] = {}
    steps = 0
    while engine.busy:
        for outcome in engine.step():
            assert outcome.ident not in outcomes
            outcomes[outcome.ident] = outcome
        steps += 1
        if steps == 1 and cancel is not None:
            engine.cancel(cancel)
    return outcomes


def answer(outcome: Outcome) -> tuple[str, str | None, int, int]:
    assert outcome.error is None and outcome.response is not None
    response = outcome.response
    usage = response.usage
    return response.text, response.finish_reason, usage.input_tokens, usage.output_tokens


def test_an_answer_does_not_depend_on_the_blocks_it_was_decoded_with(
    engine: BatchedEngine,
) -> None:
    """Alone, first among others, last in line behind a full batch: the same answer."""
    block = request("Mara is")
    alone = answer(run(engine, [block])[0])
    with_others = run(engine, [block, request("The project"), request("Oslo is")])
    behind_others = run(engine, [*(request(lead) for lead in LEADS[1:]), block])
    assert answer(with_others[0]) == alone
    assert answer(behind_others[len(LEADS) - 1]) == alone
    assert alone[0].startswith("Mara is ")


def test_more_blocks_than_sequences_are_all_answered_each_as_alone(
    engine: BatchedEngine,
) -> None:
    blocks = [request(lead) for lead in LEADS]
    together = run(engine, blocks)
    assert sorted(together) == list(range(len(LEADS)))
    for ident, block in enumerate(blocks):
        assert answer(together[ident]) == answer(run(engine, [block])[0])
        assert answer(together[ident])[0].startswith(block.lead)
    assert max(outcome.waited for outcome in together.values()) > 0  # some waited for a place


def test_the_seed_is_the_requests_own(engine: BatchedEngine) -> None:
    """Four seeds of one block in one batch: not all alike, as four sequences with one
    random stream would never be either."""
    seeds = [request("Her garden", options={"seed": seed}, temperature=1.0) for seed in range(4)]
    texts = {answer(outcome)[0] for outcome in run(engine, seeds).values()}
    assert len(texts) > 1


def test_max_tokens_cuts_the_continuation(engine: BatchedEngine) -> None:
    text, finish, _, output_tokens = answer(
        run(engine, [request("Mara is", max_tokens=5, stop=())])[0]
    )
    assert finish == "length"
    assert output_tokens % 5 == 0  # five a try: a short one is tried again (at most thrice)
    assert 5 <= output_tokens <= 5 * SAMPLING_ATTEMPTS
    assert len(text.split()) <= 2 + 5


def test_a_stop_sequence_ends_the_text_before_it(engine: BatchedEngine) -> None:
    block = request("Mara is", stop=(".", ","), max_tokens=64)
    text, finish, _, _ = answer(run(engine, [block])[0])
    assert finish == "stop"
    assert text.startswith("Mara is ")
    assert "." not in text and "," not in text


def test_a_short_continuation_is_tried_again_with_the_next_seeds(engine: BatchedEngine) -> None:
    """Stopping at the first space leaves nothing: too short, so every attempt is made."""
    block = request("Mara is", stop=(" ",))  # every continuation starts with a space
    text, _, input_tokens, _ = answer(run(engine, [block])[0])
    prompt_tokens = len(engine.llama.tokenize(block.document or ""))
    assert input_tokens == SAMPLING_ATTEMPTS * prompt_tokens
    assert text == ""  # never just the lead


def test_a_cancelled_block_frees_its_sequence_and_leaves_the_others_alone(
    engine: BatchedEngine,
) -> None:
    blocks = [request(lead) for lead in LEADS[:4]]
    outcomes = run(engine, blocks, cancel=1)
    assert sorted(outcomes) == [0, 2, 3]
    for ident in (0, 2, 3):
        assert answer(outcomes[ident]) == answer(run(engine, [blocks[ident]])[0])


def test_json_is_held_to_its_schema_in_a_batch(engine: BatchedEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"year": {"type": "integer"}},
        "required": ["year"],
    }
    block = request("Mara is", response_format="json", json_schema=schema, max_tokens=32)
    outcomes = run(engine, [block, request("Oslo is")])
    text, finish, _, _ = answer(outcomes[0])
    assert finish == "stop"
    assert isinstance(json.loads(text)["year"], int)


def test_options_the_batch_does_not_know_go_to_create_completion(engine: BatchedEngine) -> None:
    block = request("Mara is", options={"mirostat_mode": 2, "seed": 0})
    text, _, _, _ = answer(run(engine, [block, request("Oslo is")])[0])
    assert text.startswith("Mara is")


def test_a_prompt_longer_than_the_context_fails_alone(engine: BatchedEngine) -> None:
    long = request("Mara is")
    long = replace(long, document="word " * 2000 + "Mara is")
    outcomes = run(engine, [long, request("Oslo is")])
    assert outcomes[0].error is not None and "context" in outcomes[0].error
    assert answer(outcomes[1])[0].startswith("Oslo is")


def test_blocks_in_flight_through_the_worker_each_get_their_own_answer(
    engine: BatchedEngine, tmp_path: Path
) -> None:
    """Answers come back from the worker process in the order they finish, each to its
    caller, and equal to the same blocks decoded in this process."""
    backend = LocalBackend(replace(SETTINGS, base_dir=tmp_path))
    blocks = [request(lead) for lead in LEADS[:4]]
    answers: dict[int, tuple[str, str | None, int, int]] = {}

    async def main() -> None:
        async def one(ident: int) -> None:
            response = await backend.send(blocks[ident])
            usage = response.usage
            answers[ident] = (
                response.text,
                response.finish_reason,
                usage.input_tokens,
                usage.output_tokens,
            )

        try:
            async with anyio.create_task_group() as group:
                for ident in range(len(blocks)):
                    group.start_soon(one, ident)
        finally:
            await backend.aclose()

    anyio.run(main)
    expected = run(engine, blocks)
    assert answers == {ident: answer(expected[ident]) for ident in range(len(blocks))}
    assert backend.worker.started == 1


def test_a_block_cancelled_in_flight_leaves_the_worker_and_the_others_alone(
    engine: BatchedEngine, tmp_path: Path
) -> None:
    """Its caller gives up while the worker decodes it with others: the worker drops it
    and lives on, and the others' answers are as they would have been."""
    backend = LocalBackend(replace(SETTINGS, base_dir=tmp_path))
    blocks = [request(lead) for lead in LEADS[:4]]
    endless = request(LEADS[1], stop=(), max_tokens=400)  # far longer than the wait
    texts: dict[int, str] = {}

    async def main() -> None:
        async def one(ident: int) -> None:
            texts[ident] = (await backend.send(blocks[ident])).text

        async def given_up() -> None:
            with anyio.move_on_after(0.5):
                texts[1] = (await backend.send(endless)).text

        try:
            await backend.worker.ready()
            async with anyio.create_task_group() as group:
                group.start_soon(one, 0)
                group.start_soon(given_up)
                group.start_soon(one, 2)
            await one(3)
        finally:
            await backend.aclose()

    anyio.run(main)
    expected = run(engine, blocks)
    assert texts == {ident: answer(expected[ident])[0] for ident in (0, 2, 3)}
    assert backend.worker.started == 1
