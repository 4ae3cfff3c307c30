"""The Anthropic Messages API adapter, and the rate-limit hook every adapter has."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fakellm import ANTHROPIC_JSON_INSTRUCTION
from trinity.errors import MalformedResponseError
from trinity.llm.providers import (
    ADAPTERS,
    AnthropicAdapter,
    OllamaAdapter,
    OpenAIAdapter,
    get_adapter,
)
from trinity.llm.providers.anthropic import API_VERSION, JSON_INSTRUCTION
from trinity.llm.types import LLMRequest, Message

adapter = AnthropicAdapter()


def request(prompt: str = "Write about cats", **params: Any) -> LLMRequest:
    params.setdefault("model", "claude-x")
    params.setdefault("temperature", 0.3)
    params.setdefault("max_tokens", 100)
    return LLMRequest.from_prompt(prompt, **params)


def answer(*blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": list(blocks) or [{"type": "text", "text": "Hello."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 11, "output_tokens": 7},
        **extra,
    }


def test_registered() -> None:
    assert ADAPTERS["anthropic"] is AnthropicAdapter
    assert isinstance(get_adapter("anthropic"), AnthropicAdapter)
    assert (adapter.name, adapter.chat_path) == ("anthropic", "/v1/messages")


def test_headers() -> None:
    assert adapter.headers("sk-ant") == {"x-api-key": "sk-ant", "anthropic-version": API_VERSION}
    assert adapter.headers(None) == {"anthropic-version": "2023-06-01"}
    assert adapter.headers("") == {"anthropic-version": "2023-06-01"}


def test_body() -> None:
    body = adapter.body(request(system="Be brief.", top_p=0.9))
    assert body == {
        "model": "claude-x",
        "max_tokens": 100,
        "temperature": 0.3,
        "top_p": 0.9,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Write about cats"}],
    }
    json.dumps(body)  # plain JSON


def test_body_without_system_or_top_p() -> None:
    body = adapter.body(request())
    assert "system" not in body
    assert "top_p" not in body


def test_system_messages_are_joined_and_only_turns_are_messages() -> None:
    req = LLMRequest(
        model="m",
        messages=(
            Message("system", "One."),
            Message("user", "q1"),
            Message("assistant", "a1"),
            Message("system", "Two."),
            Message("user", "q2"),
        ),
        temperature=0.0,
        max_tokens=5,
    )
    body = adapter.body(req)
    assert body["system"] == "One.\nTwo."
    assert body["messages"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]


def test_options_are_merged_last() -> None:
    body = adapter.body(request(options={"top_k": 5, "max_tokens": 7}))
    assert (body["top_k"], body["max_tokens"]) == (5, 7)


def test_temperature_is_capped_at_anthropics_maximum() -> None:
    assert adapter.body(request(temperature=1.7))["temperature"] == 1.0
    assert adapter.body(request(temperature=1.0))["temperature"] == 1.0


def test_json_is_asked_for_in_the_system_prompt() -> None:
    assert JSON_INSTRUCTION == ANTHROPIC_JSON_INSTRUCTION  # what the fake server looks for
    body = adapter.body(request(system="Be brief.", response_format="json"))
    assert body["system"] == f"Be brief.\n\n{JSON_INSTRUCTION}"
    assert body["messages"] == [{"role": "user", "content": "Write about cats"}]
    assert "response_format" not in body
    assert adapter.body(request(response_format="json"))["system"] == JSON_INSTRUCTION


def test_a_json_schema_is_given_compactly() -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array"}}}
    body = adapter.body(request(response_format="json", json_schema=schema))
    assert body["system"] == (
        f"{JSON_INSTRUCTION} It must match this JSON schema: "
        '{"type":"object","properties":{"items":{"type":"array"}}}'
    )


def test_parse() -> None:
    response = adapter.parse(answer())
    assert response.text == "Hello."
    assert response.model == "claude-x"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.finish_reason == "stop"
    assert not response.truncated


def test_parse_joins_text_blocks_and_skips_others() -> None:
    payload = answer(
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "Hello, "},
        {"type": "tool_use", "id": "t", "name": "x", "input": {}},
        {"type": "text", "text": "world."},
    )
    assert adapter.parse(payload).text == "Hello, world."


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "refusal"),
        (None, None),
        ("", None),
        (3, None),
    ],
)
def test_stop_reasons(stop_reason: Any, finish_reason: str | None) -> None:
    response = adapter.parse(answer(stop_reason=stop_reason))
    assert response.finish_reason == finish_reason
    assert response.truncated == (stop_reason == "max_tokens")


@pytest.mark.parametrize(
    "usage", [None, {}, {"input_tokens": -1, "output_tokens": "7"}, {"input_tokens": 1.5}]
)
def test_bad_usage_reads_as_zero(usage: Any) -> None:
    response = adapter.parse(answer(usage=usage))
    assert (response.usage.input_tokens, response.usage.output_tokens) == (0, 0)


def test_no_text_blocks_is_an_empty_answer() -> None:
    assert adapter.parse({"content": []}).text == ""  # the client rejects empty answers


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        ([], "is not a JSON object"),
        ({"content": "Hello."}, "has no content"),
        ({"type": "message"}, "has no content"),
        ({"content": [{"type": "text"}]}, "has a text block without text"),
        ({"content": [{"type": "text", "text": 5}]}, "has a text block without text"),
    ],
)
def test_malformed_answers(payload: Any, what: str) -> None:
    with pytest.raises(MalformedResponseError, match=f"anthropic response {what}"):
        adapter.parse(payload)


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            "overloaded_error: Overloaded",
        ),
        ({"type": "error", "error": {"message": "no type"}}, "no type"),
        ({"error": "plain"}, "plain"),
        ({"type": "error", "error": {"type": "api_error"}}, None),
        ({"detail": "x"}, None),
        ("not a mapping", None),
    ],
)
def test_error_detail(payload: Any, detail: str | None) -> None:
    assert adapter.error_detail(payload) == detail


def test_long_error_detail_is_kept_whole_for_the_backend_to_mask_then_cut() -> None:
    payload = {"type": "error", "error": {"type": "api_error", "message": "x" * 1000}}
    assert adapter.error_detail(payload) == "api_error: " + "x" * 1000


# ---------------------------------------------------------------------------- retry_after

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize("provider", [AnthropicAdapter(), OpenAIAdapter(), OllamaAdapter()])
@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),  # in the past
        ({"retry-after-ms": "250", "Retry-After": "1"}, 0.25),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0.5s"}, 360.5),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "12"}, 12.0),
        ({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}, None),
        ({"x-ratelimit-remaining-requests": "0"}, None),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after(provider: Any, headers: dict[str, str], seconds: float | None) -> None:
    assert provider.retry_after(headers, now=NOW) == seconds


def test_retry_after_takes_the_longest_spent_limit() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1m",
    }
    assert OpenAIAdapter().retry_after(headers) == 60.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:45Z",
            },
            25.0,
        ),
        (
            {
                "anthropic-ratelimit-output-tokens-remaining": "0",
                "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:14:20+00:00",
            },
            60.0,
        ),
        (
            {
                "anthropic-ratelimit-requests-remaining": "4",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:45Z",
            },
            None,
        ),
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:45",  # no zone
            },
            None,
        ),
    ],
)
def test_anthropic_rate_limit_headers(headers: dict[str, str], seconds: float | None) -> None:
    assert adapter.retry_after(headers, now=NOW) == seconds
    assert OpenAIAdapter().retry_after(headers, now=NOW) is None


def test_retry_after_reads_httpx_headers_and_the_clock() -> None:
    assert adapter.retry_after(httpx.Headers({"RETRY-AFTER": "3"})) == 3.0
    far = {"Retry-After": "Fri, 01 Jan 2100 00:00:00 GMT"}
    wait = adapter.retry_after(far)
    assert wait is not None
    assert wait > 365 * 24 * 3600
