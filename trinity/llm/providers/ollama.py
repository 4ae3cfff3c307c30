"""Ollama's native chat API: POST /api/chat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trinity.llm.providers.base import ProviderAdapter, sampling
from trinity.llm.types import LLMRequest, LLMResponse, Usage


class OllamaAdapter(ProviderAdapter):
    name = "ollama"
    chat_path = "/api/chat"

    def body(self, request: LLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": self.messages(request),
            "stream": False,
            "options": sampling(request, max_tokens="num_predict"),
        }
        if request.response_format == "json":
            body["format"] = dict(request.json_schema) if request.json_schema else "json"
        return body

    def parse(self, payload: Any) -> LLMResponse:
        if not isinstance(payload, Mapping):
            raise self.malformed("is not a JSON object")
        message = payload.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, str):
            raise self.malformed("has no message.content")
        return LLMResponse(
            text=content,
            model=str(payload.get("model", "")),
            usage=Usage(
                input_tokens=self.token_count(payload.get("prompt_eval_count")),
                output_tokens=self.token_count(payload.get("eval_count")),
            ),
            finish_reason=payload.get("done_reason") or None,
        )
