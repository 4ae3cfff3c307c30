"""What both batch APIs share: their types, and one HTTP exchange with the endpoint.

Everything a batch API answers is untrusted: each exchange has a total deadline
(`llm.timeout`) and a size bound, ids are checked before they go into a path, and a URL
the server names (Anthropic's `results_url`) is followed only on the configured endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx

from trinity.errors import LLMConnectionError, LLMTimeoutError, MalformedResponseError
from trinity.llm.http import (
    NOT_JSON,
    chat_url,
    decode_json,
    error_for_status,
    read_bounded,
    redact,
)
from trinity.llm.providers import ProviderAdapter, get_adapter
from trinity.llm.settings import Endpoint
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.urls import shown_url

# The providers with a batch API; blocks for the others (local, ollama) are asked live.
BATCH_PROVIDERS = ("openai", "anthropic")

# A batch or file id as the providers make them; anything else never goes into a path.
_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")

# The most bytes one results file may have, whatever the batch's size: it is read whole.
MAX_RESULTS_BYTES = 1024 * 1024 * 1024

# How much of a server's error message is kept.
_DETAIL_LIMIT = 300


def valid_id(value: Any) -> str | None:
    """`value` when it is an id that may go into a URL path; None for anything else."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


@dataclass(frozen=True)
class BatchCounts:
    """A batch's requests: how many in all, answered, and failed (errored, expired...)."""

    total: int = 0
    done: int = 0
    failed: int = 0


@dataclass(frozen=True)
class BatchStatus:
    """One look at a batch: its provider's word for its state, whether it has ended (no
    more answers will come), its counts, and where its results are (paths on the endpoint)."""

    batch_id: str
    state: str
    ended: bool
    counts: BatchCounts
    results: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one request of a batch: its answer, or why it has none."""

    custom_id: str
    response: LLMResponse | None = None
    error: str | None = None


class BatchAPI(Protocol):
    """A provider's batch API, on one endpoint with one key."""

    provider: str
    adapter: ProviderAdapter

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        """Send a batch of (custom id, request); its id."""

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(self, status: BatchStatus, expected: int) -> list[BatchResult]:
        """The results of an ended batch of `expected` requests (bounded accordingly)."""


class BatchHTTP:
    """Requests to one endpoint's batch API through the build's httpx client."""

    def __init__(
        self,
        endpoint: Endpoint,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        max_bytes: int,
        api_key: str | None,
    ) -> None:
        self.endpoint = endpoint
        self.http = http
        self.adapter = get_adapter(endpoint.provider)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._key = api_key
        self.shown = shown_url(endpoint.api_url)

    def url(self, path: str) -> str:
        return chat_url(self.endpoint.api_url, path)

    def same_endpoint(self, url: str) -> str | None:
        """The path (and query) of `url` when it is on the configured endpoint (scheme,
        host and port); None for a URL anywhere else, which is never fetched."""
        try:
            target, base = httpx.URL(url), httpx.URL(self.url("/v1/"))
        except (httpx.InvalidURL, TypeError):
            return None
        same = (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
        if not same or not target.path.startswith("/"):
            return None
        query = target.query.decode("ascii", "replace")
        return target.path + (f"?{query}" if query else "")

    async def json(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Mapping[str, Any]:
        """A JSON object from the endpoint; MalformedResponseError for anything else."""
        raw = await self.send(method, path, body=body, files=files, data=data)
        payload = decode_json(raw)
        if payload is NOT_JSON or not isinstance(payload, Mapping):
            raise MalformedResponseError(
                f"{self.shown} answered {method} {path} with a body that is not a JSON object"
            )
        return payload

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        data: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> bytes:
        """The body of the endpoint's answer (at most `limit` bytes, else max_bytes),
        within the deadline; an HTTP error raised as trinity.errors says it."""
        headers = {"Accept-Encoding": "identity", **self.adapter.headers(self._key)}
        request = self.http.build_request(
            method, self.url(path), headers=headers, json=body, files=files, data=data
        )
        with anyio.move_on_after(self.timeout):
            return await self._exchange(request, limit or self.max_bytes)
        raise LLMTimeoutError(
            f"no answer from {self.shown} to {method} {path} within {self.timeout:g} s "
            "(llm.timeout bounds each request to a batch API)"
        )

    async def _exchange(self, request: httpx.Request, limit: int) -> bytes:
        try:
            reply = await self.http.send(request, stream=True)
            try:
                raw = await read_bounded(reply, limit, self.shown)
            finally:
                await reply.aclose()
        except httpx.TimeoutException:
            raise LLMTimeoutError(f"no answer from {self.shown} in time") from None
        except httpx.TransportError as exc:
            reason = redact(str(exc) or type(exc).__name__, self._key)
            raise LLMConnectionError(f"cannot reach {self.shown}: {reason}") from None
        if reply.status_code >= 300:
            payload = decode_json(raw)
            detail = self.adapter.error_detail(payload) or reply.reason_phrase
            raise error_for_status(
                reply.status_code,
                f"{self.shown} answered {request.method} {request.url.path} with HTTP "
                f"{reply.status_code}: {redact(detail, self._key)[:_DETAIL_LIMIT]}",
                retry_after=self.adapter.retry_after(reply.headers),
            )
        return raw

    async def lines(self, path: str, expected: int) -> list[Any]:
        """A JSONL file of results: each line decoded (NOT_JSON for a malformed one). Its
        bound is one answer's bound for each request expected, and one more (at most
        MAX_RESULTS_BYTES)."""
        limit = min(self.max_bytes * (expected + 1), MAX_RESULTS_BYTES)
        raw = await self.send("GET", path, limit=limit)
        return [decode_json(line) for line in raw.splitlines() if line.strip()]

    def answer(self, custom_id: str, payload: Any) -> BatchResult:
        """One answer through the adapter's own `parse`, as a live call's would be."""
        try:
            response = self.adapter.parse(payload)
        except MalformedResponseError as exc:
            return BatchResult(custom_id, error=str(exc))
        if not response.text.strip():
            return BatchResult(custom_id, error="the model returned an empty answer")
        return BatchResult(custom_id, response=response)
