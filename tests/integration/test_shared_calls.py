"""One model call per prompt across processes that share a Redis (trinity.llm.claims).

Two runners, each with its own client, memory tier and RedisLink, against one real
redis-server and one loopback fake LLM server whose latency makes their calls overlap; in
one event loop, and as two `trinity build` processes. Covered: each prompt reaching the
server once and the waiter's answer being a Redis cache hit; a holder that died (a claim
left to expire), or whose call failed, leaving the waiter to ask itself; the heartbeat
keeping a call longer than the claim's TTL claimed; Redis killed while a runner waits;
a shared answer the waiter's validator refuses; and `--no-cache`, which waits on no one.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.sitekit import BLOCKS, SiteProject, subprocess_env
from tests.fakellm import FakeLLMServer
from tests.redisserver import RedisServer
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisTier
from trinity.cache.redislink import RedisLink
from trinity.cache.tier import CacheTier
from trinity.errors import LLMError, MalformedResponseError
from trinity.llm.claims import CLAIM_TTL, Claims
from trinity.llm.client import AsyncLLMClient
from trinity.llm.http import HTTPBackend
from trinity.llm.retry import RetryPolicy
from trinity.llm.routing import Router
from trinity.llm.settings import LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse

pytestmark = pytest.mark.anyio

PREFIX = "trinity:"
PATIENT = 5.0  # a Redis timeout a busy machine cannot trip: only a real outage does
FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)
CALL_LATENCY = 0.5  # long enough that the second runner arrives while the first asks


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- runners


class HeldBackend:
    """The main endpoint over HTTP, each request held back until `go` is set."""

    def __init__(self, inner: HTTPBackend) -> None:
        self.inner = inner
        self.go = anyio.Event()

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        await self.go.wait()
        return await self.inner.send(request, api_key)

    async def aclose(self) -> None:
        await self.inner.aclose()


def llm_settings(server: FakeLLMServer) -> LLMSettings:
    return LLMSettings(provider="openai", api_url=server.url, model="fake-model", retry=FAST_RETRY)


class Runner:
    """What one CI runner's build has: its client, its memory tier, its own links to the
    shared Redis (the cache tier's and the shared state's)."""

    def __init__(
        self,
        client: AsyncLLMClient,
        tier: RedisTier,
        link: RedisLink,
        backend: HeldBackend | None = None,
    ) -> None:
        self.client = client
        self.tier = tier
        self.link = link
        self.backend = backend

    @property
    def claims(self) -> Claims:
        assert self.client.claims is not None
        return self.client.claims

    async def ask(self, prompt: str, **options: Any) -> LLMResponse:
        client = self.client
        return await client.complete(client.request(prompt, max_tokens=40), **options)


@asynccontextmanager
async def runner(
    server: FakeLLMServer,
    redis: RedisServer,
    *,
    ttl: float = CLAIM_TTL,
    held: bool = False,
    refresh: bool = False,
    redis_tier: bool = True,
) -> AsyncIterator[Runner]:
    """A runner's client on `server` and `redis`, its claims living `ttl` seconds; with
    `held`, its requests wait for `runner.backend.go` (see HeldBackend)."""
    settings = llm_settings(server)
    tier = RedisTier(host=redis.host, port=redis.port, prefix=PREFIX, timeout=PATIENT)
    tiers: list[CacheTier] = [MemoryTier(), tier] if redis_tier else [MemoryTier()]
    cache = CacheManager(tiers)
    link = RedisLink(
        host=redis.host,
        port=redis.port,
        prefix=PREFIX,
        timeout=PATIENT,
        purpose="Redis for the state shared between builds",
    )
    try:
        async with httpx.AsyncClient() as http:
            backend = None
            if held:
                endpoint = Router(settings).endpoint(settings.provider)
                backend = HeldBackend(HTTPBackend(endpoint, http, settings.timeout))
            async with AsyncLLMClient(
                settings,
                cache=cache,
                cache_refresh=refresh,
                http_client=http,
                backend=backend,
                shared=link,
            ) as client:
                client.claims = Claims(link, ttl=ttl, sleep=client.sleep)
                yield Runner(client, tier, link, backend)
    finally:
        await tier.aclose()
        await link.aclose()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (really, briefly) for `condition`; fail, not hang, if it never comes."""
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.005)


def lock_count(redis: RedisServer) -> int:
    with redis.client() as client:
        return len(list(client.scan_iter(match=f"{PREFIX}lock:*")))


