"""The one interface every provider adapter implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from trinity.errors import MalformedResponseError
from trinity.llm.headers import OPENAI_RATE_LIMITS, LimitHeaders, retry_after
from trinity.llm.types import LLMRequest, LLMResponse


class ProviderAdapter(ABC):
    """Translates between Trinity's request and response types and one wire format.

    Adapters do no I/O: the client sends what `body` and `headers` give to `chat_path`
    and hands the decoded JSON answer to `parse`.
    """

    name: str
    chat_path: str
    # (remaining, reset) header pairs that say when a spent rate limit frees up again.
    rate_limit_headers: tuple[LimitHeaders, ...] = OPENAI_RATE_LIMITS

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @abstractmethod
    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of the chat request."""

    @abstractmethod
    def parse(self, payload: Any) -> LLMResponse:
        """The answer in a decoded JSON response; MalformedResponseError if it has none."""

    def error_detail(self, payload: Any) -> str | None:
        """The server's own words from an error body, when it has any (whole: the caller
        masks the API key in it before shortening it)."""
        if isinstance(payload, Mapping):
            error = payload.get("error")
            if isinstance(error, Mapping):
                error = error.get("message")
            if isinstance(error, str):
                return error
        return None

    def retry_after(self, headers: Mapping[str, str], *, now: float | None = None) -> float | None:
        """Seconds a reply's headers ask us to wait before trying again; None if they don't say.

        Read by `trinity.llm.headers.retry_after`, with this wire format's rate limits
        (`rate_limit_headers`); `now` is the Unix time dates are measured from.
        """
        return retry_after(headers, self.rate_limit_headers, now=now)

    def malformed(self, what: str) -> MalformedResponseError:
        return MalformedResponseError(f"{self.name} response {what}")

    @staticmethod
    def messages(request: LLMRequest) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in request.messages]

    @staticmethod
    def token_count(value: Any) -> int:
        return server_count(value)


def server_count(value: Any) -> int:
    """A count from a server's JSON (tokens, requests): a whole number >= 0, else 0 (JSON's
    true is not 1)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def sampling(request: LLMRequest, max_tokens: str = "max_tokens") -> dict[str, Any]:
    """A request's sampling parameters: its temperature, its token limit (under the name
    `max_tokens` of the wire format), top_p when set, and its own options over them."""
    params: dict[str, Any] = {"temperature": request.temperature, max_tokens: request.max_tokens}
    if request.top_p is not None:
        params["top_p"] = request.top_p
    params.update(request.options)
    return params
