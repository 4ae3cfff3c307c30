"""The build's connection pool: httpx's own transport, split into small shards.

httpcore's connection pool (1.0.x) does work in proportion to its connections times the
requests waiting for one every time a request arrives or a connection comes free
(encode/httpcore#1035). With a build's 50 connections that bookkeeping, not the network,
is where the time goes: against a fast server a build took many times the server's own
time, nearly all of it CPU. As that work grows with the size of a pool, several small
pools do far less of it than one large one: `ShardedTransport` keeps httpx's transport
whole (TLS, HTTP/1.1 keep-alive, timeouts, httpx's exception types) and only gives each
of its instances fewer connections.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Self

import httpx

# The most connections one shard holds. The client's CPU time (bare httpx at concurrency
# 50, as in benchmarks/fanout.py) fell steeply from one pool of 50 to shards of 5 or
# fewer, and rose again with larger shards as the pools' bookkeeping grew back.
# Below 5 nothing more was gained, and 5 divides the usual concurrencies evenly.
SHARD_SIZE = 5

ShardFactory = Callable[[httpx.Limits], httpx.AsyncBaseTransport]


def _http_transports() -> ShardFactory:
    """httpx's transports, sharing one TLS context: making one is slow, and each would."""
    ssl_context = httpx.create_ssl_context()

    def make(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits)

    return make


@dataclass
class _Shard:
    """One pool, and how many requests it holds: sent, and their answers not yet closed."""

    transport: httpx.AsyncBaseTransport
    connections: int
    busy: int = 0


class ShardedTransport(httpx.AsyncBaseTransport):
    """At most `connections` connections in pools of at most `shard_size` each.

    A request goes to the shard holding the fewest requests, and counts against it for as
    long as it holds one of the shard's connections: until its response is closed (httpx
    closes it once the body is read, or when the caller leaves `client.stream(...)`). A
    request that fails or is cancelled stops counting at once. Each shard is an
    `httpx.AsyncHTTPTransport` unless `make_shard` builds something else from a shard's
    limits (tests use that to watch each shard).
    """

    def __init__(
        self,
        connections: int,
        *,
        shard_size: int = SHARD_SIZE,
        make_shard: ShardFactory | None = None,
    ) -> None:
        if connections < 1 or shard_size < 1:
            raise ValueError("connections and shard_size must be at least 1")
        make_shard = make_shard or _http_transports()
        self._shards = [
            _Shard(make_shard(httpx.Limits(max_connections=n, max_keepalive_connections=n)), n)
            for n in _split(connections, shard_size)
        ]

    @property
    def capacities(self) -> tuple[int, ...]:
        """The connections each shard may open."""
        return tuple(shard.connections for shard in self._shards)

    @property
    def busy(self) -> tuple[int, ...]:
        """The requests each shard holds now."""
        return tuple(shard.busy for shard in self._shards)

    async def __aenter__(self) -> Self:
        for shard in self._shards:
            await shard.transport.__aenter__()
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Linear in the shards, which are few; ties go to the first, so a quiet build
        # keeps reusing the same warm connections.
        shard = min(self._shards, key=_load)
        shard.busy += 1
        try:
            response = await shard.transport.handle_async_request(request)
            return _released_on_close(response, shard)
        except BaseException:
            shard.busy -= 1
            raise

    async def aclose(self) -> None:
        """Close every shard, each one even when closing another fails."""
        async with contextlib.AsyncExitStack() as shards:
            for shard in self._shards:
                shards.push_async_callback(shard.transport.aclose)


def _load(shard: _Shard) -> int:
    return shard.busy


def _split(connections: int, shard_size: int) -> list[int]:
    """`connections` in as few shards of at most `shard_size` as will do, sizes even."""
    count = -(-connections // shard_size)
    size, larger = divmod(connections, count)
    return [size + 1] * larger + [size] * (count - larger)


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that takes its request off its shard's count when closed."""

    def __init__(self, stream: httpx.AsyncByteStream, shard: _Shard) -> None:
        self._stream = stream
        self._shard: _Shard | None = shard

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        shard, self._shard = self._shard, None
        try:
            await self._stream.aclose()
        finally:
            if shard is not None:
                shard.busy -= 1


def _released_on_close(response: httpx.Response, shard: _Shard) -> httpx.Response:
    assert isinstance(response.stream, httpx.AsyncByteStream)  # as httpx.AsyncClient does
    response.stream = _ReleasingStream(response.stream, shard)
    return response


def pooled_transport(connections: int) -> httpx.AsyncBaseTransport:
    """The transport for the build's httpx client, with at most `connections` connections."""
    return ShardedTransport(connections)


def proxied_by_environment() -> bool:
    """True when proxy variables (HTTPS_PROXY and the like) name a proxy.

    httpx reads them only for the transport it builds itself, so a build behind a proxy
    keeps httpx's own transport rather than lose the proxy.
    """
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


__all__ = ["SHARD_SIZE", "ShardedTransport", "pooled_transport", "proxied_by_environment"]
