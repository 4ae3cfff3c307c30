"""AsyncLLMClient with the ollama and openai adapters, against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.errors import (
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
    ModelCrashed,
)
from trinity.llm.client import AsyncLLMClient
from trinity.llm.http import chat_url as _chat_url
from trinity.llm.providers import ADAPTERS, OllamaAdapter, OpenAIAdapter, get_adapter
from trinity.llm.retry import RetryPolicy
from trinity.llm.settings import LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse, Usage

pytestmark = pytest.mark.anyio

SECRET = "sk-live-SECRET-0123456789"

Handler = Callable[[httpx.Request], httpx.Response]


def ollama_answer(text: str = "Hello.", **extra: Any) -> dict[str, Any]:
    return {
        "model": "llama3",
        "message": {"role": "assistant", "content": text},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 11,
        "eval_count": 7,
        **extra,
    }


def openai_answer(text: str = "Hello.", finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "model": "gpt-x",
        "choices": [
            {"message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": {"prompt_tokens": 13, "completion_tokens": 5},
    }


def anthropic_answer(text: str = "Hello.") -> dict[str, Any]:
    return {
        "model": "claude-x",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 13, "output_tokens": 5},
    }


ANSWERS: dict[str, Callable[..., dict[str, Any]]] = {
    "ollama": ollama_answer,
    "openai": openai_answer,
}


class Server:
    """A MockTransport that records every request and answers from a handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def answering(payload: Any, status: int = 200) -> Server:
    return Server(lambda request: httpx.Response(status, json=payload))


def settings_for(provider: str, **changes: Any) -> LLMSettings:
    defaults: dict[str, Any] = {
        "provider": provider,
        "api_url": "http://llm.test:1234",
        "model": "m",
        "temperature": 0.5,
        "max_tokens": 64,
    }
    return LLMSettings(**{**defaults, **changes})


async def complete(
    server: Server,
    settings: LLMSettings,
    request: LLMRequest | None = None,
    *,
    cache: CacheManager | None = None,
    validate: Callable[[LLMResponse], None] | None = None,
) -> LLMResponse:
    async with AsyncLLMClient(settings, cache=cache, transport=server.transport) as client:
        return await client.complete(request or client.request("Say hi."), validate=validate)


async def failure(server: Server, settings: LLMSettings, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as caught:
        await complete(server, settings, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------- request shapes


async def test_ollama_body_and_url() -> None:
    server = answering(ollama_answer())
    settings = settings_for("ollama", options={"num_ctx": 4096}, top_p=0.9)
    async with AsyncLLMClient(settings, transport=server.transport) as client:
        await client.complete(client.request("Write.", system="Be kind."))
    (request,) = server.requests
    assert request.method == "POST"
    assert str(request.url) == "http://llm.test:1234/api/chat"
    assert server.bodies[0] == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Write."},
        ],
        "stream": False,
        "options": {"temperature": 0.5, "num_predict": 64, "top_p": 0.9, "num_ctx": 4096},
    }
    assert "authorization" not in request.headers


@pytest.mark.parametrize(
    ("schema", "expected"),
    [(None, "json"), ({"type": "object"}, {"type": "object"})],
)
async def test_ollama_json_format(schema: dict[str, Any] | None, expected: Any) -> None:
    server = answering(ollama_answer("{}"))
    async with AsyncLLMClient(settings_for("ollama"), transport=server.transport) as client:
        await client.complete(client.request("p", response_format="json", json_schema=schema))
    assert server.bodies[0]["format"] == expected


async def test_ollama_text_has_no_format() -> None:
    server = answering(ollama_answer())
    await complete(server, settings_for("ollama"))
    assert "format" not in server.bodies[0]


async def test_openai_body_url_and_auth() -> None:
    server = answering(openai_answer())
    settings = settings_for("openai", api_key=SECRET, options={"seed": 7})
    async with AsyncLLMClient(settings, transport=server.transport) as client:
        await client.complete(client.request("Write."))
    (request,) = server.requests
    assert str(request.url) == "http://llm.test:1234/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert server.bodies[0] == {
        "model": "m",
        "messages": [{"role": "user", "content": "Write."}],
        "temperature": 0.5,
        "max_tokens": 64,
        "seed": 7,
    }


