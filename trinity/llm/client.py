"""AsyncLLMClient: the cache, and a resilient path to one or more models.

A request goes through these layers, outside in::

    cache lookup (fresh answers only; an expired one is kept for `stale`, and a refresh
                  serves only the answers it fetched anew)
    -> in-flight coalescing (one call per cache key, however many callers ask at once)
    -> for the model asked for, then each fallback:
       retry (backoff with full jitter, Retry-After, at most `attempts`, build-wide budget;
              a 429 is waited out apart, up to `rate_limit_wait`)
       -> circuit breaker of the endpoint (one per provider server; every attempt counts)
       -> cost budget (--max-cost: estimate reserved before, real cost settled after)
       -> the endpoint's concurrency (halved on a 429, grown back by successes: AIMD)
       -> key pool (round-robin API keys, each with its own rpm and token limits)
       -> backend (HTTP through the one httpx client, or the model's worker process)
    -> validation -> cache write (the moment the answer arrives) -> cost and savings

The breaker sits inside the retry loop so that once it opens, not one more attempt
reaches a dead server; an open breaker is not retried but fails over to the next model,
as does an embedded model that failed (ModelFailed), for a request that carries chat
messages. Any other non-retryable error (a bad request, a bad key) fails at once: another
model would be refused the same.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from trinity.cache.keys import cache_key
from trinity.cache.manager import CacheManager
from trinity.config import Endpoint, LLMSettings, Target
from trinity.errors import (
    CircuitBreakerOpen,
    ConfigError,
    LLMError,
    MalformedResponseError,
    ModelFailed,
    RateLimitedError,
)
from trinity.llm.adaptive import AdaptiveConcurrency
from trinity.llm.breaker import CircuitBreaker
from trinity.llm.coalesce import Coalescer
from trinity.llm.pricing import CostBudget, Price, cost, price_for
from trinity.llm.ratelimit import ApiKey, KeyPool, estimate_request_tokens
from trinity.llm.retry import RetryBudget, RetryPolicy, call_with_retry
from trinity.llm.types import (
    CompletionFrame,
    LLMRequest,
    LLMResponse,
    ResponseFormat,
    Usage,
    response_data,
    response_from_data,
)
from trinity.logs import correlation, current_correlation_id, get_logger

if TYPE_CHECKING:
    import httpx

log = get_logger(__name__)

Validator = Callable[[LLMResponse], None]

# The `cache_tier` of an answer shared with an identical request that was already in flight.
IN_FLIGHT = "in-flight"


@dataclass
class ClientStats:
    """What this client has done so far."""

    calls: int = 0
    attempts: int = 0
    retries: int = 0
    fallbacks: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


class Backend(Protocol):
    """Where requests are answered: a server over HTTP, or the embedded model's worker."""

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse: ...
    async def aclose(self) -> None: ...


@dataclass
class _Route:
    """Everything that belongs to one endpoint: how to reach it, its breaker, its keys,
    and how many requests it takes at once (fewer while it answers 429)."""

    endpoint: Endpoint
    backend: Backend
    breaker: CircuitBreaker
    pool: KeyPool
    pacing: AdaptiveConcurrency


