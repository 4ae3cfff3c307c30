"""The tiered answer cache in real builds: the loopback fake LLM server, a real redis-server.

Covered: a Redis that dies or freezes in the middle of a build (one warning, no timeout
per request), promotion between memory, Redis and disk, in-flight coalescing of identical
prompts (their answer and their failure), answers shared with a second process and a
second project folder, and answers that fail validation never being cached.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.sitekit import BLOCKS, SiteProject
from tests.redisserver import RedisServer, free_port
from trinity import build_site
from trinity.build import BlockResult, BuildReport, Project, build_project, prepare
from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.redis import RedisTier
from trinity.errors import BuildFailed
from trinity.llm.client import IN_FLIGHT, AsyncLLMClient, Backend
from trinity.llm.http import HTTPBackend
from trinity.llm.types import LLMRequest, LLMResponse

PREFIX = "trinity:"
ANSWER = re.compile(r"Generated answer ([0-9a-f]{12})\.")


# --------------------------------------------------------------------------- helpers


class CountingRedisTier(RedisTier):
    """A RedisTier that knows how many of its calls were in flight at once, at most."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.in_flight = 0
        self.peak_in_flight = 0

    async def _counted(self, call: Callable[[], Any]) -> Any:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await call()
        finally:
            self.in_flight -= 1

    async def get_async(self, key: str) -> Any | None:
        return await self._counted(lambda: super(CountingRedisTier, self).get_async(key))

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self._counted(lambda: super(CountingRedisTier, self).set_async(key, value, ttl))


class AfterBlocks:
    """A build observer that runs `action` once, when `count` blocks are done."""

    def __init__(self, count: int, action: Callable[[], None]) -> None:
        self.count = count
        self.action = action
        self.done = 0

    def planned(self, report: BuildReport) -> None:
        pass

    def block_done(self, result: BlockResult) -> None:
        self.done += 1
        if self.done == self.count:
            self.action()


class GatedBackend:
    """The main endpoint over HTTP, holding every request back until `ready()` is true.

    Lets a test wait until every block has passed its cache lookup (and so is either
    the one request on the wire or waiting for it) without sleeping for a guessed time.
    """

    def __init__(self, inner: Backend, ready: Callable[[], bool]) -> None:
        self.inner = inner
        self.ready = ready

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        with anyio.fail_after(10):
            while not self.ready():
                await anyio.sleep(0.001)
        return await self.inner.send(request, api_key)

    async def aclose(self) -> None:
        await self.inner.aclose()


def build_with(
    project: Project,
    cache: CacheManager,
    *,
    observer: AfterBlocks | None = None,
    gate: Callable[[], bool] | None = None,
) -> BuildReport:
    """Build `project` through a client on `cache`, then close the cache."""

    async def run() -> BuildReport:
        llm = project.settings.llm
        try:
            async with httpx.AsyncClient(timeout=llm.timeout) as http:
                backend = None
                if gate is not None:
                    main = HTTPBackend(llm.endpoint(llm.provider), http, llm.timeout)
                    backend = GatedBackend(main, gate)
                async with AsyncLLMClient(
                    llm,
                    cache=cache,
                    cache_ttl=project.settings.cache.ttl,
                    http_client=http,
                    backend=backend,
                ) as client:
                    return await build_project(project, client=client, observer=observer)
        finally:
            await cache.aclose()

    return anyio.run(run)


def manager_for(project: Project, redis: RedisTier | None = None) -> CacheManager:
    """The tiers the project's settings enable, with `redis` standing in for theirs."""
    manager = CacheManager.from_settings(project.settings.cache)
    if redis is not None:
        manager.tiers = [redis if tier.name == "redis" else tier for tier in manager.tiers]
    return manager


def counting_redis(server: RedisServer) -> CountingRedisTier:
    return CountingRedisTier(host=server.host, port=server.port, prefix=PREFIX)


def trinity_keys(server: RedisServer) -> list[bytes]:
    with server.client() as client:
        return list(client.scan_iter(match=PREFIX + "*"))


def redis_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def rendered_answers(site: SiteProject, page_files: list[str]) -> list[str]:
    """The digest of the fake server's answer on each page."""
    digests = []
    for page_file in page_files:
        found = ANSWER.findall(site.html(page_file))
        assert len(found) == 1, (page_file, found)
        digests.extend(found)
    return digests


def disk_entries(project: Project) -> int:
    disk = DiskTier(project.settings.cache.disk.directory)
    try:
        return len(disk)
    finally:
        disk.close()


def memory_entries(cache: CacheManager) -> int:
    memory = cache.tier("memory")
    assert memory is not None
    return memory.usage().entries


