"""The routes of one client: for each endpoint it reaches, the backend that answers there,
its circuit breaker, its API keys and how many requests it takes at once.

A route is made when the first request needs its endpoint, so a build answered from the
cache never starts the embedded model's worker nor imports httpx. Every server endpoint
shares the build's one httpx client, made with the first of them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import anyio

from trinity.llm.adaptive import AdaptiveConcurrency
from trinity.llm.breaker import CircuitBreaker
from trinity.llm.ratelimit import KeyPool, PoolSharing
from trinity.llm.routing import Router
from trinity.llm.settings import Endpoint, LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse

if TYPE_CHECKING:
    import httpx

    from trinity.llm.budgets import DailyBudgets
    from trinity.llm.http import HTTPBackend
    from trinity.llm.sharedlimits import SharedLimits


class Backend(Protocol):
    """Where requests are answered: a server over HTTP, or the embedded model's worker."""

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse: ...
    async def aclose(self) -> None: ...


@dataclass
class Route:
    """Everything that belongs to one endpoint: how to reach it, its breaker, its keys,
    and how many requests it takes at once (fewer while it answers 429)."""

    endpoint: Endpoint
    backend: Backend
    breaker: CircuitBreaker
    pool: KeyPool
    pacing: AdaptiveConcurrency


class Routes:
    """The routes of one client, by provider; closes what it made.

    `http_client` or `transport` may be injected (tests use `httpx.MockTransport`), and so
    may a `backend` for the main provider's endpoint; neither is closed here. Every
    breaker made here tells `on_breaker_change(endpoint, old, new)` of its changes. Every
    key pool counts in `shared` limits (None: this process's own) and daily `budgets`.
    """

    def __init__(
        self,
        settings: LLMSettings,
        router: Router,
        *,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        on_breaker_change: Callable[[str, str, str], None] | None = None,
        shared: SharedLimits | None = None,
        budgets: DailyBudgets | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.budgets = budgets
        self.router = router
        self.clock = clock
        self.sleep = sleep
        self.on_breaker_change = on_breaker_change
        self._http = http_client
        self._owns_http = http_client is None
        self._transport = transport
        # The transport of the client made here, which backends send into directly; None
        # for a client passed in, or behind a proxy (then httpx picks the transport).
        self._direct: httpx.AsyncBaseTransport | None = None
        self._main_backend = backend
        self._routes: dict[str, Route] = {}

    def get(self, provider: str) -> Route:
        """The route to a provider's endpoint, made the first time it is asked for."""
        route = self._routes.get(provider)
        if route is None:
            route = self._routes[provider] = self._make(self.router.endpoint(provider))
        return route

    def _make(self, endpoint: Endpoint) -> Route:
        s = self.settings
        return Route(
            endpoint=endpoint,
            backend=self._backend_for(endpoint),
            breaker=CircuitBreaker.from_policy(
                s.breaker, name=endpoint.name, clock=self.clock, on_change=self.on_breaker_change
            ),
            pool=KeyPool(
                endpoint.keys,
                clock=self.clock,
                sleep=self.sleep,
                keyless_limits=endpoint.limits,
                patience=s.retry.retry_after_cap,
                # The embedded model is each machine's own: its limits are too.
                sharing=PoolSharing(
                    endpoint.name,
                    self.shared if endpoint.provider != "local" else None,
                    self.budgets,
                ),
            ),
            pacing=AdaptiveConcurrency(s.in_flight(endpoint.provider), clock=self.clock),
        )

    def _backend_for(self, endpoint: Endpoint) -> Backend:
        if endpoint.provider == self.settings.provider and self._main_backend is not None:
            return self._main_backend
        if endpoint.provider == "local":
            from trinity.llm.providers.local import LocalBackend

            return LocalBackend(self.settings)
        from trinity.llm.http import HTTPBackend

        http = self.http_client()
        return HTTPBackend(
            endpoint,
            http,
            self.settings.timeout,
            self.settings.max_response_bytes,
            transport=self._direct,
        )

    def endpoint_path(self, endpoint: Endpoint, path: str, timeout: float) -> HTTPBackend:
        """Another path of a server (embeddings), spoken to through the build's one httpx
        client with the same bounds as chat: `timeout` for the whole exchange."""
        from trinity.llm.http import HTTPBackend

        return HTTPBackend(
            endpoint,
            self.http_client(),
            timeout,
            self.settings.max_response_bytes,
            transport=self._direct,
            path=path,
        )

    def http_client(self) -> httpx.AsyncClient:
        """The build's one httpx client, made when the first server endpoint needs it.

        Unless a transport was injected, its connections are pooled in shards (see
        trinity.llm.transport), except behind a proxy named by the environment: httpx
        honours those variables only in the transport it makes itself.
        """
        if self._http is None:
            # Imported here: a build answered from the cache never needs httpx.
            import httpx

            from trinity.llm.transport import pooled_transport, proxied_by_environment

            limit = self.settings.concurrency
            proxied = proxied_by_environment()
            transport = self._transport
            if transport is None and not proxied:
                transport = pooled_transport(limit)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout),
                # Used only when httpx makes the transport (behind a proxy).
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                transport=transport,
            )
            # Behind a proxy httpx mounts a transport of its own for the proxied URLs.
            self._direct = None if proxied else transport
        return self._http

    async def aclose(self) -> None:
        """Close every backend made here, and the HTTP client unless it was injected."""
        for route in self._routes.values():
            if route.backend is not self._main_backend:
                await route.backend.aclose()
        self._routes.clear()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = self._direct = None


__all__ = ["Backend", "Route", "Routes"]