def events(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(1 for r in caplog.records if getattr(r, "event", None) == name)


# --------------------------------------------------------------------------- one call


async def test_two_runners_asking_the_same_prompts_at_once_make_one_call_each(
    fake_llm: FakeLLMServer, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.latency = CALL_LATENCY
    prompts = [f"Describe item number {n}." for n in range(5)]
    answers: dict[tuple[int, str], LLMResponse] = {}

    async with runner(fake_llm, redis_db) as first, runner(fake_llm, redis_db) as second:

        async def ask(number: int, who: Runner, prompt: str) -> None:
            answers[number, prompt] = await who.ask(prompt)

        with caplog.at_level(logging.INFO, logger="trinity"):
            async with anyio.create_task_group() as group:
                for prompt in prompts:
                    group.start_soon(ask, 1, first, prompt)
                    group.start_soon(ask, 2, second, prompt)

    assert fake_llm.chat_count == len(prompts)
    assert sorted(fake_llm.answered_prompts) == sorted(prompts)
    for prompt in prompts:
        pair = [answers[1, prompt], answers[2, prompt]]
        assert pair[0].text == pair[1].text
        assert sorted(str(a.cache_tier) for a in pair) == ["None", "redis"], prompt
        waiter = next(a for a in pair if a.cache_tier == "redis")
        assert (waiter.cost, waiter.attempts) == (0.0, 0)
    assert first.client.stats.calls + second.client.stats.calls == len(prompts)
    assert first.client.stats.cache_hits + second.client.stats.cache_hits == len(prompts)
    assert events(caplog, "llm_claim_wait") == len(prompts)
    assert lock_count(redis_db) == 0


async def test_a_runner_whose_holder_died_asks_itself_once_the_claim_expires(
    fake_llm: FakeLLMServer, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with runner(fake_llm, redis_db) as alone:
        request = alone.client.request("Who holds this?", max_tokens=40)
        name = alone.claims.name(alone.client.key(request))
        with redis_db.client() as client:
            client.set(name, "a-runner-killed-mid-call", px=300)

        with caplog.at_level(logging.INFO, logger="trinity"):
            response = await alone.client.complete(request)

    assert response.cache_tier is None
    assert fake_llm.chat_count == 1
    assert events(caplog, "llm_claim_wait") == events(caplog, "llm_claim_takeover") == 1
    assert lock_count(redis_db) == 0


async def test_the_heartbeat_keeps_a_call_longer_than_the_ttl_claimed(
    fake_llm: FakeLLMServer, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = 1.0
    fake_llm.latency = 2.5 * ttl
    answers: dict[str, LLMResponse] = {}
    async with (
        runner(fake_llm, redis_db, ttl=ttl) as holder,
        runner(fake_llm, redis_db, ttl=ttl) as waiter,
    ):

        async def ask(name: str, who: Runner) -> None:
            answers[name] = await who.ask("Take your time.")

        with caplog.at_level(logging.INFO, logger="trinity"):
            async with anyio.create_task_group() as group:
                group.start_soon(ask, "holder", holder)
                await until(lambda: lock_count(redis_db) == 1, "the holder claimed the key")
                group.start_soon(ask, "waiter", waiter)

    assert fake_llm.chat_count == 1
    assert [answers[n].cache_tier for n in ("holder", "waiter")] == [None, "redis"]
    assert events(caplog, "llm_claim_takeover") == events(caplog, "llm_claim_lost") == 0


async def test_a_holder_whose_call_fails_leaves_the_waiter_to_ask_itself(
    fake_llm: FakeLLMServer, redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_llm.latency = CALL_LATENCY
    fake_llm.fail_next(1, 400)  # the holder's request: refused, not retried
    outcomes: dict[str, LLMResponse | LLMError] = {}
    async with runner(fake_llm, redis_db) as holder, runner(fake_llm, redis_db) as waiter:

        async def ask(name: str, who: Runner) -> None:
            try:
                outcomes[name] = await who.ask("Refuse me once.")
            except LLMError as error:
                outcomes[name] = error

        with caplog.at_level(logging.INFO, logger="trinity"):
            async with anyio.create_task_group() as group:
                group.start_soon(ask, "holder", holder)
                await until(lambda: lock_count(redis_db) == 1, "the holder claimed the key")
                group.start_soon(ask, "waiter", waiter)

    assert isinstance(outcomes["holder"], LLMError)
    answer = outcomes["waiter"]
    assert isinstance(answer, LLMResponse) and answer.cache_tier is None
    assert answer.text.startswith("Generated answer")
    assert fake_llm.chat_count == 2
    assert events(caplog, "llm_claim_takeover") == 1


async def test_a_shared_answer_the_waiter_s_validator_refuses_is_asked_again(
    fake_llm: FakeLLMServer, redis_db: RedisServer
) -> None:
    fake_llm.latency = CALL_LATENCY

    def only_fresh(response: LLMResponse) -> None:
        if response.cache_tier is not None:
            raise MalformedResponseError("this block wants an answer of its own")

    answers: dict[str, LLMResponse] = {}
    async with runner(fake_llm, redis_db) as holder, runner(fake_llm, redis_db) as waiter:

        async def ask(name: str, who: Runner, **options: Any) -> None:
            answers[name] = await who.ask("Judge me.", **options)

        async with anyio.create_task_group() as group:
            group.start_soon(ask, "holder", holder)
            await until(lambda: lock_count(redis_db) == 1, "the holder claimed the key")
            group.start_soon(lambda: ask("waiter", waiter, validate=only_fresh))
            await until(lambda: waiter.claims.waiting == 1, "the waiter waits")

    assert answers["holder"].cache_tier is None
    assert answers["waiter"].cache_tier is None
    assert fake_llm.chat_count == 2


async def test_a_refreshing_runner_waits_on_no_one(
    fake_llm: FakeLLMServer, redis_db: RedisServer
) -> None:
    fake_llm.latency = CALL_LATENCY
    answers: dict[str, LLMResponse] = {}
    async with (
        runner(fake_llm, redis_db) as holder,
        runner(fake_llm, redis_db, refresh=True) as refresher,
    ):

        async def ask(name: str, who: Runner) -> None:
            answers[name] = await who.ask("Ask me again.")

        async with anyio.create_task_group() as group:
            group.start_soon(ask, "holder", holder)
            await until(lambda: lock_count(redis_db) == 1, "the holder claimed the key")
            group.start_soon(ask, "refresher", refresher)

        assert refresher.claims.waiting == 0
    assert [answers[n].cache_tier for n in ("holder", "refresher")] == [None, None]
    assert fake_llm.chat_count == 2


async def test_without_a_redis_tier_no_claim_is_taken(
    fake_llm: FakeLLMServer, redis_db: RedisServer
) -> None:
    async with runner(fake_llm, redis_db, redis_tier=False) as alone:
        # Nothing another process could wait for reaches Redis: claiming would only cost.
        await alone.ask("Mine alone.")
        with redis_db.client() as client:
            assert client.dbsize() == 0


# --------------------------------------------------------------------------- outages


async def test_redis_killed_while_a_runner_waits_lets_it_ask_at_once_with_no_new_warning(
    fake_llm: FakeLLMServer, own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = own_redis_server
    answers: dict[str, LLMResponse] = {}
    async with (
        runner(fake_llm, redis, held=True) as holder,
        runner(fake_llm, redis) as waiter,
    ):
        backend = holder.backend
        assert backend is not None

        async def ask(name: str, who: Runner) -> None:
            answers[name] = await who.ask("Wait for me.")

        with caplog.at_level(logging.INFO, logger="trinity"):
            async with anyio.create_task_group() as group:
                group.start_soon(ask, "holder", holder)
                await until(lambda: lock_count(redis) == 1, "the holder claimed the key")
                group.start_soon(ask, "waiter", waiter)
                await until(lambda: waiter.claims.waiting == 1, "the waiter waits")

                redis.kill()
                # The holder's call is still held back: the waiter cannot be waiting on it.
                await until(lambda: "waiter" in answers, "the waiter asked for itself")
                assert "holder" not in answers
                backend.go.set()

    assert [answers[n].cache_tier for n in ("holder", "waiter")] == [None, None]
    assert fake_llm.chat_count == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert {r.name for r in warnings} == {"trinity.cache.redislink"}
    links = [holder.tier.link, holder.link, waiter.tier.link, waiter.link]
    # One warning per link that failed (the cache tier's, the shared state's), no more.
    assert len(warnings) == sum(link.breaker.openings for link in links)
    assert all(link.breaker.openings <= 1 for link in links)


# --------------------------------------------------------------------------- two processes


def test_two_builds_at_once_ask_each_prompt_once(
    site_project: SiteProject, redis_db: RedisServer, tmp_path: Path
) -> None:
    """Two `trinity build` processes of one site into two output folders, started together,
    share the Redis tier (and no disk tier): every block reaches the server once."""
    site_project.update_settings("cache", tiers=["memory", "redis"])
    data = site_project.settings()
    data["cache"]["redis"]["timeout"] = PATIENT
    site_project.write_settings(data)
    site_project.server.latency = CALL_LATENCY
    outputs = [tmp_path / "out-a", tmp_path / "out-b"]
    env = subprocess_env(redis_db.environ)
    builds = [
        subprocess.Popen(
            [sys.executable, "-m", "trinity", "build", "--project", str(site_project.root),
             "--output", str(output)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for output in outputs
    ]  # fmt: skip
    for build in builds:
        stdout, stderr = build.communicate(timeout=120)
        assert build.returncode == 0, stdout + stderr

    reports = [site_project.report(output)["totals"] for output in outputs]
    assert site_project.server.chat_count == BLOCKS
    assert sum(r["llm_calls"] for r in reports) == BLOCKS
    assert sum(r["cache_hits_by_tier"].get("redis", 0) for r in reports) == BLOCKS
    assert sum(r["cache_hits"] for r in reports) == BLOCKS
    for output in outputs:
        assert (output / "index.html").is_file()
    assert lock_count(redis_db) == 0
