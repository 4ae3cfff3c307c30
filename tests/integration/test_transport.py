"""ShardedTransport against real HTTP servers on loopback.

`EchoServer` runs in the test's own event loop, so it counts its connections exactly;
FakeLLMServer (tests/fakellm.py) breaks connections and answers too late on demand.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream
from hypothesis import given
from hypothesis import strategies as st

from tests.fakellm import FakeLLMServer, FaultKind
from tests.redisserver import free_port
from trinity.llm import transport as transport_module
from trinity.llm.client import AsyncLLMClient
from trinity.llm.settings import LLMSettings
from trinity.llm.transport import (
    SHARD_SIZE,
    ShardedTransport,
    pooled_transport,
    proxied_by_environment,
)

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "Hello"}]}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


# ---------------------------------------------------------------------- the echo server


@dataclass
class EchoServer:
    """HTTP/1.1 with keep-alive: each request answered with its own body, `delay` s later.

    Counts the connections open at once and remembers the client port of each one.
    """

    delay: float
    port: int = 0
    open: int = 0
    most_open: int = 0
    client_ports: set[int] = field(default_factory=set)
    arrived: anyio.Event = field(default_factory=anyio.Event)  # set by the first request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def serve(self, stream: SocketStream) -> None:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self.client_ports.add(stream.extra(SocketAttribute.remote_port))
        try:
            async with stream:
                await self._answer_each(stream)
        except (anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client hung up
        finally:
            self.open -= 1

    async def _answer_each(self, stream: SocketStream) -> None:
        received = BufferedByteReceiveStream(stream)
        while True:
            head = await received.receive_until(b"\r\n\r\n", 65536)
            length = re.search(rb"content-length:\s*(\d+)", head, re.IGNORECASE)
            body = await received.receive_exactly(int(length.group(1))) if length else b""
            self.arrived.set()
            await anyio.sleep(self.delay)
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


@asynccontextmanager
async def serving(delay: float = 0.0) -> AsyncIterator[EchoServer]:
    server = EchoServer(delay)
    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tasks,
    ):
        server.port = listener.extra(SocketAttribute.local_port)
        tasks.start_soon(listener.serve, server.serve)
        yield server
        tasks.cancel_scope.cancel()


async def post_all(client: httpx.AsyncClient, url: str, count: int) -> dict[int, str]:
    """`count` requests at once, each with its number as the body; the answers by number."""
    answers: dict[int, str] = {}

    async def post(number: int) -> None:
        answers[number] = (await client.post(url, content=str(number))).text

    async with anyio.create_task_group() as tasks:
        for number in range(count):
            tasks.start_soon(post, number)
    return answers


async def send(transport: httpx.AsyncBaseTransport, url: str) -> None:
    """One request straight through `transport`, its answer read and closed."""
    response = await transport.handle_async_request(httpx.Request("POST", url, content=b"x"))
    try:
        assert await response.aread() == b"x"
    finally:
        await response.aclose()


# ---------------------------------------------------------------------- watched shards


class WatchedShard(httpx.AsyncBaseTransport):
    """httpx's transport, noting what it sent, the connections it used, and its closing."""

    def __init__(self, limits: httpx.Limits) -> None:
        assert limits.max_connections is not None
        self.cap = limits.max_connections
        # Plain HTTP only: skip loading certificates, which takes ~50 ms a shard.
        self.inner = httpx.AsyncHTTPTransport(verify=False, limits=limits)
        self.requests = 0
        self.client_ports: set[int] = set()
        self.closed = False
        self.fail_to_close = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        response = await self.inner.handle_async_request(request)
        stream = response.extensions["network_stream"]
        self.client_ports.add(stream.get_extra_info("client_addr")[1])
        return response

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()
        if self.fail_to_close:
            raise OSError("this shard fails to close")


