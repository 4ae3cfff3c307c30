"""The OpenAI chat completions API (also LM Studio, vLLM, llama.cpp server, Ollama's /v1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trinity.llm.providers.base import ProviderAdapter
from trinity.llm.types import LLMRequest, LLMResponse, Usage


class OpenAIAdapter(ProviderAdapter):
    name = "openai"
    chat_path = "/v1/chat/completions"

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": self.messages(request),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "block", "schema": dict(request.json_schema)},
            }
        elif request.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        body.update(request.options)
        return body

    def parse(self, payload: Any) -> LLMResponse:
        if not isinstance(payload, Mapping):
            raise self.malformed("is not a JSON object")
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            raise self.malformed("has no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, str):
            raise self.malformed("has no choices[0].message.content")
        return LLMResponse(
            text=content,
            model=str(payload.get("model", "")),
            usage=self.usage(payload.get("usage")),
            finish_reason=choices[0].get("finish_reason") or None,
        )

    def usage(self, usage: Any) -> Usage:
        """The usage of an answer; the input OpenAI's prompt cache served (a part of
        prompt_tokens) is under prompt_tokens_details.cached_tokens."""
        usage = usage if isinstance(usage, Mapping) else {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, Mapping) else {}
        return Usage(
            input_tokens=self.token_count(usage.get("prompt_tokens")),
            output_tokens=self.token_count(usage.get("completion_tokens")),
            cached_input_tokens=self.token_count(details.get("cached_tokens")),
        )
