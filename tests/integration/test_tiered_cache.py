"""The tiered answer cache in real builds: the loopback fake LLM server, a real redis-server.

Covered: a Redis that dies or freezes in the middle of a build (one warning, no timeout
per request), promotion between memory, Redis and disk, the report's cache counts, in-flight
coalescing of identical prompts (their answer, their failure, and a lookup that misses just
before the answer is cached), answers shared with a second process and a second project
folder, and answers that fail validation never being cached.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.sitekit import BLOCKS, SiteProject
from tests.redisserver import RedisServer
from trinity import build_site
from trinity.build import build_project
from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisTier
from trinity.errors import BuildFailed
from trinity.llm.client import IN_FLIGHT, AsyncLLMClient, Backend
from trinity.llm.http import HTTPBackend
from trinity.llm.routing import Router
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.manifest import MANIFEST_FILE
from trinity.project import Project, prepare
from trinity.report import BlockResult, BuildReport

PREFIX = "trinity:"
PATIENT_REDIS_TIMEOUT = 5.0
ANSWER = re.compile(r"Generated answer ([0-9a-f]{12})\.")


# --------------------------------------------------------------------------- helpers


class CountingRedisTier(RedisTier):
    """A RedisTier that knows how many of its calls were in flight at once, at most."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.in_flight = 0
        self.peak_in_flight = 0

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1

    async def get_async(self, key: str) -> Any | None:
        with self._counted():
            return await super().get_async(key)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        with self._counted():
            await super().set_async(key, value, ttl)


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

    def layout_checked(self, done: int, total: int) -> None:
        pass


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
    gate: Callable[[AsyncLLMClient], bool] | None = None,
) -> BuildReport:
    """Build `project` through a client on `cache`, then close the cache.

    With a `gate`, requests to the server wait until `gate(client)` is true.
    """

    async def run() -> BuildReport:
        llm = project.settings.llm
        made: list[AsyncLLMClient] = []
        try:
            async with httpx.AsyncClient(timeout=llm.timeout) as http:
                backend = None
                if gate is not None:
                    main = HTTPBackend(Router(llm).endpoint(llm.provider), http, llm.timeout)
                    backend = GatedBackend(main, lambda: gate(made[0]))
                async with AsyncLLMClient(
                    llm,
                    cache=cache,
                    cache_ttl=project.settings.cache.ttl,
                    http_client=http,
                    backend=backend,
                ) as client:
                    made.append(client)
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
    # Patient enough that only the outage can trip it; a frozen server costs this once.
    return CountingRedisTier(host=server.host, port=server.port, prefix=PREFIX, timeout=1.0)


def trinity_keys(server: RedisServer) -> list[bytes]:
    with server.client() as client:
        return list(client.scan_iter(match=PREFIX + "*"))


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
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


def patient_redis(site: SiteProject) -> None:
    """A Redis timeout that a busy test machine cannot trip (the default is 0.5 s)."""
    data = site.settings()
    data["cache"]["redis"]["timeout"] = PATIENT_REDIS_TIMEOUT
    site.write_settings(data)


@pytest.fixture
def shared_redis(site_project: SiteProject, redis_db: RedisServer) -> RedisServer:
    """The session's Redis, emptied, with the example site set to wait for it patiently."""
    patient_redis(site_project)
    return redis_db


@pytest.fixture
def big_site(site_project: SiteProject) -> SiteProject:
    """The site as 100 pages of one block each, every one with its own prompt."""
    site_project.use_collection(100)
    return site_project


# --------------------------------------------------------------------------- Redis outages

