"""AsyncLLMClient: one pooled HTTP client, a concurrency limit, and the answer cache.

A request goes: cache lookup -> concurrency limiter -> provider adapter over HTTP ->
validation -> cache write. Only answers that pass validation are cached, and they are
cached the moment they arrive, so a later failure never pays for them twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol

import anyio
import httpx

from trinity.cache.keys import cache_key
from trinity.cache.manager import CacheManager
from trinity.config import LLMSettings
from trinity.errors import (
    ConfigError,
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
)
from trinity.llm.providers import ProviderAdapter, get_adapter
from trinity.llm.types import CompletionFrame, LLMRequest, LLMResponse, ResponseFormat, Usage
from trinity.logs import get_logger

log = get_logger(__name__)

Validator = Callable[[LLMResponse], None]


@dataclass
class ClientStats:
    """What this client has done so far."""

    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Backend(Protocol):
    """Where requests are answered: a server over HTTP, or a model in this process."""

    async def send(self, request: LLMRequest) -> LLMResponse: ...
    async def aclose(self) -> None: ...


class AsyncLLMClient:
    """Answers requests through one provider; use it as an async context manager.

    `http_client` or `transport` may be injected (tests use `httpx.MockTransport`), and so
    may a whole `backend`; the client closes only what it made itself.
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: CacheManager | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings or LLMSettings()
        self.cache = cache
        self.stats = ClientStats()
        self.clock = clock
        self._limiter = anyio.CapacityLimiter(self.settings.concurrency)
        self._http_client = http_client
        self._transport = transport
        self._backend = backend
        self._owns_backend = backend is None
        self.style = _prompt_style(self.settings)

    @property
    def completes_documents(self) -> bool:
        """True when requests are answered by continuing a document (a base model)."""
        return self.style == "completion"

    async def __aenter__(self) -> AsyncLLMClient:
        if self._backend is None:
            self._backend = self._make_backend()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_backend and self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    def _make_backend(self) -> Backend:
        if self.settings.provider == "local":
            from trinity.llm.providers.local import LocalBackend

            return LocalBackend(self.settings)
        return HTTPBackend(self.settings, http_client=self._http_client, transport=self._transport)

    def request(
        self,
        prompt: str,
        *,
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        response_format: ResponseFormat = "text",
        json_schema: dict[str, Any] | None = None,
        frame: CompletionFrame | None = None,
    ) -> LLMRequest:
        """A request for `prompt`, every parameter not given taken from settings.

        `frame` is kept only for providers that may continue documents, so that headings
        and leads, which chat models never see, do not split their cache entries.
        """
        s = self.settings
        options = dict(s.options)
        if s.provider == "local":
            from trinity.llm.providers.local import DEFAULT_OPTIONS

            options = {**DEFAULT_OPTIONS, **options}
        request = LLMRequest.from_prompt(
            prompt,
            model=s.model,
            system=system,
            temperature=s.temperature if temperature is None else temperature,
            max_tokens=s.max_tokens if max_tokens is None else max_tokens,
            top_p=s.top_p if top_p is None else top_p,
            response_format=response_format,
            json_schema=json_schema,
            options=options,
            frame=frame if self.completes_documents else None,
        )
        if self.completes_documents and frame is not None:
            # A base model sees only the document: the chat form must not split its cache.
            request = replace(request, messages=())
        return request

    def key(self, request: LLMRequest) -> str:
        return cache_key(self.settings.provider, self.settings.api_url, request)

    async def cached(self, request: LLMRequest) -> LLMResponse | None:
        """The cached answer to `request`, without calling the model."""
        if self.cache is None:
            return None
        found = await self.cache.lookup_async(self.key(request))
        if found is None:
            return None
        value, tier = found
        response = _from_entry(value)
        return None if response is None else replace(response, cache_tier=tier)

    async def complete(
        self, request: LLMRequest, *, validate: Validator | None = None
    ) -> LLMResponse:
        """The answer to `request`, from the cache or the model.

        `validate` may raise MalformedResponseError; such an answer is not cached.
        """
        hit = await self.cached(request)
        if hit is not None and _passes(hit, validate):
            self.stats.cache_hits += 1
            return hit
        if self._backend is None:
            raise RuntimeError("use AsyncLLMClient as 'async with AsyncLLMClient(...) as client'")
        async with self._limiter:
            started = self.clock()
            response = await self._backend.send(request)
            response = replace(response, latency=self.clock() - started)
        self.stats.calls += 1
        self.stats.input_tokens += response.usage.input_tokens
        self.stats.output_tokens += response.usage.output_tokens
        if not response.text.strip():
            raise MalformedResponseError("the model returned an empty answer")
        if validate is not None:
            validate(response)
        if self.cache is not None:
            await self.cache.set_async(self.key(request), _to_entry(response))
        return response

    async def generate_content_async(
        self,
        prompt: str,
        *,
        system: str | None = None,
        correlation_id: str | None = None,
        **params: Any,
    ) -> str:
        """The text of the model's answer to `prompt` (the simple way in for scripts)."""
        response = await self.complete(self.request(prompt, system=system, **params))
        return response.text