@pytest.mark.parametrize("provider", ["anthropic", "ollama", "openai"])
@pytest.mark.parametrize("through_client", [False, True], ids=["direct", "through-client"])
async def test_the_request_sent_is_the_one_httpx_would_build(
    provider: str, through_client: bool
) -> None:
    # The backend builds its requests itself (and sends them straight into the build's
    # transport): what reaches the server must be what `AsyncClient.stream(..., json=)`
    # sent, header for header and byte for byte.
    server = answering({**ANSWERS, "anthropic": anthropic_answer}[provider]())
    settings = settings_for(provider, api_key=SECRET, options={"seed": 7, "note": "café"})
    async with httpx.AsyncClient(transport=server.transport) as http:
        injected: dict[str, Any] = (
            {"http_client": http} if through_client else {"transport": server.transport}
        )
        async with AsyncLLMClient(settings, **injected) as client:
            request = client.request("Write about ünïcode.", system="Be brief.")
            await client.complete(request)
        adapter = get_adapter(provider)
        expected = http.build_request(
            "POST",
            _chat_url(settings.api_url, adapter.chat_path),
            json=adapter.body(request),
            headers={**adapter.headers(SECRET), "Accept-Encoding": "identity"},
        )
    (sent,) = server.requests
    assert sent.method == expected.method
    assert sent.url == expected.url
    assert sorted(sent.headers.multi_items()) == sorted(expected.headers.multi_items())
    assert sent.content == expected.content
    # The timeouts of the client it went through: the one passed in, or Trinity's own.
    timeout = http.timeout if through_client else httpx.Timeout(settings.timeout)
    assert sent.extensions["timeout"] == timeout.as_dict()


@pytest.mark.parametrize(
    ("format_", "schema", "expected"),
    [
        ("json", None, {"type": "json_object"}),
        (
            "json",
            {"type": "object"},
            {"type": "json_schema", "json_schema": {"name": "block", "schema": {"type": "object"}}},
        ),
        ("text", None, None),
    ],
)
async def test_openai_response_format(
    format_: str, schema: dict[str, Any] | None, expected: Any
) -> None:
    server = answering(openai_answer("{}"))
    async with AsyncLLMClient(settings_for("openai"), transport=server.transport) as client:
        await client.complete(client.request("p", response_format=format_, json_schema=schema))  # type: ignore[arg-type]
    assert server.bodies[0].get("response_format") == expected


@pytest.mark.parametrize("provider", ["ollama", "openai"])
@pytest.mark.parametrize("api_key", [None, ""])
async def test_no_authorization_header_without_a_key(provider: str, api_key: str | None) -> None:
    server = answering(ANSWERS[provider]())
    await complete(server, settings_for(provider, api_key=api_key))
    assert "authorization" not in server.requests[0].headers


async def test_ollama_sends_the_key_when_one_is_set() -> None:
    server = answering(ollama_answer())
    await complete(server, settings_for("ollama", api_key=SECRET))
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("api_url", "chat_path", "expected"),
    [
        ("http://h:11434", "/api/chat", "http://h:11434/api/chat"),
        ("http://h:11434/", "/api/chat", "http://h:11434/api/chat"),
        ("http://h:11434/api", "/api/chat", "http://h:11434/api/chat"),
        ("https://api.openai.com", "/v1/chat/completions", "https://api.openai.com/v1/chat/completions"),
        ("http://h:1234/v1", "/v1/chat/completions", "http://h:1234/v1/chat/completions"),
        ("http://h:1234/v1/", "/v1/chat/completions", "http://h:1234/v1/chat/completions"),
        ("http://h/proxy/v1", "/v1/chat/completions", "http://h/proxy/v1/chat/completions"),
        ("http://h/myv1", "/v1/chat/completions", "http://h/myv1/v1/chat/completions"),
    ],
)  # fmt: skip
def test_chat_url_joining(api_url: str, chat_path: str, expected: str) -> None:
    assert _chat_url(api_url, chat_path) == expected


async def test_openai_base_url_ending_in_v1_is_not_doubled() -> None:
    server = answering(openai_answer())
    await complete(server, settings_for("openai", api_url="http://llm.test/v1"))
    assert str(server.requests[0].url) == "http://llm.test/v1/chat/completions"


# ---------------------------------------------------------------------------- responses


async def test_ollama_response_parsing() -> None:
    response = await complete(answering(ollama_answer("Hi there.")), settings_for("ollama"))
    assert response.text == "Hi there."
    assert response.model == "llama3"
    assert response.usage == Usage(input_tokens=11, output_tokens=7)
    assert response.finish_reason == "stop"
    assert response.cache_tier is None
    assert not response.truncated


