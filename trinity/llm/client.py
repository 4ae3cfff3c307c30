"""AsyncLLMClient: the cache, and a resilient path to one or more models.

The client is a facade; each layer of a request is a method named for what it handles,
outside in (the parts each uses live in modules of their own)::

    complete
    -> _send_handling_coalescing  one call per cache key, however many callers ask at once
    -> _send_handling_cache       a fresh cached answer (answercache.py), else the answer
                                  to the nearest earlier prompt when the semantic cache is
                                  on for the request (semantic.py), else a model's, asked
                                  by one of the processes sharing Redis at a time
                                  (claims.py), checked, then stored the moment it arrives
    -> _send_handling_fallbacks   the model asked for, then each fallback (routing)
    -> _send_handling_retries     backoff with full jitter, Retry-After, at most `attempts`,
                                  a build-wide budget; a 429 is waited out apart, up to
                                  `rate_limit_wait` (retry.py)
    -> _send_handling_breaker     the endpoint's circuit breaker; every attempt counts
    -> _send_single_request       cost budget (--max-cost: estimate reserved, real cost
                                  settled), the endpoint's concurrency (AIMD, adaptive.py),
                                  a key from its pool (ratelimit.py: its limits, shared
                                  ones, daily budgets), then the backend:
                                  HTTP through the one httpx client, or the embedded
                                  model's worker process (routes.py)

With `shared` (a RedisLink), what several processes building at once must agree on is
kept in Redis rather than in this process: the keys' rate limits (sharedlimits.py), the
daily budgets (budgets.py) and one call per cache key (claims.py). With `events`
(llm/events.py), a listener hears each attempt, retry and breaker change (trinity.metrics
counts them).

The breaker sits inside the retry loop so that once it opens, not one more attempt
reaches a dead server; an open breaker is not retried but fails over to the next model,
as does an embedded model that failed (ModelFailed), for a request that carries chat
messages. Any other non-retryable error (a bad request, a bad key) fails at once: another
model would be refused the same.
"""

from __future__ import annotations

import logging
import random as _random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Unpack

import anyio

from trinity.cache.manager import CacheManager
from trinity.errors import (
    CircuitBreakerOpen,
    LLMError,
    MalformedResponseError,
    ModelFailed,
    RateLimitedError,
)
from trinity.llm.adaptive import AdaptiveConcurrency, acquire_promptly
from trinity.llm.answercache import AnswerCache, Validator, passes
from trinity.llm.budgets import DailyBudgets
from trinity.llm.claims import Claims
from trinity.llm.coalesce import Coalescer
from trinity.llm.entries import cache_key
from trinity.llm.events import ClientEvents, attempt_outcome
from trinity.llm.pricing import (
    CostBudget,
    Price,
    cost,
    price_for,
    prompt_cache_saving,
    usage_cost,
)
from trinity.llm.ratelimit import estimate_request_tokens
from trinity.llm.requests import RequestMaker, RequestOptions
from trinity.llm.retry import RetryBudget, call_with_retry
from trinity.llm.routes import Backend, Route, Routes
from trinity.llm.routing import Router
from trinity.llm.settings import LLMSettings, Target
from trinity.llm.sharedlimits import SharedLimits
from trinity.llm.types import LLMRequest, LLMResponse, Usage
from trinity.logs import correlation, current_correlation_id, get_logger

if TYPE_CHECKING:
    import httpx

    from trinity.cache.redislink import RedisLink
    from trinity.llm.semantic import SemanticCache