def _prompt_style(settings: LLMSettings) -> str:
    if settings.provider != "local":
        return "chat"
    from trinity.llm.providers.local import resolve_style

    try:
        return resolve_style(settings)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model file: {exc}", key="llm.model") from None


class HTTPBackend:
    """One pooled httpx.AsyncClient speaking one provider's wire format."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.adapter: ProviderAdapter = get_adapter(settings.provider)
        self._url = _chat_url(settings.api_url, self.adapter.chat_path)
        self._owns_http = http_client is None
        limit = settings.concurrency
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            transport=transport,
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def send(self, request: LLMRequest) -> LLMResponse:
        try:
            reply = await self._http.post(
                self._url,
                json=self.adapter.body(request),
                headers=self.adapter.headers(self.settings.api_key),
            )
        except httpx.TimeoutException:
            raise LLMTimeoutError(
                f"no answer from {self._url} within {self.settings.timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise LLMConnectionError(
                f"cannot reach {self._url}: {self._redact(_reason(exc))} (is the server running? "
                "llm.api_url in settings or LLM_API_URL chooses it)"
            ) from None
        payload = _decode(reply)
        if reply.status_code >= 400:
            detail = self._redact(self.adapter.error_detail(payload) or reply.reason_phrase)
            raise LLMStatusError(
                f"{self._url} answered HTTP {reply.status_code}: {detail}",
                status=reply.status_code,
            )
        if payload is _NOT_JSON:
            raise MalformedResponseError(f"{self._url} answered with a body that is not JSON")
        return self.adapter.parse(payload)

    def _redact(self, text: str) -> str:
        """`text` from the server or httpx, with the API key blanked out (servers echo it)."""
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


_NOT_JSON: Any = object()


def _decode(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _chat_url(api_url: str, chat_path: str) -> str:
    """Join the server root and the chat path; a root already ending in '/v1' is accepted."""
    base = api_url.rstrip("/")
    first_segment = "/" + chat_path.strip("/").split("/", 1)[0]
    if base.endswith(first_segment):
        base = base[: -len(first_segment)]
    return base + chat_path


def _passes(response: LLMResponse, validate: Validator | None) -> bool:
    if validate is None:
        return True
    try:
        validate(response)
    except LLMError:
        return False
    return True


def _to_entry(response: LLMResponse) -> dict[str, Any]:
    return {
        "text": response.text,
        "model": response.model,
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "finish_reason": response.finish_reason,
        "created": time.time(),
    }


def _from_entry(value: Any) -> LLMResponse | None:
    """A cached entry back as a response; None for anything not in our shape."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    try:
        return LLMResponse(
            text=value["text"],
            model=str(value.get("model", "")),
            usage=Usage(int(value.get("input_tokens", 0)), int(value.get("output_tokens", 0))),
            finish_reason=value.get("finish_reason"),
        )
    except (TypeError, ValueError):
        return None


__all__ = ["AsyncLLMClient", "Backend", "ClientStats", "HTTPBackend"]
