"""Prompt caching: requests mark what every block shares, and the providers' counts of
cached input are read from both usage formats (pricing them: test_pricing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from trinity.llm.providers import AnthropicAdapter, OpenAIAdapter
from trinity.llm.providers.anthropic import JSON_INSTRUCTION
from trinity.llm.requests import RequestMaker
from trinity.llm.settings import LLMSettings
from trinity.llm.types import LLMRequest, Usage

VOICE = "Write in a calm voice."
SYSTEM = f"{VOICE}\n\nThis block is a list."


def chat_request(
    system: str | None = SYSTEM, shared: int = len(VOICE), **params: Any
) -> LLMRequest:
    return LLMRequest.from_prompt(
        "Write about cats",
        model="m",
        system=system,
        temperature=0.0,
        max_tokens=10,
        shared_prefix=shared,
        **params,
    )


# --- what is sent --------------------------------------------------------------------


def test_anthropic_marks_the_shared_start_of_the_system_prompt() -> None:
    body = AnthropicAdapter().body(chat_request())

    assert body["system"] == [
        {"type": "text", "text": VOICE, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "\n\nThis block is a list."},
    ]
    # What the model reads is the same text as without the mark.
    assert "".join(block["text"] for block in body["system"]) == SYSTEM


def test_a_system_prompt_all_shared_is_one_marked_block() -> None:
    body = AnthropicAdapter().body(chat_request(system=VOICE))

    assert body["system"] == [
        {"type": "text", "text": VOICE, "cache_control": {"type": "ephemeral"}}
    ]


def test_the_json_instruction_follows_the_cached_start() -> None:
    body = AnthropicAdapter().body(chat_request(response_format="json"))

    head, rest = body["system"]
    assert head["text"] == VOICE and "cache_control" in head
    assert rest["text"].endswith(JSON_INSTRUCTION) and "cache_control" not in rest


@pytest.mark.parametrize("shared", [0, len(SYSTEM) + 1, -1])
def test_without_a_shared_start_the_system_prompt_is_a_plain_string(shared: int) -> None:
    assert AnthropicAdapter().body(chat_request(shared=shared))["system"] == SYSTEM


def test_no_system_prompt_has_no_shared_start() -> None:
    assert chat_request(system=None).shared_prefix == 0
    assert "system" not in AnthropicAdapter().body(chat_request(system=None))


def test_openai_is_sent_the_prompt_as_it_was() -> None:
    # OpenAI caches a prompt's start by itself: nothing is marked.
    body = OpenAIAdapter().body(chat_request())
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}


@pytest.mark.parametrize("prompt_cache", [True, False])
def test_requests_carry_the_shared_start_unless_prompt_caching_is_off(prompt_cache: bool) -> None:
    maker = RequestMaker(LLMSettings(provider="anthropic", model="m", prompt_cache=prompt_cache))

    request = maker.request("Write", system=SYSTEM, shared_system=VOICE)
    other = maker.request("Write", system="Another voice.", shared_system=VOICE)

    assert request.shared_prefix == (len(VOICE) if prompt_cache else 0)
    assert other.shared_prefix == 0  # a system prompt that does not start with it


def test_the_shared_start_is_not_in_the_cache_key() -> None:
    from trinity.llm.entries import cache_key

    marked, unmarked = chat_request(), chat_request(shared=0)
    assert cache_key("anthropic", "u", marked) == cache_key("anthropic", "u", unmarked)


# --- what is read --------------------------------------------------------------------


def openai_answer(usage: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "choices": [{"message": {"content": "Hi."}, "finish_reason": "stop"}],
        "usage": usage,
    }


def anthropic_answer(usage: Any) -> dict[str, Any]:
    return {"model": "m", "content": [{"type": "text", "text": "Hi."}], "usage": usage}


def test_openai_cached_tokens_are_a_part_of_the_prompt_tokens() -> None:
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 1536},
    }
    assert OpenAIAdapter().parse(openai_answer(usage)).usage == Usage(2000, 50, 1536, 0)


def test_anthropic_cache_counts_are_added_to_the_input() -> None:
    usage = {
        "input_tokens": 40,
        "output_tokens": 50,
        "cache_read_input_tokens": 1800,
        "cache_creation_input_tokens": 300,
    }
    assert AnthropicAdapter().parse(anthropic_answer(usage)).usage == Usage(2140, 50, 1800, 300)


@pytest.mark.parametrize(
    "details", [None, "lots", {"cached_tokens": -4}, {"cached_tokens": "9"}, {"cached_tokens": 1.5}]
)
def test_openai_hostile_cache_details_count_nothing(details: Any) -> None:
    usage = {"prompt_tokens": 20, "completion_tokens": 5, "prompt_tokens_details": details}
    assert OpenAIAdapter().parse(openai_answer(usage)).usage == Usage(20, 5)


@pytest.mark.parametrize("count", [None, -1, "100", 2.5, True, [1]])
def test_anthropic_hostile_cache_counts_count_nothing(count: Any) -> None:
    usage = {
        "input_tokens": 20,
        "output_tokens": 5,
        "cache_read_input_tokens": count,
        "cache_creation_input_tokens": count,
    }
    assert AnthropicAdapter().parse(anthropic_answer(usage)).usage == Usage(20, 5)
