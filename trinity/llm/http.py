"""HTTPBackend: one provider endpoint spoken to over the build's single httpx client."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

import httpx

from trinity.config import Endpoint
from trinity.errors import (
    LLMConnectionError,
    LLMTimeoutError,
    MalformedResponseError,
    error_for_status,
)
from trinity.llm.providers import ProviderAdapter, get_adapter
from trinity.llm.types import LLMRequest, LLMResponse


class HTTPBackend:
    """Translates requests for one endpoint through its provider's adapter.

    The httpx client is shared by every endpoint of a build (one connection pool);
    this backend does not own it. Errors come back as the exception tree in
    trinity.errors, with the server's Retry-After read, and never contain the API key.
    """

    def __init__(self, endpoint: Endpoint, http: httpx.AsyncClient, timeout: float) -> None:
        self.endpoint = endpoint
        self.adapter: ProviderAdapter = get_adapter(endpoint.provider)
        self.url = chat_url(endpoint.api_url, self.adapter.chat_path)
        self.timeout = timeout
        self._http = http

    async def aclose(self) -> None:
        """Nothing to close: the shared httpx client is closed by its owner."""

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        try:
            reply = await self._http.post(
                self.url,
                json=self.adapter.body(request),
                headers=self.adapter.headers(api_key),
            )
        except httpx.TimeoutException:
            raise LLMTimeoutError(f"no answer from {self.url} within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise LLMConnectionError(
                f"cannot reach {self.url}: {_redact(_reason(exc), api_key)} (is the server "
                "running? llm.api_url in settings or LLM_API_URL chooses it)"
            ) from None
        payload = _decode(reply)
        if reply.status_code >= 400:
            detail = self.adapter.error_detail(payload) or reply.reason_phrase
            raise error_for_status(
                reply.status_code,
                f"{self.url} answered HTTP {reply.status_code}: "
                f"{_redact(detail, api_key)[:_DETAIL_LIMIT]}",
                # Retry-After, or the reset time of a rate limit the headers say is spent.
                retry_after=self.adapter.retry_after(reply.headers),
            )
        if payload is _NOT_JSON:
            raise MalformedResponseError(f"{self.url} answered with a body that is not JSON")
        response = self.adapter.parse(payload)
        return _with_headers(response, reply.headers)


_NOT_JSON: Any = object()
# Headers worth keeping from an answer: the provider's rate-limit accounting.
_RATE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")


def _with_headers(response: LLMResponse, headers: httpx.Headers) -> LLMResponse:
    kept = {k: v for k, v in headers.items() if k.lower().startswith(_RATE_HEADER_PREFIXES)}
    return replace(response, headers=MappingProxyType(kept)) if kept else response


def _decode(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


# How much of a server's error message is kept; cut after the key is masked, so a key
# straddling the cut cannot leave its first characters behind.
_DETAIL_LIMIT = 300


def _redact(text: str, api_key: str | None) -> str:
    """`text` from a server or httpx with the API key blanked out (servers echo it)."""
    return text.replace(api_key, "***") if api_key else text


def chat_url(api_url: str, chat_path: str) -> str:
    """Join the server root and the chat path; a root already ending in '/v1' is accepted."""
    base = api_url.rstrip("/")
    first_segment = "/" + chat_path.strip("/").split("/", 1)[0]
    if base.endswith(first_segment):
        base = base[: -len(first_segment)]
    return base + chat_path