async def test_openai_response_parsing_and_truncation() -> None:
    server = answering(openai_answer("Cut", finish_reason="length"))
    response = await complete(server, settings_for("openai"))
    assert (response.text, response.model) == ("Cut", "gpt-x")
    assert response.usage == Usage(input_tokens=13, output_tokens=5)
    assert response.finish_reason == "length"
    assert response.truncated


@pytest.mark.parametrize(
    "usage",
    [
        pytest.param({"prompt_eval_count": -1, "eval_count": "many"}, id="garbage"),
        pytest.param({"prompt_eval_count": None, "eval_count": 2.5}, id="wrong-types"),
    ],
)
async def test_bad_usage_counts_read_as_zero(usage: dict[str, Any]) -> None:
    response = await complete(answering(ollama_answer(**usage)), settings_for("ollama"))
    assert response.usage == Usage(0, 0)


async def test_openai_without_usage() -> None:
    payload = openai_answer()
    del payload["usage"]
    response = await complete(answering(payload), settings_for("openai"))
    assert response.usage == Usage(0, 0)


async def test_stats_count_calls_and_tokens() -> None:
    server = answering(ollama_answer())
    async with AsyncLLMClient(settings_for("ollama"), transport=server.transport) as client:
        await client.complete(client.request("a"))
        await client.complete(client.request("b"))
    assert (client.stats.calls, client.stats.input_tokens, client.stats.output_tokens) == (
        2,
        22,
        14,
    )


async def test_latency_is_measured_with_the_injected_clock() -> None:
    now = [10.0]

    def slow_answer(request: httpx.Request) -> httpx.Response:
        now[0] += 2.5  # the server takes 2.5 s by the injected clock
        return httpx.Response(200, json=ollama_answer())

    server = Server(slow_answer)
    client = AsyncLLMClient(
        settings_for("ollama"), transport=server.transport, timer=lambda: now[0]
    )
    async with client:
        response = await client.complete(client.request("p"))
    assert response.latency == 2.5


async def test_generate_content_async_returns_text_and_passes_parameters() -> None:
    server = answering(ollama_answer("Text."))
    async with AsyncLLMClient(settings_for("ollama"), transport=server.transport) as client:
        text = await client.generate_content_async("p", system="s", temperature=0.1, max_tokens=9)
    assert text == "Text."
    assert server.bodies[0]["options"]["temperature"] == 0.1
    assert server.bodies[0]["options"]["num_predict"] == 9
    assert server.bodies[0]["messages"][0] == {"role": "system", "content": "s"}


async def test_client_must_be_entered() -> None:
    client = AsyncLLMClient(settings_for("ollama"), transport=answering(ollama_answer()).transport)
    with pytest.raises(RuntimeError, match="async with"):
        await client.complete(client.request("p"))


async def test_injected_http_client_is_not_closed() -> None:
    server = answering(ollama_answer())
    async with httpx.AsyncClient(transport=server.transport) as http:
        async with AsyncLLMClient(settings_for("ollama"), http_client=http) as client:
            await client.complete(client.request("p"))
        assert not http.is_closed
        async with AsyncLLMClient(settings_for("ollama"), http_client=http) as client:
            await client.complete(client.request("q"))
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("provider", ["ollama", "openai"])
@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *((status, True) for status in (408, 429, 500, 502, 503)),
        *((status, False) for status in (400, 401, 404)),
    ],
)
async def test_http_errors(provider: str, status: int, retryable: bool) -> None:
    server = answering({"error": {"message": "model 'm' not found"}}, status=status)
    # Short waits: a 429 is retried until llm.retry.rate_limit_wait is spent (300 s).
    quick = RetryPolicy(base_delay=0.01, max_delay=0.02, rate_limit_wait=0.1)
    error = await failure(server, settings_for(provider, retry=quick))
    assert isinstance(error, LLMStatusError)
    assert error.status == status
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)
    assert "model 'm' not found" in str(error)


async def test_http_error_with_plain_string_error_and_non_json_bodies() -> None:
    error = await failure(answering({"error": "boom"}, status=500), settings_for("ollama"))
    assert "boom" in str(error)
    server = Server(lambda request: httpx.Response(503, text="<html>down</html>"))
    error = await failure(server, settings_for("ollama"))
    assert isinstance(error, LLMStatusError)
    assert "Service Unavailable" in str(error)


async def test_long_error_detail_is_cut() -> None:
    server = answering({"error": "x" * 5000}, status=500)
    error = await failure(server, settings_for("openai"))
    assert len(str(error)) < 500


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_non_json_body_is_malformed(provider: str) -> None:
    server = Server(lambda request: httpx.Response(200, text="not json at all"))
    error = await failure(server, settings_for(provider))
    assert type(error) is MalformedResponseError
    assert error.retryable is False