class AsyncLLMClient:
    """Answers requests through the configured models; use it as an async context manager.

    `http_client` or `transport` may be injected (tests use `httpx.MockTransport`), and so
    may a `backend` for the main endpoint; the client closes only what it made itself.
    `clock`, `sleep` and `random` drive the breaker, limiter and retry waits, so tests
    never really wait; `timer` measures latency.

    With `cache_refresh`, answers cached before are not served: each request is sent to a
    model once more, and its answer replaces the cached one in every tier (`stale` still
    serves the old one when every model fails).
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: CacheManager | None = None,
        cache_ttl: float | None = None,
        cache_refresh: bool = False,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.monotonic,
        timer: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.settings = settings or LLMSettings()
        self.cache = cache
        self.cache_ttl = cache_ttl
        self.cache_refresh = cache_refresh
        # When refreshing, the keys whose answers this client has fetched and cached: the
        # only ones it serves from the cache, so a request asked twice is sent once.
        self._refreshed: set[str] = set()
        self.stats = ClientStats()
        self.clock = clock
        self.timer = timer
        self.sleep = sleep
        self.random = random
        self.style = _prompt_style(self.settings)
        retry = self.settings.retry
        self.retry_policy = RetryPolicy(
            attempts=retry.attempts,
            base_delay=retry.base_delay,
            max_delay=retry.max_delay,
            retry_after_cap=retry.retry_after_cap,
            rate_limit_wait=retry.rate_limit_wait,
        )
        self.retry_budget = RetryBudget(ratio=retry.budget)
        self.budget = CostBudget(self.settings.max_cost)
        self._limiter = anyio.CapacityLimiter(self.settings.concurrency)
        self._http = http_client
        self._owns_http = http_client is None
        self._transport = transport
        self._main_backend = backend
        self._routes: dict[str, _Route] = {}
        self._in_flight: Coalescer[LLMResponse] = Coalescer()
        self._entered = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncLLMClient:
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for route in self._routes.values():
            if route.backend is not self._main_backend:
                await route.backend.aclose()
        self._routes.clear()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        self._entered = False

    def _http_client(self) -> httpx.AsyncClient:
        """The build's one httpx client, made when the first server endpoint needs it.

        Unless a transport was injected, its connections are pooled in shards (see
        trinity.llm.transport), except behind a proxy named by the environment: httpx
        honours those variables only in the transport it makes itself.
        """
        if self._http is None:
            # Imported here: a build answered from the cache never needs httpx (0.1 s).
            import httpx

            from trinity.llm.transport import pooled_transport, proxied_by_environment

            limit = self.settings.concurrency
            transport = self._transport
            if transport is None and not proxied_by_environment():
                transport = pooled_transport(limit)
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.settings.timeout),
                # Used only when httpx makes the transport (behind a proxy).
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                transport=transport,
            )
        return self._http

    @property
    def in_flight(self) -> Coalescer[LLMResponse]:
        """The requests being answered now, and how many callers wait for them."""
        return self._in_flight

    @property
    def completes_documents(self) -> bool:
        """True when requests are answered by continuing a document (a base model)."""
        return self.style == "completion"

    # ------------------------------------------------------------------ requests

    def request(
        self,
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_p: float | None = None,
        response_format: ResponseFormat = "text",
        json_schema: dict[str, Any] | None = None,
        frame: CompletionFrame | None = None,
    ) -> LLMRequest:
        """A request for `prompt`, every parameter not given taken from settings.

        `model` is the name asked for (an alias is kept as the alias: it is what the cache
        key holds). `frame` is kept only for base models, and then the chat messages are
        dropped: a base model sees only the document, so neither they nor the headings and
        leads a chat model never sees may split a cache entry.
        """
        s = self.settings
        options = dict(s.options)
        if s.provider == "local":
            from trinity.llm.providers.local import DEFAULT_OPTIONS

            options = {**DEFAULT_OPTIONS, **options}
        request = LLMRequest.from_prompt(
            prompt,
            model=model or s.model,
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
            request = replace(request, messages=())
        return request

    def key(self, request: LLMRequest) -> str:
        return cache_key(self.settings.provider, self.settings.api_url, request)

    async def cached(self, request: LLMRequest, key: str | None = None) -> LLMResponse | None:
        """The fresh cached answer to `request` (within the TTL), without calling a model.

        `key` is `self.key(request)` when the caller has it already (hashing is not free).
        """
        key = key or self.key(request)
        if self.cache_refresh and key not in self._refreshed:
            return None
        found = await self._lookup(request, key)
        if found is None or self._expired(found):
            return None
        return found

    async def stale(
        self, request: LLMRequest, *, validate: Validator | None = None, key: str | None = None
    ) -> LLMResponse | None:
        """The last good cached answer, however old: what a build serves when models fail."""
        found = await self._lookup(request, key)
        if found is None or not _passes(found, validate):
            return None
        return replace(found, stale=True)

    async def _lookup(self, request: LLMRequest, key: str | None = None) -> LLMResponse | None:
        if self.cache is None:
            return None
        found = await self.cache.lookup_async(key or self.key(request))
        if found is None:
            return None
        value, tier = found
        response = read_entry(value)
        if response is None:
            return None
        saved = cost(
            price_for(*self._priced(request.model, response.model), self.settings.prices),
            response.usage.input_tokens,
            response.usage.output_tokens,
        )
        return replace(response, cache_tier=tier, saved=saved)

    def _expired(self, response: LLMResponse) -> bool:
        return (
            self.cache_ttl is not None
            and response.created is not None
            and (time.time() - response.created > self.cache_ttl)
        )

    def _priced(self, asked: str, answered: str) -> tuple[str, str]:
        target = self.settings.target(asked)
        return target.provider, answered or target.model

    async def complete(
        self, request: LLMRequest, *, validate: Validator | None = None, key: str | None = None
    ) -> LLMResponse:
        """The answer to `request`, from the cache or a model.

        `validate` may raise MalformedResponseError; such an answer is not cached. `key` is
        `self.key(request)` when the caller has it already (a build plans every key).
        """
        key = key or self.key(request)
        began = self.timer()
        # The lookup runs inside the coalescer too: a caller that missed the cache just
        # before an identical request's answer was stored would otherwise ask again.
        response, shared = await self._in_flight.run(
            key, lambda: self._answer(request, key, validate)
        )
        if shared and response.cache_tier is None:
            # Another block asked the same thing at the same time: it costs nothing more.
            self.stats.coalesced += 1
            response = replace(
                response, cache_tier=IN_FLIGHT, attempts=0, cost=0.0, saved=response.cost
            )
        elif shared:
            self.stats.cache_hits += 1
        if response.cache_tier is not None:
            target = self.settings.target(request.model)
            self._log_request(
                target, 0, "cached", self.timer() - began, response.usage, response.cache_tier
            )
        return response

    async def _answer(
        self, request: LLMRequest, key: str, validate: Validator | None
    ) -> LLMResponse:
        hit = await self.cached(request, key)
        if hit is not None and _passes(hit, validate):
            self.stats.cache_hits += 1
            return hit
        return await self._generate(request, key, validate)

    async def _generate(
        self, request: LLMRequest, key: str, validate: Validator | None
    ) -> LLMResponse:
        async with self._limiter:
            response = await self._ask_chain(request)
        self.stats.calls += 1
        self.stats.input_tokens += response.usage.input_tokens
        self.stats.output_tokens += response.usage.output_tokens
        if not response.text.strip():
            raise MalformedResponseError("the model returned an empty answer")
        if validate is not None:
            validate(response)
        if self.cache is not None:
            await self.cache.set_async(key, _to_entry(response))
            if self.cache_refresh:
                self._refreshed.add(key)
        return response

    async def generate_content_async(
        self,
        prompt: str,
        *,
        system: str | None = None,
        correlation_id: str | None = None,
        **params: Any,
    ) -> str:
        """The text of the model's answer to `prompt` (the simple way in for scripts).

        `correlation_id` tags this call's log records (a new id when none is current).
        """
        with correlation(correlation_id or current_correlation_id()):
            response = await self.complete(self.request(prompt, system=system, **params))
        return response.text

    # ------------------------------------------------------------------ the chain

    async def _ask_chain(self, request: LLMRequest) -> LLMResponse:
        """The model asked for, then each fallback while failures are worth failing over."""
        chain = self.settings.chain(request.model)
        for position, target in enumerate(chain):
            try:
                return await self._ask(target, request)
            except LLMError as error:
                last = position == len(chain) - 1
                # A dead endpoint or embedded model is no verdict on the request: another
                # model may answer it. A refused request would be refused there too.
                if last or not (error.retryable or _unavailable(error, request)):
                    raise
                self.stats.fallbacks += 1
                log.warning(
                    "%s failed (%s); falling back to %s", target, error, chain[position + 1]
                )
        raise AssertionError("a model chain is never empty")

    async def _ask(self, target: Target, request: LLMRequest) -> LLMResponse:
        route = self._route(target.provider)
        price = price_for(target.provider, target.model, self.settings.prices)
        started = self.timer()
        attempts = 0

        async def attempt() -> LLMResponse:
            nonlocal attempts
            attempts += 1
            self.stats.attempts += 1
            began = self.timer()
            try:
                response = await route.breaker.call_async(self._send, route, target, request, price)
            except LLMError as error:
                status = getattr(error, "status", None) or type(error).__name__
                self._log_request(target, attempts, status, self.timer() - began)
                raise
            # The time spent waiting (for a rate limit, or a local model's load and queue)
            # is logged apart: it is not the model's, and adds up to more than the build.
            elapsed = self.timer() - began
            self._log_request(
                target,
                attempts,
                "ok",
                elapsed - response.queued,
                response.usage,
                wait=response.queued,
            )
            return response

        def note_retry(number: int, error: LLMError, delay: float) -> None:
            self.stats.retries += 1
            log.info(
                "retrying %s after %s (attempt %d, waiting %.2f s)", target, error, number, delay
            )

        response = await call_with_retry(
            attempt,
            self.retry_policy,
            sleep=self.sleep,
            random=self.random,
            budget=self.retry_budget,
            on_retry=note_retry,
            clock=self.clock,
            limited_since=lambda: route.pacing.limited_since,
        )
        return replace(
            response,
            model=response.model or target.model,
            attempts=attempts,
            latency=self.timer() - started,
            cost=cost(price, response.usage.input_tokens, response.usage.output_tokens),
        )

    def _log_request(
        self,
        target: Target,
        attempt: int,
        status: int | str,
        latency: float,
        usage: Usage | None = None,
        cache_tier: str | None = None,
        wait: float = 0.0,
    ) -> None:
        """One line per request sent (or answered from the cache), with its numbers.

        `latency` is the time the model took; `wait`, the time the request waited first.
        """
        what = f"from the {cache_tier} cache" if cache_tier else f"attempt {attempt}: {status}"
        log.info(
            "LLM %s:%s %s in %.0f ms",
            target.provider,
            target.model,
            what,
            latency * 1000,
            extra={
                "event": "llm_request",
                "provider": target.provider,
                "model": target.model,
                "attempt": attempt,
                "status": status,
                "latency_ms": round(latency * 1000, 1),
                "wait_ms": round(wait * 1000, 1),
                "input_tokens": usage.input_tokens if usage else 0,
                "output_tokens": usage.output_tokens if usage else 0,
                "cache_tier": cache_tier,
            },
        )

    async def _send(
        self, route: _Route, target: Target, request: LLMRequest, price: Price | None
    ) -> LLMResponse:
        """One attempt: reserve budget and a key, send, and settle both with the real usage."""
        input_est, output_est = estimate_request_tokens(request)
        wait = route.pool.wait_time(input_est, output_est)
        if wait > self.retry_policy.retry_after_cap:
            # Every key rests longer than we would wait: fail over instead of sleeping.
            raise RateLimitedError(
                f"every key for {route.endpoint.name} is rate limited for {wait:.0f} s",
                retry_after=wait,
            )
        reservation = self.budget.reserve(cost(price, input_est, output_est))
        paced = self.timer()
        async with route.pacing.slot() as epoch:
            lease = await route.pool.acquire(input_est, output_est)
            paced = self.timer() - paced
            try:
                response = await route.backend.send(
                    replace(request, model=target.model), lease.secret
                )
            except RateLimitedError as error:
                lease.rate_limited(error.retry_after)
                route.pacing.rate_limited(epoch)
                self.budget.release(reservation)
                raise
            except BaseException:
                self.budget.release(reservation)
                raise
        route.pacing.succeeded()
        usage = response.usage
        lease.finish(usage.input_tokens, usage.output_tokens, response.headers)
        self.budget.settle(reservation, cost(price, usage.input_tokens, usage.output_tokens))
        return replace(response, queued=response.queued + paced) if paced >= 0.001 else response

    def _route(self, provider: str) -> _Route:
        route = self._routes.get(provider)
        if route is None:
            endpoint = self.settings.endpoint(provider)
            route = _Route(
                endpoint=endpoint,
                backend=self._backend_for(endpoint),
                breaker=CircuitBreaker(
                    self.settings.breaker.failure_threshold,
                    self.settings.breaker.timeout,
                    failure_rate=self.settings.breaker.failure_rate,
                    window=self.settings.breaker.window,
                    name=endpoint.name,
                    clock=self.clock,
                ),
                pool=KeyPool(
                    [ApiKey(k.variable, k.secret, k.limits) for k in endpoint.keys],
                    clock=self.clock,
                    sleep=self.sleep,
                    keyless_limits=endpoint.limits,
                ),
                pacing=AdaptiveConcurrency(self.settings.concurrency, clock=self.clock),
            )
            self._routes[provider] = route
        return route

    def _backend_for(self, endpoint: Endpoint) -> Backend:
        if not self._entered:
            raise RuntimeError("use AsyncLLMClient as 'async with AsyncLLMClient(...) as client'")
        if endpoint.provider == self.settings.provider and self._main_backend is not None:
            return self._main_backend
        if endpoint.provider == "local":
            from trinity.llm.providers.local import LocalBackend

            return LocalBackend(self.settings)
        from trinity.llm.http import HTTPBackend

        return HTTPBackend(
            endpoint,
            self._http_client(),
            self.settings.timeout,
            self.settings.max_response_bytes,
        )

    def pacing(self, provider: str) -> AdaptiveConcurrency:
        """The adaptive concurrency of a provider's endpoint (for reports and tests)."""
        return self._route(provider).pacing


def _prompt_style(settings: LLMSettings) -> str:
    if settings.provider != "local":
        return "chat"
    from trinity.llm.providers.local import resolve_style

    try:
        return resolve_style(settings)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model file: {exc}", key="llm.model") from None


def _unavailable(error: LLMError, request: LLMRequest) -> bool:
    """Whether `error` says the model is out of reach rather than the request wrong.

    A failed embedded model counts only for a request that still carries its chat
    messages: one framed as a document for a base model has none a chat model could read.
    """
    if isinstance(error, CircuitBreakerOpen):
        return True
    return isinstance(error, ModelFailed) and bool(request.messages)


def _passes(response: LLMResponse, validate: Validator | None) -> bool:
    if validate is None:
        return True
    try:
        validate(response)
    except LLMError:
        return False
    return True


def _to_entry(response: LLMResponse) -> dict[str, Any]:
    return {**response_data(response), "created": time.time()}


def read_entry(value: Any) -> LLMResponse | None:
    """A cached entry back as a response; None for anything not in our shape."""
    return response_from_data(value)


__all__ = ["IN_FLIGHT", "AsyncLLMClient", "Backend", "ClientStats", "read_entry"]