class Shards:
    """A `make_shard` for ShardedTransport that keeps every shard it made."""

    def __init__(self) -> None:
        self.made: list[WatchedShard] = []

    def __call__(self, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        self.made.append(WatchedShard(limits))
        return self.made[-1]


@pytest.fixture
def shards() -> Shards:
    return Shards()


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def never_used(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    return httpx.MockTransport(lambda request: httpx.Response(500))


# ---------------------------------------------------------------------- the shards


@given(connections=st.integers(1, 300), shard_size=st.integers(1, 60))
def test_the_shards_hold_exactly_the_connections_in_even_shares(
    connections: int, shard_size: int
) -> None:
    capacities = ShardedTransport(
        connections, shard_size=shard_size, make_shard=never_used
    ).capacities
    assert sum(capacities) == connections
    assert max(capacities) <= shard_size
    assert max(capacities) - min(capacities) <= 1
    assert len(capacities) == -(-connections // shard_size)


@pytest.mark.parametrize(("connections", "shard_size"), [(0, 5), (5, 0)])
def test_no_connections_or_empty_shards_are_refused(connections: int, shard_size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ShardedTransport(connections, shard_size=shard_size, make_shard=never_used)


def test_pooled_transport_is_sharded() -> None:
    transport = pooled_transport(50)
    assert isinstance(transport, ShardedTransport)
    assert sum(transport.capacities) == 50
    assert max(transport.capacities) == SHARD_SIZE


# ---------------------------------------------------------------------- under load


@pytest.mark.anyio
async def test_concurrent_requests_get_their_own_answers() -> None:
    transport = ShardedTransport(10)
    async with serving(delay=0.02) as server, httpx.AsyncClient(transport=transport) as client:
        answers = await post_all(client, server.url, 40)
        assert transport.busy == (0, 0)
    assert answers == {number: str(number) for number in range(40)}


@pytest.mark.anyio
@pytest.mark.parametrize(("connections", "shard_size"), [(1, 5), (3, 5), (11, 5), (12, 4)])
async def test_the_server_never_sees_more_connections_than_allowed(
    connections: int, shard_size: int
) -> None:
    transport = ShardedTransport(connections, shard_size=shard_size)
    async with serving(delay=0.02) as server, httpx.AsyncClient(transport=transport) as client:
        await post_all(client, server.url, 3 * connections)
    assert server.most_open == connections  # all of them used, and never one more


@pytest.mark.anyio
async def test_requests_spread_over_the_shards_each_within_its_cap(shards: Shards) -> None:
    transport = ShardedTransport(11, shard_size=5, make_shard=shards)
    async with serving(delay=0.02) as server, httpx.AsyncClient(transport=transport) as client:
        await post_all(client, server.url, 33)
    assert [shard.cap for shard in shards.made] == [4, 4, 3]
    for shard in shards.made:
        assert shard.requests >= shard.cap
        assert len(shard.client_ports) == shard.cap
    assert set().union(*(shard.client_ports for shard in shards.made)) == server.client_ports


@pytest.mark.anyio
async def test_a_streamed_answer_holds_its_shard_until_it_is_closed() -> None:
    transport = ShardedTransport(2, shard_size=1)
    async with serving() as server, httpx.AsyncClient(transport=transport) as client:
        async with client.stream("POST", server.url, content=b"first") as first:
            assert transport.busy == (1, 0)
            second = await client.post(server.url, content=b"second")  # the other shard
            assert second.text == "second"
            assert transport.busy == (1, 0)
            assert await first.aread() == b"first"
        assert transport.busy == (0, 0)


@pytest.mark.anyio
async def test_a_request_waiting_for_a_held_connection_times_out_as_in_httpx() -> None:
    transport = ShardedTransport(1)
    timeout = httpx.Timeout(5.0, pool=0.01)
    async with (
        serving() as server,
        httpx.AsyncClient(transport=transport, timeout=timeout) as client,
        client.stream("POST", server.url, content=b"held"),
    ):
        with pytest.raises(httpx.PoolTimeout):
            await client.post(server.url, content=b"waits")
        assert transport.busy == (1,)
    assert transport.busy == (0,)


# ---------------------------------------------------------------------- failures


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["drop", "reset"])
async def test_a_broken_connection_raises_transport_error_and_frees_its_shard(
    fake_llm: FakeLLMServer, kind: FaultKind
) -> None:
    fake_llm.fail_next(3, kind=kind)
    transport = ShardedTransport(4, shard_size=2)
    async with httpx.AsyncClient(transport=transport, base_url=fake_llm.url) as client:
        for _ in range(3):
            with pytest.raises(httpx.TransportError):
                await client.post("/v1/chat/completions", json=CHAT)
            assert transport.busy == (0, 0)
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert transport.busy == (0, 0)


@pytest.mark.anyio
async def test_an_error_status_is_an_answer_like_any_other(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_next(1, 503)
    transport = ShardedTransport(2)
    async with httpx.AsyncClient(transport=transport, base_url=fake_llm.url) as client:
        reply = await client.post("/v1/chat/completions", json=CHAT)
    assert reply.status_code == 503
    assert reply.json()
    assert transport.busy == (0,)


@pytest.mark.anyio
async def test_a_refused_connection_raises_connect_error() -> None:
    transport = ShardedTransport(2)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{free_port()}/", content=b"anyone?")
        assert transport.busy == (0,)


@pytest.mark.anyio
async def test_an_answer_slower_than_the_timeout_raises_timeout_exception(
    fake_llm: FakeLLMServer,
) -> None:
    fake_llm.latency = 5.0  # closing the server at the end of the test cuts it short
    transport = ShardedTransport(2)
    async with httpx.AsyncClient(transport=transport, timeout=0.05) as client:
        with pytest.raises(httpx.TimeoutException):
            await client.post(f"{fake_llm.url}/v1/chat/completions", json=CHAT)
        assert transport.busy == (0,)


@pytest.mark.anyio
async def test_cancelled_requests_free_their_shard() -> None:
    transport = ShardedTransport(1)
    async with serving(delay=60) as server, httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tasks:
            for body in (b"sent", b"queued", b"queued too"):
                tasks.start_soon(functools.partial(client.post, server.url, content=body))
            await server.arrived.wait()
            assert transport.busy == (3,)
            tasks.cancel_scope.cancel()
        assert transport.busy == (0,)


# ---------------------------------------------------------------------- closing


@pytest.mark.anyio
async def test_closing_closes_every_shard_and_its_connections(shards: Shards) -> None:
    async with serving(delay=0.02) as server:
        async with (
            ShardedTransport(6, shard_size=2, make_shard=shards) as transport,
            anyio.create_task_group() as tasks,
        ):
            for _ in range(12):
                tasks.start_soon(send, transport, server.url)
        assert server.most_open == 6
        assert [shard.closed for shard in shards.made] == [True, True, True]
        with anyio.fail_after(5):  # only so that a regression cannot hang the suite
            while server.open:
                await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_one_shard_failing_to_close_leaves_none_open(shards: Shards) -> None:
    transport = ShardedTransport(4, shard_size=1, make_shard=shards)
    shards.made[1].fail_to_close = True
    with pytest.raises(OSError, match="fails to close"):
        await transport.aclose()
    assert [shard.closed for shard in shards.made] == [True, True, True, True]


# ---------------------------------------------------------------------- in the LLM client


def pooled_by(shards: Shards, calls: list[int]) -> Callable[[int], httpx.AsyncBaseTransport]:
    def pooled(connections: int) -> httpx.AsyncBaseTransport:
        calls.append(connections)
        return ShardedTransport(connections, make_shard=shards)

    return pooled


@pytest.mark.anyio
@pytest.mark.usefixtures("no_proxy_variables")
async def test_the_llm_client_sends_through_a_sharded_transport(
    fake_llm: FakeLLMServer, shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(transport_module, "pooled_transport", pooled_by(shards, calls))

    async def not_through_the_client(*args: object, **kwargs: object) -> httpx.Response:
        raise AssertionError("a build's requests go straight into its own transport")

    monkeypatch.setattr(httpx.AsyncClient, "send", not_through_the_client)
    settings = LLMSettings(
        provider="openai", api_url=fake_llm.url, model="fake-model", concurrency=12
    )
    async with AsyncLLMClient(settings) as client:
        answer = await client.generate_content_async("Hello")
    assert answer.startswith("Generated answer")
    assert calls == [12]
    assert [shard.requests for shard in shards.made] == [1, 0, 0]
    assert [shard.closed for shard in shards.made] == [True, True, True]


@pytest.mark.anyio
@pytest.mark.usefixtures("no_proxy_variables")
async def test_behind_a_proxy_the_llm_client_keeps_httpx_own_transport(
    fake_llm: FakeLLMServer, shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(transport_module, "pooled_transport", pooled_by(shards, calls))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # not for http://
    settings = LLMSettings(provider="openai", api_url=fake_llm.url, model="fake-model")
    async with AsyncLLMClient(settings) as client:
        answer = await client.generate_content_async("Hello")
    assert answer.startswith("Generated answer")
    assert calls == []


@pytest.mark.usefixtures("no_proxy_variables")
@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_variable_counts_as_a_proxy(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    assert not proxied_by_environment()
    monkeypatch.setenv(variable, "http://127.0.0.1:3128")
    assert proxied_by_environment()


@pytest.mark.usefixtures("no_proxy_variables")
def test_no_proxy_alone_is_not_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert not proxied_by_environment()