@pytest.mark.parametrize(
    ("provider", "payload", "what"),
    [
        ("ollama", {"model": "x"}, "message.content"),
        ("ollama", {"message": {"content": 5}}, "message.content"),
        ("ollama", {"message": "hi"}, "message.content"),
        ("ollama", ["a list"], "not a JSON object"),
        ("openai", {"choices": []}, "no choices"),
        ("openai", {"choices": ["x"]}, "no choices"),
        ("openai", {"choices": [{"message": {}}]}, "choices[0].message.content"),
        ("openai", {"choices": [{"message": {"content": None}}]}, "choices[0].message.content"),
        ("openai", "a string", "not a JSON object"),
    ],
)
async def test_missing_content_is_malformed(provider: str, payload: Any, what: str) -> None:
    error = await failure(answering(payload), settings_for(provider))
    assert type(error) is MalformedResponseError
    assert what in str(error)


@pytest.mark.parametrize(
    ("exception", "kind"),
    [
        (httpx.ConnectError("connection refused"), LLMConnectionError),
        (httpx.RemoteProtocolError("peer closed"), LLMConnectionError),
        (httpx.ReadError(""), LLMConnectionError),
        (httpx.ConnectTimeout("slow"), LLMTimeoutError),
        (httpx.ReadTimeout("slow"), LLMTimeoutError),
    ],
)
async def test_transport_failures(exception: Exception, kind: type[LLMError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    error = await failure(Server(handler), settings_for("ollama"))
    assert type(error) is kind
    assert error.retryable is True
    assert "http://llm.test:1234/api/chat" in str(error)
    assert error.__cause__ is None  # `from None`: httpx's chain may show the request


@pytest.mark.parametrize("provider", ["ollama", "openai"])
@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(
            lambda r: httpx.Response(
                401, json={"error": {"message": f"bad key {r.headers['authorization']}"}}
            ),
            id="status-echoes-header",
        ),
        pytest.param(
            lambda r: httpx.Response(500, json={"error": f"key={SECRET}"}), id="status-echoes-key"
        ),
        pytest.param(lambda r: httpx.Response(200, text=f"oops {SECRET}"), id="malformed"),
        pytest.param(lambda r: httpx.Response(200, json={"echo": SECRET}), id="no-content"),
    ],
)
async def test_error_messages_never_contain_the_api_key(provider: str, handler: Handler) -> None:
    error = await failure(Server(handler), settings_for(provider, api_key=SECRET))
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


async def test_connection_error_does_not_contain_the_api_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused {request.headers['authorization']}")

    error = await failure(Server(handler), settings_for("openai", api_key=SECRET))
    assert SECRET not in str(error)


# ---------------------------------------------------------------------------- caching


def memory_cache() -> CacheManager:
    return CacheManager([MemoryTier()])


@pytest.mark.parametrize("provider", ["ollama", "openai"])
async def test_second_identical_request_is_served_from_the_cache(provider: str) -> None:
    server = answering(ANSWERS[provider]("Cached answer."))
    cache = memory_cache()
    settings = settings_for(provider)
    async with AsyncLLMClient(settings, cache=cache, transport=server.transport) as client:
        first = await client.complete(client.request("p"))
        second = await client.complete(client.request("p"))
    assert len(server.requests) == 1
    assert first.cache_tier is None
    assert second.cache_tier == "memory"
    assert (second.text, second.model, second.usage) == (first.text, first.model, first.usage)
    assert second.finish_reason == first.finish_reason
    assert (client.stats.calls, client.stats.cache_hits) == (1, 1)


async def test_a_new_client_with_the_same_cache_makes_no_calls() -> None:
    cache = memory_cache()
    await complete(answering(ollama_answer()), settings_for("ollama"), cache=cache)
    second = Server(lambda request: pytest.fail("the transport must not be called"))
    response = await complete(second, settings_for("ollama"), cache=cache)
    assert second.requests == []
    assert response.cache_tier == "memory"