def collection_pages(count: int) -> list[str]:
    return [f"projects/item-{n:03d}/index.html" for n in range(1, count + 1)]


@pytest.fixture
def big_site(site_project: SiteProject, own_redis_server: RedisServer) -> Iterator[SiteProject]:
    site_project.use_collection(100)
    yield site_project


# --------------------------------------------------------------------------- Redis outages

OUTAGES = {
    "killed": RedisServer.kill,
    "paused": RedisServer.pause,
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_a_redis_outage_mid_build_costs_one_warning_and_no_pile_up(
    big_site: SiteProject,
    own_redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    project = prepare(big_site.root, environ=own_redis_server.environ)
    assert project.settings.cache.tiers == ("memory", "redis", "disk")
    redis = counting_redis(own_redis_server)
    cache = manager_for(project, redis)
    observer = AfterBlocks(20, lambda: OUTAGES[outage](own_redis_server))

    with caplog.at_level(logging.WARNING, logger="trinity"):
        report = build_with(project, cache, observer=observer)

    assert observer.done == 100
    assert (report.llm_calls, report.failures) == (100, [])
    for page_file in collection_pages(100):
        assert (big_site.output / page_file).is_file(), page_file
    assert big_site.server.chat_count == 100

    (warning,) = redis_warnings(caplog)
    assert warning.name == "trinity.cache.redis"
    assert f"{own_redis_server.host}:{own_redis_server.port}" in warning.getMessage()
    assert redis.breaker.is_open
    # Every call that failed was on its way when the first failure opened the breaker;
    # after that, none waited on Redis again. Without the breaker each of the 80 blocks
    # left would have failed a lookup and a write.
    assert 1 <= redis.failed_calls <= redis.peak_in_flight
    assert redis.peak_in_flight < 20
    # Redis held the answers of the first blocks, then was left alone: 100 were written
    # to disk.
    assert disk_entries(project) == 100


# --------------------------------------------------------------------------- promotion


def test_a_disk_hit_fills_redis_again_after_a_flush(
    site_project: SiteProject, redis_db: RedisServer
) -> None:
    first = build_site(site_project.root, environ=redis_db.environ)
    assert first.llm_calls == BLOCKS
    assert len(trinity_keys(redis_db)) == BLOCKS
    with redis_db.client() as client:
        client.flushall()

    project = prepare(site_project.root, environ=redis_db.environ)
    cache = manager_for(project)
    report = build_with(project, cache)

    assert report.hits_by_tier == {"disk": BLOCKS}
    assert site_project.server.chat_count == BLOCKS
    assert len(trinity_keys(redis_db)) == BLOCKS
    assert memory_entries(cache) == BLOCKS


def test_a_redis_hit_fills_memory_when_the_disk_is_gone(
    site_project: SiteProject, redis_db: RedisServer
) -> None:
    build_site(site_project.root, environ=redis_db.environ)
    project = prepare(site_project.root, environ=redis_db.environ)
    shutil.rmtree(project.settings.cache.disk.directory)

    cache = manager_for(project)
    report = build_with(project, cache)

    assert report.hits_by_tier == {"redis": BLOCKS}
    assert site_project.server.chat_count == BLOCKS
    assert memory_entries(cache) == BLOCKS
    # The next build through the same manager finds every answer in memory.
    again = build_with(project, cache)
    assert again.hits_by_tier == {"memory": BLOCKS}


# --------------------------------------------------------------------------- coalescing

SAME_PROMPT = "Write one line about the studio."
SAME_PAGES = 50


@pytest.fixture
def same_prompt_site(site_project: SiteProject) -> SiteProject:
    """50 pages whose one block asks the same prompt; enough workers to ask it at once."""
    site_project.use_collection(SAME_PAGES)
    site_project.edit_pages(
        lambda pages: pages[0]["blocks"]["summary"].update(prompt=SAME_PROMPT)
    )
    site_project.update_settings("llm", concurrency=25)
    return site_project


def all_looked_up(cache: CacheManager) -> Callable[[], bool]:
    """True once every block has missed the cache (and so waits on the one request)."""
    return lambda: cache.misses >= SAME_PAGES


def test_fifty_pages_asking_one_prompt_make_one_request(same_prompt_site: SiteProject) -> None:
    project = prepare(same_prompt_site.root, environ={})
    cache = manager_for(project)

    report = build_with(project, cache, gate=all_looked_up(cache))

    assert same_prompt_site.server.chat_count == 1
    assert report.llm_calls == 1
    assert report.hits_by_tier == {IN_FLIGHT: SAME_PAGES - 1}
    assert report.attempts == 1  # the shared answers sent nothing
    totals = same_prompt_site.report()["totals"]
    assert totals["cache_hits_by_tier"] == {IN_FLIGHT: SAME_PAGES - 1}
    digests = rendered_answers(same_prompt_site, collection_pages(SAME_PAGES))
    assert len(digests) == SAME_PAGES
    assert len(set(digests)) == 1


def test_the_failure_of_the_one_request_reaches_every_page(same_prompt_site: SiteProject) -> None:
    server = same_prompt_site.server
    server.fail_next(1, 400)  # not retryable: one request, one failure
    project = prepare(same_prompt_site.root, environ={})
    cache = manager_for(project)

    with pytest.raises(BuildFailed) as caught:
        build_with(project, cache, gate=all_looked_up(cache))

    assert server.chat_count == 1
    failures = caught.value.failures
    expected_pages = [f"projects/item-{n:03d}" for n in range(1, SAME_PAGES + 1)]
    assert sorted(page for page, _, _ in failures) == expected_pages
    assert {block for _, block, _ in failures} == {"summary"}
    (reason,) = {reason for _, _, reason in failures}
    assert "HTTP 400" in reason
    assert not same_prompt_site.output.exists()


# --------------------------------------------------------------------------- sharing


def test_a_second_process_makes_no_llm_calls(site_project: SiteProject) -> None:
    first = build_site(site_project.root, environ={})
    assert first.llm_calls == BLOCKS

    result = site_project.run("build", "--project", site_project.root)

    assert result.exit_code == 0, result.describe()
    report = site_project.report()
    assert report["totals"]["llm_calls"] == 0
    assert report["totals"]["cache_hits_by_tier"] == {"disk": BLOCKS}
    assert report["cache"]["hits"] == {"memory": 0, "disk": BLOCKS}
    assert site_project.server.chat_count == BLOCKS


def test_projects_sharing_only_redis_share_answers(
    site_project: SiteProject, redis_db: RedisServer, tmp_path: Path
) -> None:
    site_project.update_settings("cache", tiers=["redis"])
    first = build_site(site_project.root, environ=redis_db.environ)
    assert first.llm_calls == BLOCKS
    other = tmp_path / "elsewhere" / "site"
    shutil.copytree(site_project.root, other, ignore=shutil.ignore_patterns("output"))

    report = build_site(other, environ=redis_db.environ)

    assert (report.llm_calls, report.hits_by_tier) == (0, {"redis": BLOCKS})
    assert site_project.server.chat_count == BLOCKS
    assert (other / "output" / "index.html").is_file()
    for root in (site_project.root, other):
        assert not (root / ".cache").exists(), root


# --------------------------------------------------------------------------- validation

CUT_OFF_JSON = '{"facts": ["one", "two"]}'


def answer_empty(site: SiteProject) -> None:
    site.server.script("Say it", "")


def answer_not_json(site: SiteProject) -> None:
    site.server.script("Say it", "Sorry, no JSON today.")


def answer_cut_off(site: SiteProject) -> None:
    # Half of this still parses: only the finish reason "length" can refuse it.
    padded = CUT_OFF_JSON + " " * len(CUT_OFF_JSON)
    site.server.script("Say it", padded)
    site.server.fail_next(1, kind="truncated")


@pytest.mark.parametrize(
    ("block_format", "answer", "reason"),
    [
        ("text", answer_empty, "empty answer"),
        ("json", answer_not_json, "not valid JSON"),
        ("json", answer_cut_off, "cut off"),
    ],
    ids=["empty", "json-that-does-not-parse", "json-cut-off-at-length"],
)
def test_an_answer_that_fails_validation_is_not_cached(
    site_project: SiteProject,
    block_format: str,
    answer: Callable[[SiteProject], None],
    reason: str,
) -> None:
    page = {
        "slug": "about",
        "title": "About",
        "blocks": {"answer": {"format": block_format, "prompt": "Say it in a few words."}},
    }
    data = site_project.pages()
    data["pages"] = [page]
    site_project.write_pages(data)
    server = site_project.server
    answer(site_project)
    project = prepare(site_project.root, environ={})

    with pytest.raises(BuildFailed) as caught:
        build_site(site_project.root, environ={})

    ((_, _, why),) = caught.value.failures
    assert reason in why
    asked = server.chat_count
    assert asked >= 1
    assert disk_entries(project) == 0

    server.clear_scripts()
    report = build_site(site_project.root, environ={})

    assert report.llm_calls == 1
    assert server.chat_count == asked + 1
    assert disk_entries(project) == 1
