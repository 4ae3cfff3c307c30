"""The client's view of the cache: fresh answers, stale ones, and what each saved.

The cache's tiers keep entries as long as their own retention says; whether an answer is
still fresh is judged here, by `cache.ttl`, so that an expired answer is still there to
serve (marked stale) when every model fails. A refresh serves only what it fetched anew.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from trinity.cache.manager import CacheManager
from trinity.errors import LLMError
from trinity.llm.entries import read_entry, to_entry
from trinity.llm.pricing import price_for, usage_cost
from trinity.llm.routing import Router
from trinity.llm.settings import LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse

Validator = Callable[[LLMResponse], None]

# The tier that processes building at once share their answers through.
SHARED_TIER = "redis"


class AnswerCache:
    """Answers by cache key, over a CacheManager (or none: then nothing is ever found).

    With `refresh`, answers cached before are not served as fresh: only those stored by
    this object, so a request asked twice is still sent once.
    """

    def __init__(
        self,
        cache: CacheManager | None,
        settings: LLMSettings,
        router: Router,
        *,
        ttl: float | None = None,
        refresh: bool = False,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.router = router
        self.ttl = ttl
        self.refresh = refresh
        self._refreshed: set[str] = set()

    async def fresh(self, request: LLMRequest, key: str) -> LLMResponse | None:
        """The cached answer to `request` if it is within the TTL (and, when refreshing,
        was fetched by this build)."""
        if self.refresh and key not in self._refreshed:
            return None
        found = await self._lookup(request, key)
        if found is None or self._expired(found):
            return None
        return found

    @property
    def shares_answers(self) -> bool:
        """Whether answers stored here reach other processes (through the Redis tier)."""
        return self.cache is not None and self.cache.tier(SHARED_TIER) is not None

    async def shared(self, request: LLMRequest, key: str) -> LLMResponse | None:
        """The fresh answer to `request` in the Redis tier alone: what a process waiting on
        another's call looks for (the tiers above it are this process's own)."""
        tier = self.cache.tier(SHARED_TIER) if self.cache is not None else None
        if tier is None:
            return None
        found = self._read(request, await tier.get_async(key), tier.name)
        if found is None or self._expired(found):
            return None
        return found

    async def stale(
        self, request: LLMRequest, key: str, validate: Validator | None = None
    ) -> LLMResponse | None:
        """The last good cached answer, however old, marked stale."""
        found = await self._lookup(request, key)
        if found is None or not passes(found, validate):
            return None
        return replace(found, stale=True)

    async def store(self, key: str, response: LLMResponse) -> None:
        """Keep a model's answer, in every tier, the moment it arrives."""
        if self.cache is None:
            return
        await self.cache.set_async(key, to_entry(response))
        if self.refresh:
            self._refreshed.add(key)

    async def _lookup(self, request: LLMRequest, key: str) -> LLMResponse | None:
        if self.cache is None:
            return None
        found = await self.cache.lookup_async(key)
        if found is None:
            return None
        return self._read(request, *found)

    def _read(self, request: LLMRequest, value: object, tier: str) -> LLMResponse | None:
        """The answer a cache entry of `tier` holds, or None when it holds none."""
        response = read_entry(value)
        if response is None:
            return None
        return replace(response, cache_tier=tier, saved=self._saved(request, response))

    def _saved(self, request: LLMRequest, response: LLMResponse) -> float:
        """What the answer would have cost from the model that gave it."""
        target = self.router.target(request.model)
        price = price_for(target.provider, response.model or target.model, self.settings.prices)
        return usage_cost(price, response.usage)

    def _expired(self, response: LLMResponse) -> bool:
        return (
            self.ttl is not None
            and response.created is not None
            and (time.time() - response.created > self.ttl)
        )


def passes(response: LLMResponse, validate: Validator | None) -> bool:
    """Whether `validate` accepts the response (no validator accepts everything)."""
    if validate is None:
        return True
    try:
        validate(response)
    except LLMError:
        return False
    return True


__all__ = ["AnswerCache", "Validator", "passes"]
