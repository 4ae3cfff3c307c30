"""HTTPBackend: one provider endpoint spoken to over the build's single httpx client."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import anyio
import httpx

from trinity.errors import (
    AuthenticationError,
    BadRequestError,
    LLMConnectionError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
)
from trinity.llm.headers import rate_headers
from trinity.llm.providers import ProviderAdapter, get_adapter
from trinity.llm.settings import Endpoint, LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.urls import mask_urls, shown_url


class HTTPBackend:
    """Translates requests for one endpoint through its provider's adapter.

    The httpx client is shared by every endpoint of a build (one connection pool);
    this backend does not own it. Errors come back as the exception tree in
    trinity.errors, with the server's Retry-After read, and never contain the API key
    or the credentials a URL may carry.

    A server's answer is untrusted: the whole exchange has a deadline (`timeout`, from
    connect to last byte) and the body a size bound (`max_bytes`), read as a stream and
    refused as soon as it passes the bound.

    Each request is built here, from parts made once: the URL parsed, the client's
    headers and timeouts merged, the body encoded as httpx encodes `json=`. `transport`,
    when given, is the one `http` sends through (the build's own pool): requests then go
    straight into it, skipping what `AsyncClient.send` does for every request and a build
    never uses (auth flows, event hooks, redirects, storing cookies): a tenth of a
    millisecond of CPU a request. Without it (a client passed in, or httpx's own
    transport behind a proxy) they go through `http.send`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        http: httpx.AsyncClient,
        timeout: float,
        max_bytes: int = LLMSettings.max_response_bytes,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        path: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.adapter: ProviderAdapter = get_adapter(endpoint.provider)
        # `path`: another of the provider's endpoints than chat (embeddings, for instance).
        self.url = chat_url(endpoint.api_url, path or self.adapter.chat_path)
        self.shown = shown_url(self.url)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._target = httpx.URL(self.url)
        self._headers = common_headers(http, self._target)
        self._timeouts = http.timeout.as_dict()
        self._send = _sender(http, transport)

    async def aclose(self) -> None:
        """Nothing to close: the shared httpx client is closed by its owner."""

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        # httpx's timeout applies to each read, so a server sending a byte every few
        # seconds would never trip it: the deadline bounds the whole exchange. Leaving
        # the scope closes the response, which gives its connection back to the pool.
        with anyio.move_on_after(self.timeout):
            payload, headers = await self._exchange(self.adapter.body(request), api_key)
            return _with_headers(self.adapter.parse(payload), headers)
        raise self._late()

    async def post(self, body: dict[str, Any], api_key: str | None = None) -> Any:
        """The decoded JSON answer to `body` posted to this endpoint's URL, under the same
        deadline, bound and error mapping as a chat request (for other endpoints than chat)."""
        with anyio.move_on_after(self.timeout):
            payload, _ = await self._exchange(body, api_key)
            return payload
        raise self._late()

    async def _exchange(
        self, sent: dict[str, Any], api_key: str | None
    ) -> tuple[Any, httpx.Headers]:
        outgoing = self._request(sent, api_key)
        try:
            reply = await self._send(outgoing)
            try:
                self._refuse_redirect(reply)
                body = await self._read_bounded(reply)
            finally:
                await reply.aclose()  # gives its connection back to the pool
        except httpx.TimeoutException:
            raise self._late() from None
        except httpx.TransportError as exc:
            raise LLMConnectionError(
                f"cannot reach {self.shown}: {redact(_reason(exc), api_key)} (is the server "
                "running? llm.api_url in settings or LLM_API_URL chooses it)"
            ) from None
        payload = decode_json(body)
        if reply.status_code >= 400:
            detail = self.adapter.error_detail(payload) or reply.reason_phrase
            raise error_for_status(
                reply.status_code,
                f"{self.shown} answered HTTP {reply.status_code}: "
                f"{redact(detail, api_key)[:_DETAIL_LIMIT]}",
                # Retry-After, or the reset time of a rate limit the headers say is spent.
                retry_after=self.adapter.retry_after(reply.headers),
            )
        if payload is NOT_JSON:
            raise MalformedResponseError(f"{self.shown} answered with a body that is not JSON")
        return payload, reply.headers

    def _request(self, body: dict[str, Any], api_key: str | None) -> httpx.Request:
        """The chat request: `body` encoded as httpx encodes `json=`, with this endpoint's
        headers and the adapter's (the API key's) for this request."""
        content = _json_bytes(body)
        headers = self._headers.copy()
        headers["Content-Length"] = str(len(content))
        headers.update(self.adapter.headers(api_key))
        outgoing = httpx.Request(
            "POST",
            self._target,
            headers=headers,
            # A stream, not `content=`: httpx would build the headers a second time.
            stream=httpx.ByteStream(content),
            extensions={"timeout": self._timeouts},
        )
        outgoing.read()  # as `content=` leaves it: its body at hand for hooks and mocks
        return outgoing

    def _late(self) -> LLMTimeoutError:
        return LLMTimeoutError(
            f"no answer from {self.shown} within {self.timeout:g} s "
            "(llm.timeout bounds the whole request, connect to last byte)"
        )

    def _refuse_redirect(self, reply: httpx.Response) -> None:
        """A redirect is a wrong llm.api_url: a POST is not sent on to another place."""
        if not reply.is_redirect:
            return
        target = shown_url(str(reply.url.join(reply.headers["location"])))
        raise error_for_status(
            reply.status_code,
            f"the server redirected to {target} ({reply.status_code}); Trinity does not "
            "follow redirects for requests to a model: set llm.api_url to where it points",
        )

    async def _read_bounded(self, reply: httpx.Response) -> bytes:
        return await read_bounded(reply, self.max_bytes, self.shown)


async def read_bounded(reply: httpx.Response, max_bytes: int, shown: str) -> bytes:
    """A reply's body, refused (MalformedResponseError) once it passes `max_bytes` or if it
    is encoded; `shown` names the server in the message."""
    encoding = reply.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise MalformedResponseError(
            f"{shown} answered with a {encoding}-encoded body although Trinity "
            "asked for none (Accept-Encoding: identity)"
        )
    declared = reply.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(shown, max_bytes)
    body = bytearray()
    # Only identity gets this far, so httpx's decoders (which inflate a whole chunk at
    # once) never run: these are the bytes on the wire.
    async for chunk in reply.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(shown, max_bytes)
    return bytes(body)


def _too_large(shown: str, max_bytes: int) -> MalformedResponseError:
    return MalformedResponseError(
        f"{shown} answered with more than {max_bytes:,} bytes; the answer was "
        "refused (llm.max_response_bytes sets the limit)"
    )


Send = Callable[[httpx.Request], Awaitable[httpx.Response]]


def _sender(http: httpx.AsyncClient, transport: httpx.AsyncBaseTransport | None) -> Send:
    """How a request leaves: into `transport` itself when there is one (the response
    streamed, as `http.send(..., stream=True)` leaves it), else through `http.send`."""
    if transport is None:
        return functools.partial(http.send, stream=True)
    handle = transport.handle_async_request

    async def send(request: httpx.Request) -> httpx.Response:
        response = await handle(request)
        response.request = request  # what `AsyncClient.send` sets: `reply.url` reads it
        return response

    return send


def common_headers(http: httpx.AsyncClient, url: httpx.URL) -> httpx.Headers:
    """The headers every request to `url` carries, in the order httpx would send them:
    Host, the client's own (User-Agent, Accept, ...), and the body's type. Accept-Encoding
    is identity: a bound on compressed bytes is no bound on what they inflate to."""
    headers = httpx.Headers({"Host": url.netloc.decode("ascii")})
    headers.update(http.headers)
    headers["Accept-Encoding"] = "identity"
    headers["Content-Type"] = "application/json"
    return headers


def _json_bytes(body: dict[str, Any]) -> bytes:
    # httpx's own encoding of `json=` (httpx._content.encode_json): NaN and infinity are
    # refused, not sent as JSON no server could parse.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def error_for_status(status: int, message: str, retry_after: float | None = None) -> LLMStatusError:
    """The LLMStatusError subclass that fits an HTTP error `status`."""
    kind: type[LLMStatusError]
    if status == 429:
        kind = RateLimitedError
    elif status in (401, 403):
        kind = AuthenticationError
    elif status in (408, 409):
        kind = LLMStatusError  # 4xx, but the same request may well succeed later
    elif 400 <= status < 500:
        kind = BadRequestError
    elif 500 <= status < 600:
        kind = ServerError
    else:
        kind = LLMStatusError
    return kind(message, status=status, retry_after=retry_after)


NOT_JSON: Any = object()


def _with_headers(response: LLMResponse, headers: httpx.Headers) -> LLMResponse:
    """`response` with the provider's rate-limit accounting from `headers`, if it sent any."""
    kept = rate_headers(headers)
    return replace(response, headers=MappingProxyType(kept)) if kept else response


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a few kilobytes of nested brackets are enough to raise it.
        return NOT_JSON


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


# How much of a server's error message is kept; cut after the key is masked, so a key
# straddling the cut cannot leave its first characters behind.
_DETAIL_LIMIT = 300


def redact(text: str, api_key: str | None) -> str:
    """`text` from a server or httpx with the API key blanked out (servers echo it), and
    the credentials of any URL in it."""
    return mask_urls(text.replace(api_key, "***") if api_key else text)


def chat_url(api_url: str, chat_path: str) -> str:
    """Join the server root and the chat path; a root already ending in '/v1' is accepted."""
    base = api_url.rstrip("/")
    first_segment = "/" + chat_path.strip("/").split("/", 1)[0]
    if base.endswith(first_segment):
        base = base[: -len(first_segment)]
    return base + chat_path