# The build's worker pool (2 x llm.concurrency + 8, with the example's concurrency of 4)
# bounds the Redis calls on their way at once: far fewer than the 100 pages.
MOST_REDIS_CALLS_AT_ONCE = 16
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
    assert project.settings.llm.concurrency == 4
    redis = counting_redis(own_redis_server)
    cache = manager_for(project, redis)
    before_outage: list[tuple[int, int]] = []  # (keys in Redis, failed calls)

    def outage_now() -> None:
        with own_redis_server.client() as client:
            before_outage.append((int(client.dbsize()), redis.failed_calls))
        OUTAGES[outage](own_redis_server)

    observer = AfterBlocks(20, outage_now)

    with caplog.at_level(logging.WARNING, logger="trinity"):
        report = build_with(project, cache, observer=observer)

    assert observer.done == 100
    assert (report.llm_calls, report.failures) == (100, [])
    for page_file in collection_pages(100):
        assert (big_site.output / page_file).is_file(), page_file
    assert big_site.server.chat_count == 100

    # Redis worked until the outage: it held the first blocks' answers, nothing had failed.
    ((keys, failed),) = before_outage
    assert (keys >= 20, failed) == (True, 0)
    (warning,) = warnings_logged(caplog)
    assert warning.name == "trinity.cache.redislink"
    assert f"{own_redis_server.host}:{own_redis_server.port}" in warning.getMessage()
    assert redis.breaker.is_open
    # Every call that failed was on its way when the first failure opened the breaker;
    # after that, none waited on Redis again. Without the breaker each of the 80 blocks
    # left would have failed a lookup and a write.
    assert 1 <= redis.failed_calls <= redis.peak_in_flight <= MOST_REDIS_CALLS_AT_ONCE
    # The disk tier went on as if nothing had happened.
    assert disk_entries(project) == 100


# --------------------------------------------------------------------------- promotion


def test_a_disk_hit_fills_redis_again_after_a_flush(
    site_project: SiteProject, shared_redis: RedisServer
) -> None:
    first = build_site(site_project.root, environ=shared_redis.environ)
    assert first.llm_calls == BLOCKS
    assert len(trinity_keys(shared_redis)) == BLOCKS
    with shared_redis.client() as client:
        client.flushall()

    project = prepare(site_project.root, environ=shared_redis.environ)
    cache = manager_for(project)
    report = build_with(project, cache)

    assert report.hits_by_tier == {"disk": BLOCKS}
    assert site_project.server.chat_count == BLOCKS
    assert len(trinity_keys(shared_redis)) == BLOCKS
    assert memory_entries(cache) == BLOCKS


def test_a_redis_hit_fills_memory_when_the_disk_is_gone(
    site_project: SiteProject, shared_redis: RedisServer
) -> None:
    build_site(site_project.root, environ=shared_redis.environ)
    project = prepare(site_project.root, environ=shared_redis.environ)
    shutil.rmtree(project.settings.cache.disk.directory)

    cache = manager_for(project)
    report = build_with(project, cache)

    assert report.hits_by_tier == {"redis": BLOCKS}
    assert site_project.server.chat_count == BLOCKS
    assert memory_entries(cache) == BLOCKS
    # The next build through the same manager finds every answer in memory.
    again = build_with(project, cache)
    assert again.hits_by_tier == {"memory": BLOCKS}


def test_a_build_through_a_reused_cache_reports_its_own_lookups(site_project: SiteProject) -> None:
    project = prepare(site_project.root, environ={})
    cache = manager_for(project)
    first = build_with(project, cache)
    assert first.cache == {"lookups": BLOCKS, "misses": BLOCKS, "hits": {"memory": 0, "disk": 0}}

    again = build_with(project, cache)

    assert again.hits_by_tier == {"memory": BLOCKS}
    assert again.cache == {"lookups": BLOCKS, "misses": 0, "hits": {"memory": BLOCKS, "disk": 0}}


# --------------------------------------------------------------------------- coalescing

SAME_PROMPT = "Write one line about the studio."
SAME_PAGES = 50


def same_prompt_pages(pages: list[dict[str, Any]]) -> None:
    """`pages` made SAME_PAGES plain pages at the paths of `collection_pages`."""
    pages[:] = [
        {
            "slug": page_file.removesuffix("/index.html"),
            "title": f"Page {n}",
            "blocks": {"summary": {"format": "text", "prompt": SAME_PROMPT}},
        }
        for n, page_file in enumerate(collection_pages(SAME_PAGES), 1)
    ]


