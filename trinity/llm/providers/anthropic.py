"""Anthropic's Messages API: POST /v1/messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trinity.llm.headers import ANTHROPIC_RATE_LIMITS
from trinity.llm.providers.base import ProviderAdapter
from trinity.llm.types import LLMRequest, LLMResponse, Usage

API_VERSION = "2023-06-01"

# The Messages API has no JSON mode: a JSON answer is asked for in the system prompt.
JSON_INSTRUCTION = "Answer with a single JSON object only."

# Anthropic's temperature runs from 0 to 1; Trinity's settings allow up to 2.
MAX_TEMPERATURE = 1.0

_FINISH_REASONS = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop"}


class AnthropicAdapter(ProviderAdapter):
    name = "anthropic"
    chat_path = "/v1/messages"
    rate_limit_headers = ANTHROPIC_RATE_LIMITS

    def headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": min(request.temperature, MAX_TEMPERATURE),
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
        }
        if request.top_p is not None:
            body["top_p"] = request.top_p
        system = self.system(request)
        if system:
            body["system"] = _cached_prefix(system, request.shared_prefix)
        body.update(request.options)
        return body

    @staticmethod
    def system(request: LLMRequest) -> str:
        """Every system message joined, and the JSON instruction when JSON is asked for."""
        parts = [m.content for m in request.messages if m.role == "system"]
        system = "\n".join(parts)
        if request.response_format == "json" or request.json_schema is not None:
            instruction = JSON_INSTRUCTION
            if request.json_schema is not None:
                schema = json.dumps(dict(request.json_schema), separators=(",", ":"))
                instruction += f" It must match this JSON schema: {schema}"
            system = f"{system}\n\n{instruction}" if system else instruction
        return system

    def parse(self, payload: Any) -> LLMResponse:
        if not isinstance(payload, Mapping):
            raise self.malformed("is not a JSON object")
        content = payload.get("content")
        if not isinstance(content, list):
            raise self.malformed("has no content")
        texts: list[str] = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                text = block.get("text")
                if not isinstance(text, str):
                    raise self.malformed("has a text block without text")
                texts.append(text)
        stop_reason = payload.get("stop_reason")
        return LLMResponse(
            text="".join(texts),
            model=str(payload.get("model", "")),
            usage=self.usage(payload.get("usage")),
            finish_reason=(
                _FINISH_REASONS.get(stop_reason, stop_reason)
                if isinstance(stop_reason, str) and stop_reason
                else None
            ),
        )

    def usage(self, usage: Any) -> Usage:
        """The usage of an answer. Anthropic's input_tokens leaves out the input read from
        its prompt cache and written to it, counted apart: Usage counts all three as input."""
        usage = usage if isinstance(usage, Mapping) else {}
        read = self.token_count(usage.get("cache_read_input_tokens"))
        written = self.token_count(usage.get("cache_creation_input_tokens"))
        return Usage(
            input_tokens=self.token_count(usage.get("input_tokens")) + read + written,
            output_tokens=self.token_count(usage.get("output_tokens")),
            cached_input_tokens=read,
            cache_write_tokens=written,
        )

    def error_detail(self, payload: Any) -> str | None:
        """The error's type and message from Anthropic's {"type": "error", "error": {...}}."""
        if isinstance(payload, Mapping):
            error = payload.get("error")
            if isinstance(error, Mapping):
                kind, message = error.get("type"), error.get("message")
                if isinstance(message, str):
                    return f"{kind}: {message}" if isinstance(kind, str) else message
        return super().error_detail(payload)


# What marks the end of a prompt's prefix for Anthropic's prompt cache (the default
# five-minute cache: each read renews it, and a build's blocks come within seconds).
CACHE_CONTROL = {"type": "ephemeral"}


def _cached_prefix(system: str, shared: int) -> str | list[dict[str, Any]]:
    """The system prompt as sent: with a shared start, two text blocks, the first (what
    every block has) marked for the prompt cache; else the plain string."""
    if not 0 < shared <= len(system) or not system[:shared].strip():
        return system
    head = {"type": "text", "text": system[:shared], "cache_control": dict(CACHE_CONTROL)}
    rest = system[shared:]
    return [head, {"type": "text", "text": rest}] if rest.strip() else [head]
