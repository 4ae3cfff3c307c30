"""The one interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from trinity.errors import MalformedResponseError
from trinity.llm.types import LLMRequest, LLMResponse


class ProviderAdapter(ABC):
    """Translates between Trinity's request and response types and one wire format.

    Adapters do no I/O: the client sends what `body` and `headers` give to `chat_path`
    and hands the decoded JSON answer to `parse`.
    """

    name: str
    chat_path: str

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @abstractmethod
    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the chat request."""

    @abstractmethod
    def parse(self, payload: Any) -> LLMResponse:
        """The answer in a decoded JSON response; MalformedResponseError if it has none."""

    def error_detail(self, payload: Any) -> str | None:
        """The server's own words from an error body, when it has any."""
        if isinstance(payload, Mapping):
            error = payload.get("error")
            if isinstance(error, Mapping):
                error = error.get("message")
            if isinstance(error, str):
                return error[:300]
        return None

    def malformed(self, what: str) -> MalformedResponseError:
        return MalformedResponseError(f"{self.name} response {what}")

    @staticmethod
    def messages(request: LLMRequest) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in request.messages]

    @staticmethod
    def token_count(value: Any) -> int:
        return value if isinstance(value, int) and value >= 0 else 0
