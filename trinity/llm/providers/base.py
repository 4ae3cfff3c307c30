"""The one interface every provider adapter implements."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from trinity.errors import MalformedResponseError, parse_retry_after
from trinity.llm.ratelimit import parse_reset
from trinity.llm.types import LLMRequest, LLMResponse


class ProviderAdapter(ABC):
    """Translates between Trinity's request and response types and one wire format.

    Adapters do no I/O: the client sends what `body` and `headers` give to `chat_path`
    and hands the decoded JSON answer to `parse`.
    """

    name: str
    chat_path: str
    # (remaining, reset) header pairs that say when a spent rate limit frees up again.
    rate_limit_headers: tuple[tuple[str, str], ...] = (
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
        ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    )

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

        `retry-after-ms`, then `Retry-After` (seconds or an HTTP date), then the reset header
        of a rate limit whose remaining count is 0 (`rate_limit_headers`: a duration such as
        "1s" or "6m0.5s", seconds, or an RFC 3339 time). `now` is the Unix time dates are
        measured from (default: the current time).
        """
        found = {k.lower(): v.strip() for k, v in headers.items()}
        wall = time.time() if now is None else now
        millis = _number(found.get("retry-after-ms"))
        if millis is not None:
            return millis / 1000
        seconds = parse_retry_after(found.get("retry-after"), datetime.fromtimestamp(wall, tz=UTC))
        if seconds is not None:
            return seconds
        waits = [
            parse_reset(found.get(reset, ""), wall)
            for remaining, reset in self.rate_limit_headers
            if _number(found.get(remaining)) == 0
        ]
        known = [w for w in waits if w is not None]
        return max(known) if known else None

    def malformed(self, what: str) -> MalformedResponseError:
        return MalformedResponseError(f"{self.name} response {what}")

    @staticmethod
    def messages(request: LLMRequest) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in request.messages]

    @staticmethod
    def token_count(value: Any) -> int:
        return value if isinstance(value, int) and value >= 0 else 0


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