log = get_logger(__name__)

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
    semantic_hits: int = 0  # of the cache hits, those for a similar prompt
    coalesced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


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
        shared: RedisLink | None = None,
        events: ClientEvents | None = None,
    ) -> None:
        self.settings = settings or LLMSettings()
        self.cache = cache
        # The Redis through which processes building at once share rate limits, budgets
        # and requests in flight; None: this process keeps them to itself.
        self.shared = shared
        self.events = events
        # One model call per key across those processes (None: each asks for itself).
        self.claims = Claims(shared, sleep=sleep) if shared is not None else None
        self.router = Router(self.settings)
        self.answers = AnswerCache(
            cache, self.settings, self.router, ttl=cache_ttl, refresh=cache_refresh
        )
        self.requests = RequestMaker(self.settings)
        self.stats = ClientStats()
        self.clock = clock
        self.timer = timer
        self.sleep = sleep
        self.random = random
        self.retry_policy = self.settings.retry
        self.retry_budget = RetryBudget(ratio=self.retry_policy.budget)
        self.budget = CostBudget(self.settings.max_cost)
        self._limiter = anyio.CapacityLimiter(self.settings.in_flight())
        self._routes = Routes(
            self.settings,
            self.router,
            http_client=http_client,
            transport=transport,
            backend=backend,
            clock=clock,
            sleep=sleep,
            on_breaker_change=events.breaker_changed if events is not None else None,
            shared=SharedLimits(shared) if shared is not None else None,
            budgets=DailyBudgets(self.settings.budget, shared),
        )
        self._in_flight: Coalescer[LLMResponse] = Coalescer()
        # Answers that came by batch (`--batch`), each served once as this client's call.
        self._batched: dict[str, LLMResponse] = {}
        self._entered = False
        # Made on the first request that may use it (numpy and the embedder only then).
        self._semantic: SemanticCache | None = None

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
        if self._semantic is not None:
            await self._semantic.aclose()
            self._semantic = None
        await self._routes.aclose()
        self._entered = False

    @property
    def in_flight(self) -> Coalescer[LLMResponse]:
        """The requests being answered now, and how many callers wait for them."""
        return self._in_flight

    @property
    def style(self) -> str:
        """How prompts reach the model: 'chat', or 'completion' for a base model."""
        return self.requests.style

    @property
    def completes_documents(self) -> bool:
        """True when requests are answered by continuing a document (a base model)."""
        return self.requests.completes_documents

    # ------------------------------------------------------------------ the facade

    def request(self, prompt: str, **options: Unpack[RequestOptions]) -> LLMRequest:
        """A request for `prompt`, every option not given taken from settings (see
        RequestMaker.request)."""
        return self.requests.request(prompt, **options)

    def key(self, request: LLMRequest) -> str:
        return cache_key(self.settings.provider, self.settings.api_url, request)

    async def cached(self, request: LLMRequest, key: str | None = None) -> LLMResponse | None:
        """The fresh cached answer to `request` (within the TTL), without calling a model.

        `key` is `self.key(request)` when the caller has it already (hashing is not free).
        """
        return await self.answers.fresh(request, key or self.key(request))

    async def stale(
        self, request: LLMRequest, *, validate: Validator | None = None, key: str | None = None
    ) -> LLMResponse | None:
        """The last good cached answer, however old: what a build serves when models fail."""
        return await self.answers.stale(request, key or self.key(request), validate)

    async def complete(
        self,
        request: LLMRequest,
        *,
        validate: Validator | None = None,
        key: str | None = None,
        semantic: bool | None = False,
    ) -> LLMResponse:
        """The answer to `request`, from the cache or a model.

        `validate` may raise MalformedResponseError; such an answer is not cached. `key` is
        `self.key(request)` when the caller has it already (a build plans every key).
        `semantic`: whether the answer to a similar earlier prompt may be served (None: as
        `cache.semantic.enabled` says; only ever at temperature 0).
        """
        key = key or self.key(request)
        began = self.timer()
        response = await self._send_handling_coalescing(request, key, validate, semantic)
        if response.cache_tier is not None:
            target = self.router.target(request.model)
            self._log_request(
                target, 0, "cached", self.timer() - began, response.usage, response.cache_tier
            )
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

    def prefill(self, key: str, response: LLMResponse) -> None:
        """An answer to the request of `key` that came by batch (and is cached already):
        the next `complete` for that key serves it as a model call of this client (not a
        cache hit), with its batch price, once."""
        self._batched[key] = response

    def http_client(self) -> httpx.AsyncClient:
        """The build's one httpx client (made now if no request has needed it yet)."""
        if not self._entered:
            raise RuntimeError("use AsyncLLMClient as 'async with AsyncLLMClient(...) as client'")
        return self._routes.http_client()

    def pacing(self, provider: str) -> AdaptiveConcurrency:
        """The adaptive concurrency of a provider's endpoint (for reports and tests)."""
        return self._route(provider).pacing

    # ------------------------------------------------------------------ the layers

    async def _send_handling_coalescing(
        self, request: LLMRequest, key: str, validate: Validator | None, semantic: bool | None
    ) -> LLMResponse:
        """One answer per key for every caller asking at once; the others share it."""
        # The lookup runs inside the coalescer too: a caller that missed the cache just
        # before an identical request's answer was stored would otherwise ask again.
        response, shared = await self._in_flight.run(
            key, lambda: self._send_handling_cache(request, key, validate, semantic)
        )
        if shared and response.cache_tier is None:
            # Another block asked the same thing at the same time: it costs nothing more.
            self.stats.coalesced += 1
            return replace(
                response, cache_tier=IN_FLIGHT, attempts=0, cost=0.0, saved=response.cost
            )
        if shared:
            self.stats.cache_hits += 1
        return response

    async def _send_handling_cache(
        self, request: LLMRequest, key: str, validate: Validator | None, semantic: bool | None
    ) -> LLMResponse:
        """A fresh cached answer that `validate` accepts; else the answer to a similar
        prompt (the semantic cache, when on); else a model's (asked by this process, or by
        another sharing Redis that claimed the key first)."""
        batched = self._batched.pop(key, None)
        if batched is not None and passes(batched, validate):
            self._count_call(batched)
            if self.events is not None:  # a request of the batch: it has no latency of its own
                target = self.router.target(request.model)
                self.events.attempted(target, "batch", 0.0, batched.usage, batched.cost)
            await self._remember(request, key, semantic)
            return batched
        hit = await self.answers.fresh(request, key)
        if hit is not None and passes(hit, validate):
            self.stats.cache_hits += 1
            return hit
        similar = self._semantic_for(request, semantic)
        if similar is not None:
            found = await self._similar_answer(similar, request, key, validate)
            if found is not None:
                return found
        claims = self._claims()
        if claims is None:
            response, elsewhere = await self._ask_and_store(request, key, validate), False
        else:
            # While another process asks, this one waits holding none of its slots.
            response, elsewhere = await claims.once(
                key,
                ask=lambda: self._ask_and_store(request, key, validate),
                look=lambda: self.answers.shared(request, key),
                accept=lambda found: passes(found, validate),
            )
        if elsewhere:
            self.stats.cache_hits += 1
        elif similar is not None:
            await similar.remember(request, key)
        return response

    def embedding_usage(self) -> dict[str, Any] | None:
        """What the semantic cache's embeddings took and cost this build (the report's
        `embeddings`); None when it embedded nothing."""
        if self._semantic is None:
            return None
        return self._semantic.usage(self.settings.prices)

    async def _remember(self, request: LLMRequest, key: str, semantic: bool | None) -> None:
        """A model's answer that came another way (by batch) kept for the semantic cache,
        as one asked here is."""
        similar = self._semantic_for(request, semantic)
        if similar is not None:
            await similar.remember(request, key)

    def _semantic_for(self, request: LLMRequest, wanted: bool | None) -> SemanticCache | None:
        """The semantic cache, when `request` may use it (see SemanticCache.applies)."""
        if self.cache is None or request.temperature or not self.settings.semantic.asked(wanted):
            return None
        if self._semantic is None:
            from trinity.llm.semantic import open_semantic  # numpy: only when it is used

            self._semantic = open_semantic(self.settings, self.cache, self._routes_entered())
        return self._semantic if self._semantic.applies(request, wanted) else None

    async def _similar_answer(
        self, similar: SemanticCache, request: LLMRequest, key: str, validate: Validator | None
    ) -> LLMResponse | None:
        """The fresh cached answer to the nearest earlier prompt, if `validate` accepts it,
        served as a hit of the "semantic" tier with its similarity and prompt."""
        from trinity.llm.semantic import SEMANTIC_TIER, matched_prompt

        match = await similar.nearest(request)
        if match is None or match.key == key:
            return None
        found = await self.answers.fresh(request, match.key)
        if found is None or not passes(found, validate):
            return None
        similar.hits += 1
        self.stats.cache_hits += 1
        self.stats.semantic_hits += 1
        return replace(
            found,
            cache_tier=SEMANTIC_TIER,
            similarity=round(match.similarity, 4),
            matched_prompt=matched_prompt(match.prompt),
        )

    def _claims(self) -> Claims | None:
        """The claims that make one call per key across the processes sharing Redis: none
        without a shared Redis that holds the answers too, and none with `cache_refresh`
        (the answer another process has cached is the one to replace, not to wait for)."""
        if self.claims is None or self.answers.refresh or not self.answers.shares_answers:
            return None
        return self.claims

    async def _ask_and_store(
        self, request: LLMRequest, key: str, validate: Validator | None
    ) -> LLMResponse:
        """A model's answer, checked, and stored in every tier the moment it arrives."""
        await acquire_promptly(self._limiter)
        try:
            response = await self._send_handling_fallbacks(request)
        finally:
            self._limiter.release()
        self._count_call(response)
        if not response.text.strip():
            raise MalformedResponseError("the model returned an empty answer")
        if validate is not None:
            validate(response)
        await self.answers.store(key, response)
        return response

    async def _send_handling_fallbacks(self, request: LLMRequest) -> LLMResponse:
        """The model asked for, then each fallback while failures are worth failing over."""
        chain = self.router.chain(request.model)
        for position, target in enumerate(chain):
            try:
                return await self._send_handling_retries(target, request)
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

    async def _send_handling_retries(self, target: Target, request: LLMRequest) -> LLMResponse:
        """One model's answer, tried again while its failures are worth retrying."""
        route = self._route(target.provider)
        price = price_for(target.provider, target.model, self.settings.prices)
        started = self.timer()
        attempts = 0

        async def attempt() -> LLMResponse:
            nonlocal attempts
            attempts += 1
            return await self._send_handling_breaker(route, target, attempts, request, price)

        def note_retry(number: int, error: LLMError, delay: float) -> None:
            self.stats.retries += 1
            if self.events is not None:
                self.events.retried(target)
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
            cost=usage_cost(price, response.usage),
            prompt_cache_saved=prompt_cache_saving(price, response.usage),
        )

    async def _send_handling_breaker(
        self, route: Route, target: Target, number: int, request: LLMRequest, price: Price | None
    ) -> LLMResponse:
        """One attempt, through the endpoint's circuit breaker, logged either way."""
        self.stats.attempts += 1
        began = self.timer()
        try:
            response = await route.breaker.call_async(
                self._send_single_request, route, target, request, price
            )
        except LLMError as error:
            status = getattr(error, "status", None) or type(error).__name__
            elapsed = self.timer() - began
            self._log_request(target, number, status, elapsed)
            if self.events is not None:
                self.events.attempted(target, attempt_outcome(error), elapsed, None, 0.0)
            raise
        # The time spent waiting (for a rate limit, or a local model's load and queue)
        # is logged apart: it is not the model's, and adds up to more than the build.
        took = self.timer() - began - response.queued
        usage = response.usage
        self._log_request(target, number, "ok", took, usage, wait=response.queued)
        if self.events is not None:
            self.events.attempted(target, "ok", took, usage, usage_cost(price, usage))
        return response

    async def _send_single_request(
        self, route: Route, target: Target, request: LLMRequest, price: Price | None
    ) -> LLMResponse:
        """One attempt: reserve budget and a key, send, and settle both with the real usage."""
        input_est, output_est = estimate_request_tokens(request)
        wait = route.pool.wait_time(input_est, output_est)
        if route.pool.too_long(wait):  # longer than llm.retry.retry_after_cap
            # Every key rests longer than we would wait: fail over instead of sleeping.
            raise RateLimitedError(
                f"every key for {route.endpoint.name} is rate limited for {wait:.0f} s",
                retry_after=wait,
            )
        estimate = cost(price, input_est, output_est)
        reservation = self.budget.reserve(estimate)
        paced = self.timer()
        try:
            async with route.pacing.slot() as epoch:
                lease = await route.pool.acquire(input_est, output_est, estimate)
                paced = self.timer() - paced
                try:
                    response = await route.backend.send(_for_model(request, target), lease.secret)
                except RateLimitedError as error:
                    await lease.rate_limited(error.retry_after)
                    route.pacing.rate_limited(epoch)
                    raise
                except BaseException:
                    await lease.abandon()
                    raise
        except BaseException:
            self.budget.release(reservation)
            raise
        route.pacing.succeeded()
        usage = response.usage
        spent = usage_cost(price, usage)
        await lease.finish(usage.input_tokens, usage.output_tokens, response.headers, spent)
        self.budget.settle(reservation, spent)
        return replace(response, queued=response.queued + paced) if paced >= 0.001 else response

    # ------------------------------------------------------------------ helpers

    def _count_call(self, response: LLMResponse) -> None:
        self.stats.calls += 1
        self.stats.input_tokens += response.usage.input_tokens
        self.stats.output_tokens += response.usage.output_tokens

    def _route(self, provider: str) -> Route:
        return self._routes_entered().get(provider)

    def _routes_entered(self) -> Routes:
        if not self._entered:
            raise RuntimeError("use AsyncLLMClient as 'async with AsyncLLMClient(...) as client'")
        return self._routes

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
        if not log.isEnabledFor(logging.INFO):
            return  # nobody listens: not even the record's fields are made (one a request)
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


def _for_model(request: LLMRequest, target: Target) -> LLMRequest:
    """`request` as sent to `target`: with the model's own name, not an alias's (a copy
    only when they differ: most requests name the model itself)."""
    return request if request.model == target.model else replace(request, model=target.model)


def _unavailable(error: LLMError, request: LLMRequest) -> bool:
    """Whether `error` says the model is out of reach rather than the request wrong.

    A failed embedded model counts only for a request that still carries its chat
    messages: one framed as a document for a base model has none a chat model could read.
    """
    if isinstance(error, CircuitBreakerOpen):
        return True
    return isinstance(error, ModelFailed) and bool(request.messages)


__all__ = ["IN_FLIGHT", "AsyncLLMClient", "Backend", "ClientStats", "Validator"]