async def test_different_prompts_are_not_confused() -> None:
    def shout(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        return httpx.Response(200, json=ollama_answer(prompt.upper()))

    server = Server(shout)
    cache = memory_cache()
    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        assert (await c.complete(c.request("a"))).text == "A"
        assert (await c.complete(c.request("b"))).text == "B"
        assert (await c.complete(c.request("a"))).text == "A"
    assert len(server.requests) == 2


@pytest.mark.parametrize("text", ["", "   \n\t"])
async def test_an_empty_answer_is_an_error_and_not_cached(text: str) -> None:
    server = answering(ollama_answer(text))
    cache = memory_cache()
    settings = settings_for("ollama")
    async with AsyncLLMClient(settings, cache=cache, transport=server.transport) as client:
        request = client.request("p")
        for _ in range(2):
            with pytest.raises(MalformedResponseError, match="empty answer"):
                await client.complete(request)
        assert cache.get(client.key(request)) is None
    assert len(server.requests) == 2


async def test_a_failing_validator_keeps_the_answer_out_of_the_cache() -> None:
    server = answering(ollama_answer("not what we wanted"))
    cache = memory_cache()
    seen: list[str] = []

    def validate(response: LLMResponse) -> None:
        seen.append(response.text)
        raise MalformedResponseError("wrong shape")

    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        request = c.request("p")
        with pytest.raises(MalformedResponseError, match="wrong shape"):
            await c.complete(request, validate=validate)
        assert cache.get(c.key(request)) is None
        with pytest.raises(MalformedResponseError):
            await c.complete(request, validate=validate)
    assert len(server.requests) == 2
    assert seen == ["not what we wanted"] * 2


async def test_a_passing_validator_lets_the_answer_be_cached() -> None:
    server = answering(ollama_answer("good"))
    cache = memory_cache()
    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        request = c.request("p")
        await c.complete(request, validate=lambda response: None)
        assert cache.get(c.key(request))["text"] == "good"  # type: ignore[index]


async def test_a_cached_answer_that_fails_validation_is_fetched_again() -> None:
    cache = memory_cache()
    server = answering(ollama_answer("fresh"))

    def validate(response: LLMResponse) -> None:
        if response.text == "stale":
            raise MalformedResponseError("stale")

    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        request = c.request("p")
        cache.set(c.key(request), {"text": "stale", "model": "m"})
        response = await c.complete(request, validate=validate)
        assert response.text == "fresh"
        assert response.cache_tier is None
        assert cache.get(c.key(request))["text"] == "fresh"  # type: ignore[index]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("just a string", id="string"),
        pytest.param({"model": "m"}, id="no-text"),
        pytest.param({"text": 5}, id="text-not-str"),
        pytest.param({"text": "t", "input_tokens": "many"}, id="bad-tokens"),
        pytest.param([1, 2], id="list"),
    ],
)
async def test_a_foreign_cache_entry_is_ignored(entry: Any) -> None:
    cache = memory_cache()
    server = answering(ollama_answer("real"))
    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        request = c.request("p")
        cache.set(c.key(request), entry)
        assert await c.cached(request) is None
        assert (await c.complete(request)).text == "real"
    assert len(server.requests) == 1


async def test_errors_are_not_cached() -> None:
    responses = iter(
        [httpx.Response(400, json={"error": "bad"}), httpx.Response(200, json=ollama_answer("ok"))]
    )
    server = Server(lambda request: next(responses))
    cache = memory_cache()
    async with AsyncLLMClient(settings_for("ollama"), cache=cache, transport=server.transport) as c:
        with pytest.raises(LLMStatusError):
            await c.complete(c.request("p"))
        assert (await c.complete(c.request("p"))).text == "ok"
        assert (await c.complete(c.request("p"))).cache_tier == "memory"
    assert len(server.requests) == 2


async def test_a_refresh_asks_again_once_and_replaces_the_cached_answer() -> None:
    cache = memory_cache()
    await complete(answering(ollama_answer("old")), settings_for("ollama"), cache=cache)
    server = answering(ollama_answer("new"))
    refreshing = AsyncLLMClient(
        settings_for("ollama"), cache=cache, cache_refresh=True, transport=server.transport
    )
    async with refreshing as client:
        request = client.request("Say hi.")
        assert await client.cached(request) is None, "a refresh serves no earlier answer"
        first = await client.complete(request)
        # Asked twice in one refresh: the answer it just fetched is served.
        second = await client.complete(request)
    assert len(server.requests) == 1
    assert (first.text, first.cache_tier) == ("new", None)
    assert (second.text, second.cache_tier) == ("new", "memory")
    after = Server(lambda request: pytest.fail("the refreshed answer must be cached"))
    assert (await complete(after, settings_for("ollama"), cache=cache)).text == "new"


