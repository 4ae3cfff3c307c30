"""HTTPBackend against a hostile server on loopback: deadlines, size bounds, redirects.

Each request goes through the build's real transport (ShardedTransport) to FakeLLMServer,
which trickles, never ends, inflates or redirects on demand. After every refusal the
request must have left its shard (its response closed), so a hostile answer costs no
connection for the rest of a build.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from tests.fakellm import FakeLLMServer
from tests.redisserver import free_port
from trinity.errors import (
    LLMConnectionError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
)
from trinity.llm.http import HTTPBackend
from trinity.llm.settings import Endpoint, LLMSettings
from trinity.llm.transport import ShardedTransport
from trinity.llm.types import LLMRequest

REQUEST = LLMRequest.from_prompt("Hello there", model="fake-model", temperature=0, max_tokens=20)
# Far longer than any answer here should take: only a hang would reach it.
HANG_BOUND = 30


@pytest.fixture(params=[True, False], ids=["direct", "through-client"])
def direct(request: pytest.FixtureRequest) -> bool:
    """Whether the backend sends straight into the transport (as a build does) or through
    the httpx client's `send` (a client passed in): every refusal holds on both paths."""
    sending: bool = request.param
    return sending


@asynccontextmanager
async def backend(
    url: str,
    direct: bool,
    *,
    timeout: float = 10,
    max_bytes: int = LLMSettings.max_response_bytes,
) -> AsyncIterator[tuple[HTTPBackend, ShardedTransport]]:
    transport = ShardedTransport(4, shard_size=2)
    async with httpx.AsyncClient(transport=transport, timeout=timeout) as http:
        yield (
            HTTPBackend(
                Endpoint("ollama", url),
                http,
                timeout,
                max_bytes,
                transport=transport if direct else None,
            ),
            transport,
        )


async def refusal(http: HTTPBackend) -> BaseException:
    with anyio.fail_after(HANG_BOUND), pytest.raises(Exception) as caught:
        await http.send(REQUEST)
    return caught.value


@pytest.mark.anyio
async def test_a_trickling_answer_fails_at_the_deadline(
    fake_llm: FakeLLMServer, direct: bool
) -> None:
    # A byte every 0.2 s: httpx's per-read timeout of 1 s never fires.
    fake_llm.fail_next(1, kind="trickle", hang=0.2)
    async with backend(fake_llm.url, direct, timeout=1) as (http, transport):
        error = await refusal(http)
        assert isinstance(error, LLMTimeoutError)
        assert error.retryable
        assert f"no answer from {fake_llm.url}/api/chat within 1 s" in str(error)
        assert "llm.timeout" in str(error)
        assert transport.busy == (0, 0)
        # The connection it held is not poisoned: the next request is answered.
        assert (await http.send(REQUEST)).text.startswith("Generated answer")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["huge", "endless"])
async def test_an_answer_over_the_size_bound_is_refused(
    fake_llm: FakeLLMServer, kind: str, direct: bool
) -> None:
    fake_llm.fail_next(1, kind=kind)  # type: ignore[arg-type]
    async with backend(fake_llm.url, direct, max_bytes=100_000) as (http, transport):
        error = await refusal(http)
        assert isinstance(error, MalformedResponseError)
        assert not error.retryable
        assert "more than 100,000 bytes" in str(error)
        assert "llm.max_response_bytes" in str(error)
        assert transport.busy == (0, 0)


@pytest.mark.anyio
async def test_an_answer_within_the_bound_is_accepted(
    fake_llm: FakeLLMServer, direct: bool
) -> None:
    async with backend(fake_llm.url, direct, max_bytes=2_000) as (http, _):
        assert (await http.send(REQUEST)).text.startswith("Generated answer")


@pytest.mark.anyio
async def test_a_compressed_answer_is_refused_unread(fake_llm: FakeLLMServer, direct: bool) -> None:
    fake_llm.fail_next(1, kind="gzip_bomb")
    async with backend(fake_llm.url, direct) as (http, transport):
        error = await refusal(http)
        assert isinstance(error, MalformedResponseError)
        assert "gzip-encoded body" in str(error)
        assert transport.busy == (0, 0)
    # Asked for identity: an encoding is the server's choice against the request.
    assert fake_llm.chat_requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 307, 308])
async def test_a_redirect_is_reported_as_one_and_not_followed(
    fake_llm: FakeLLMServer, status: int, direct: bool
) -> None:
    fake_llm.fail_next(1, status, headers={"Location": "/elsewhere/api/chat?token=abc"})
    async with backend(fake_llm.url, direct) as (http, _):
        error = await refusal(http)
    assert isinstance(error, LLMStatusError)
    assert not error.retryable
    assert str(error) == (
        f"the server redirected to {fake_llm.url}/elsewhere/api/chat?token=*** ({status}); "
        "Trinity does not follow redirects for requests to a model: set llm.api_url to "
        "where it points"
    )
    assert fake_llm.chat_count == 1


@pytest.mark.anyio
async def test_credentials_in_the_url_are_not_in_connection_errors(direct: bool) -> None:
    url = f"http://user:secret@127.0.0.1:{free_port()}/v1?api_key=hidden"
    async with backend(url, direct) as (http, _):
        error = await refusal(http)
    assert isinstance(error, LLMConnectionError)
    assert "secret" not in str(error)
    assert "hidden" not in str(error)
    assert "http://***@127.0.0.1:" in str(error)