@pytest.fixture
def same_prompt_site(site_project: SiteProject) -> SiteProject:
    """50 pages whose one block asks the same prompt; enough workers to ask it at once.

    Plain pages, not a collection's: a collection page's prompt ends with its item's facts,
    so no two of its pages ask the same.
    """
    site_project.edit_pages(same_prompt_pages)
    site_project.update_settings("llm", concurrency=25)
    return site_project


def all_waiting(client: AsyncLLMClient) -> bool:
    """True once every other block waits on the one request in flight."""
    return client.in_flight.waiting >= SAME_PAGES - 1


def test_fifty_pages_asking_one_prompt_make_one_request(same_prompt_site: SiteProject) -> None:
    project = prepare(same_prompt_site.root, environ={})
    cache = manager_for(project)

    report = build_with(project, cache, gate=all_waiting)

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
        build_with(project, cache, gate=all_waiting)

    assert server.chat_count == 1
    failures = caught.value.failures
    expected_pages = [f"projects/item-{n:03d}" for n in range(1, SAME_PAGES + 1)]
    assert sorted(page for page, _, _ in failures) == expected_pages
    assert {block for _, block, _ in failures} == {"summary"}
    (reason,) = {reason for _, _, reason in failures}
    assert "HTTP 400" in reason
    assert not same_prompt_site.output.exists()


class LateDisk(DiskTier):
    """A disk tier whose first lookup misses at once, but whose caller resumes only when
    `release` is set: a read that finished before a write, scheduled after it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.missed = anyio.Event()
        self.release = anyio.Event()
        self._held = False

    async def get_async(self, key: str) -> Any | None:
        value = await super().get_async(key)
        if not self._held:
            self._held = True
            self.missed.set()
            await self.release.wait()
        return value


def test_a_caller_arriving_during_the_lookup_waits_and_shares_the_answer(
    site_project: SiteProject, tmp_path: Path
) -> None:
    server = site_project.server
    llm = prepare(site_project.root, environ={}).settings.llm
    disk = LateDisk(tmp_path / "late-disk")
    answers: list[LLMResponse] = []

    async def scenario() -> None:
        with anyio.fail_after(10):
            await both_ask()

    async def both_ask() -> None:
        async with AsyncLLMClient(llm, cache=CacheManager([MemoryTier(), disk])) as client:
            request = client.request(SAME_PROMPT)

            async def ask() -> None:
                answers.append(await client.complete(request))

            async with anyio.create_task_group() as group:
                group.start_soon(ask)  # misses memory and disk, then waits to go on
                await disk.missed.wait()
                # A second block with the same prompt arrives while the first is still
                # looking: it must wait for the first, not look up and ask on its own.
                group.start_soon(ask)
                while client.in_flight.waiting < 1:
                    await anyio.sleep(0.001)
                disk.release.set()

    try:
        anyio.run(scenario)
    finally:
        disk.close()

    assert len(answers) == 2
    assert answers[0].text == answers[1].text
    assert server.chat_count == 1, "the first caller asked again for an answer now cached"


# --------------------------------------------------------------------------- sharing


def test_a_second_process_makes_no_llm_calls(site_project: SiteProject) -> None:
    first = build_site(site_project.root, environ={})
    assert first.llm_calls == BLOCKS
    (site_project.output / MANIFEST_FILE).unlink()  # else the site is kept, the cache unread

    result = site_project.run("build", "--project", site_project.root)

    assert result.exit_code == 0, result.describe()
    report = site_project.report()
    assert report["totals"]["llm_calls"] == 0
    assert report["totals"]["cache_hits_by_tier"] == {"disk": BLOCKS}
    assert report["cache"]["hits"] == {"memory": 0, "disk": BLOCKS}
    assert site_project.server.chat_count == BLOCKS


def test_projects_sharing_only_redis_share_answers(
    site_project: SiteProject, shared_redis: RedisServer, tmp_path: Path
) -> None:
    site_project.update_settings("cache", tiers=["redis"])
    first = build_site(site_project.root, environ=shared_redis.environ)
    assert first.llm_calls == BLOCKS
    other = tmp_path / "elsewhere" / "site"
    shutil.copytree(site_project.root, other, ignore=shutil.ignore_patterns("output"))

    report = build_site(other, environ=shared_redis.environ)

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