async def test_a_refresh_still_has_the_old_answer_to_serve_stale() -> None:
    cache = memory_cache()
    await complete(answering(ollama_answer("old")), settings_for("ollama"), cache=cache)
    down = answering({"error": "down"}, status=400)
    async with AsyncLLMClient(
        settings_for("ollama"), cache=cache, cache_refresh=True, transport=down.transport
    ) as client:
        request = client.request("Say hi.")
        with pytest.raises(LLMStatusError):
            await client.complete(request)
        stale = await client.stale(request)
    assert stale is not None
    assert (stale.text, stale.stale) == ("old", True)


async def test_without_a_cache_every_request_is_sent() -> None:
    server = answering(ollama_answer())
    async with AsyncLLMClient(settings_for("ollama"), transport=server.transport) as client:
        assert await client.cached(client.request("p")) is None
        await client.complete(client.request("p"))
        await client.complete(client.request("p"))
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------- adapters


def test_adapter_registry() -> None:
    assert set(ADAPTERS) == {"ollama", "openai", "anthropic"}
    assert isinstance(get_adapter("ollama"), OllamaAdapter)
    assert isinstance(get_adapter("openai"), OpenAIAdapter)


@pytest.mark.parametrize("adapter", [OllamaAdapter(), OpenAIAdapter()])
@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"error": "plain"}, "plain"),
        ({"error": {"message": "nested"}}, "nested"),
        ({"error": {"code": 3}}, None),
        ({"detail": "x"}, None),
        ("text", None),
    ],
)
def test_error_detail(adapter: Any, payload: Any, expected: str | None) -> None:
    assert adapter.error_detail(payload) == expected


async def test_a_key_resting_longer_than_the_cap_fails_over_without_waiting() -> None:
    """After a 429 asking for 120 s (cap 60), later requests go to the fallback at once."""
    from types import MappingProxyType

    from trinity.llm.settings import Endpoint

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "primary.test":
            return httpx.Response(429, json={"error": "slow down"}, headers={"Retry-After": "120"})
        return httpx.Response(200, json=openai_answer("from backup"))

    server = Server(handle)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    settings = settings_for(
        "ollama",
        api_url="http://primary.test",
        fallbacks=MappingProxyType({"m": ("openai:backup",)}),
        endpoints=MappingProxyType({"openai": Endpoint("openai", "http://backup.test")}),
        retry=RetryPolicy(retry_after_cap=60),
    )
    async with AsyncLLMClient(settings, transport=server.transport, sleep=sleep) as client:
        first = await client.complete(client.request("one"))
        second = await client.complete(client.request("two"))
    assert (first.text, second.text) == ("from backup", "from backup")
    hosts = [r.url.host for r in server.requests]
    assert hosts == ["primary.test", "backup.test", "backup.test"]  # the resting key is spared
    assert slept == []


class CrashedModel:
    """An embedded model whose worker is dead."""

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        raise ModelCrashed("the embedded model crashed (SIGSEGV) in llama.cpp", returncode=-11)

    async def aclose(self) -> None:
        pass


def local_with_a_chat_fallback() -> tuple[Server, LLMSettings]:
    """The embedded model, with an OpenAI-style server behind it as its fallback."""
    from types import MappingProxyType

    from trinity.llm.settings import Endpoint

    server = Server(lambda request: httpx.Response(200, json=openai_answer("from backup")))
    settings = settings_for(
        "local",
        api_url="",
        model="gemma3-270m",
        fallbacks=MappingProxyType({"gemma3-270m": ("openai:backup",)}),
        endpoints=MappingProxyType({"openai": Endpoint("openai", "http://backup.test")}),
    )
    return server, settings


async def test_a_crashed_embedded_model_fails_over_to_the_fallback() -> None:
    server, settings = local_with_a_chat_fallback()
    async with AsyncLLMClient(
        settings, backend=CrashedModel(), transport=server.transport
    ) as client:
        answer = await client.complete(client.request("one"))
    assert answer.text == "from backup"
    assert client.stats.fallbacks == 1


async def test_a_request_framed_for_a_base_model_does_not_fail_over_to_a_chat_model() -> None:
    """It carries no chat messages: the crash is the block's reason, not a chat 400."""
    from trinity.llm.types import CompletionFrame

    server, settings = local_with_a_chat_fallback()
    async with AsyncLLMClient(
        settings, backend=CrashedModel(), transport=server.transport
    ) as client:
        framed = client.request("one", frame=CompletionFrame("Doc\n\nLead", lead="Lead"))
        with pytest.raises(ModelCrashed):
            await client.complete(framed)
    assert server.requests == []
