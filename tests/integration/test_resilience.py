"""The resilient LLM client end to end: builds through `build_project` against the loopback
fake server, with a virtual clock so that no backoff, Retry-After, breaker timeout or rate
limit is ever really waited for.

Covered: which failures are retried (and never more than three times a request), the
server's Retry-After and its cap, the circuit breaker, a 200-page build against a flaky
server and its rerun, per-key rate limits, and aliases with fallbacks on two servers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from tests.conftest import ConnectLog
from tests.e2e.sitekit import MODEL, SiteProject
from tests.fakeclock import FakeClock
from tests.fakellm import FakeLLMServer, RecordedRequest
from trinity.build import build_project
from trinity.cache.manager import CacheManager
from trinity.errors import BuildFailed
from trinity.llm.breaker import CircuitBreaker
from trinity.llm.client import AsyncLLMClient
from trinity.llm.http import HTTPBackend
from trinity.llm.routing import Router
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.project import Project, prepare
from trinity.report import BuildReport

MAX_ATTEMPTS = 3  # llm.retry.attempts by default
BREAKER_THRESHOLD = 5  # llm.breaker.failure_threshold by default
BREAKER_TIMEOUT = 60.0  # llm.breaker.timeout by default


# --------------------------------------------------------------------------- virtual time


class VirtualTime(FakeClock):
    """A clock that moves only when a task sleeps, and then at once.

    `sleep(s)` moves the clock to (the time it was called) + s, never back: tasks that
    sleep together wake together rather than adding up their waits. Before it moves the
    clock, it lets every request already on the wire arrive at the server (see
    `VirtualTransport`), so a server reading this clock stamps each request with the
    time it was sent, not a later one.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        super().__init__(start)
        self.in_flight = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake = self.now + max(0.0, seconds)
        while self.in_flight:
            await anyio.sleep(0.0005)  # real, tiny: the request is on its way
        self.now = max(self.now, wake)
        await anyio.lowlevel.checkpoint()


class VirtualTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, counting requests in flight for `VirtualTime`."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.time.in_flight += 1
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.time.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


class VirtualBackend:
    """The main endpoint's HTTPBackend, in flight for `VirtualTime` until `send` returns.

    Longer than the transport: the client reads an answer's rate-limit headers right after
    `send` returns, and must do so at the time the answer came, not after a sleeper moved
    the clock on (a reset "in 60 s" would then end a minute late).
    """

    def __init__(self, inner: HTTPBackend, time: VirtualTime) -> None:
        self.inner = inner
        self.time = time

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        self.time.in_flight += 1
        try:
            return await self.inner.send(request, api_key)
        finally:
            self.time.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


# --------------------------------------------------------------------------- harness


class Harness:
    """A project on the fake server, built in process with a virtual clock.

    `env` is the whole environment the settings see (nothing is inherited). Clients made
    by `client()` share the clock; builds by `build()` make their own client unless given
    one (the breaker, limits and retry budget live in a client).
    """

    def __init__(self, site: SiteProject, env: Mapping[str, str] | None = None) -> None:
        self.site = site
        self.server = site.server
        self.env = dict(env or {})
        self.time = VirtualTime()
        self.clients: list[AsyncLLMClient] = []

    def settings(self, **llm: Any) -> None:
        self.site.update_settings("llm", **llm)

    def prepare(self) -> Project:
        return prepare(self.site.root, environ=self.env)

    @asynccontextmanager
    async def client(self, project: Project) -> Any:
        settings = project.settings
        cache = CacheManager.from_settings(settings.cache) if settings.cache.enabled else None
        llm = settings.llm
        http = httpx.AsyncClient(transport=VirtualTransport(self.time), timeout=llm.timeout)
        main = HTTPBackend(Router(llm).endpoint(llm.provider), http, llm.timeout)
        try:
            async with AsyncLLMClient(
                llm,
                cache=cache,
                cache_ttl=settings.cache.ttl,
                http_client=http,
                backend=VirtualBackend(main, self.time),
                clock=self.time,
                sleep=self.time.sleep,
                random=lambda: 0.5,
            ) as client:
                self.clients.append(client)
                yield client
        finally:
            await http.aclose()
            if cache is not None:
                cache.close()

    async def build_async(
        self, client: AsyncLLMClient | None = None, *, keep_going: bool = False
    ) -> BuildReport:
        project = self.prepare()
        if client is not None:
            return await build_project(project, client=client, keep_going=keep_going)
        async with self.client(project) as own:
            return await build_project(project, client=own, keep_going=keep_going)

    def build(self, *, keep_going: bool = False) -> BuildReport:
        return anyio.run(lambda: self.build_async(keep_going=keep_going))

    def failing_build(self) -> BuildFailed:
        with pytest.raises(BuildFailed) as caught:
            self.build()
        return caught.value

    @property
    def stats(self) -> Any:
        return self.clients[-1].stats


def breaker_of(client: AsyncLLMClient, provider: str) -> CircuitBreaker:
    """The circuit breaker of a provider's endpoint, on the route the client keeps for it."""
    return client._route(provider).breaker


def user_message(request: RecordedRequest) -> str:
    messages = [m for m in request.body["messages"] if m["role"] == "user"]
    content = messages[-1]["content"]
    assert isinstance(content, str)
    return content


def per_prompt(server: FakeLLMServer) -> Counter[str]:
    """How many times the server was asked each prompt (faulted requests included)."""
    return Counter(user_message(r) for r in server.chat_requests)


def assert_pages_correct(site: SiteProject) -> None:
    expected = site.expected_digests()
    assert expected
    for page, digests in expected.items():
        html = site.html(page)
        for digest in digests:
            assert f"Generated answer {digest}." in html, page


@pytest.fixture
def harness(make_site_project: Callable[..., SiteProject]) -> Harness:
    """The example project on the fake server, talking OpenAI (keys go in a Bearer header)."""
    return Harness(make_site_project(provider="openai"))


@contextmanager
def second_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- retry rules

# One request at a time, so faults queued at the server fall on one block's attempts in a
# row; a breaker that cannot trip here (the breaker has its own tests below).
SERIAL = {"concurrency": 1, "breaker": {"failure_threshold": 100}}

RETRIED: list[tuple[str, dict[str, Any], str]] = [
    *(
        (str(status), {"status": status}, f"HTTP {status}")
        for status in (408, 409, 500, 502, 503, 504)
    ),
    ("timeout", {"kind": "timeout", "hang": 1.0}, "no answer from"),
    ("reset", {"kind": "reset"}, "cannot reach"),
    ("drop", {"kind": "drop"}, "cannot reach"),
]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [pytest.param(fault, reason, id=name) for name, fault, reason in RETRIED],
)
def test_retryable_failures_are_retried_at_most_three_times(
    harness: Harness, fault: dict[str, Any], reason: str
) -> None:
    harness.site.use_collection(3)
    # Timeouts really wait (httpx's own timer): keep that wait short.
    harness.settings(**SERIAL, timeout=0.1 if fault.get("kind") == "timeout" else 30)
    # The first block asked fails all three attempts; the second fails twice, then is
    # answered; the third is answered at once.
    harness.server.fail_next(5, **fault)

    failed = harness.failing_build()

    assert len(failed.failures) == 1, failed.failures
    page, block, message = failed.failures[0]
    assert block == "summary"
    assert reason in message
    counts = per_prompt(harness.server)
    assert sorted(counts.values()) == [1, 3, 3]
    assert harness.server.chat_count == 7
    assert harness.server.answered_count == 2
    (failed_prompt,) = [p for p in counts if p not in harness.server.answered_prompts]
    assert counts[failed_prompt] == MAX_ATTEMPTS
    item = page.removeprefix("projects/").replace("-", " ").title()  # "Item 002"
    # The block's prompt, then the page's facts (trinity.plan.chat_prompt).
    assert failed_prompt.partition("\n\n")[0] == f"One line about {item}."
    assert (harness.stats.attempts, harness.stats.retries) == (7, 4)


@pytest.mark.parametrize("retry_after", [None, "2"])
def test_429s_are_waited_out_without_counting_as_attempts(
    harness: Harness, retry_after: str | None
) -> None:
    """A 429 says "slow down": eight in a row do not fail a block, nor spend the budget."""
    harness.site.use_collection(3)
    harness.settings(**SERIAL, retry={"budget": 0})
    headers = {"Retry-After": retry_after} if retry_after else None
    harness.server.fail_next(8, 429, headers=headers)

    report = harness.build()

    assert report.failures == []
    assert sorted(per_prompt(harness.server).values()) == [1, 1, 9]
    assert sorted(b.attempts for b in report.blocks) == [1, 1, 9]
    assert harness.clients[-1].retry_budget.retries == 0
    if retry_after:
        assert harness.time.sleeps.count(2.0) >= 8
    assert_pages_correct(harness.site)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried_nor_failed_over(harness: Harness, status: int) -> None:
    harness.site.use_collection(3)
    # A fallback that a retryable error would reach: a client error must not.
    harness.settings(**SERIAL, fallbacks={MODEL: ["backup-model"]})
    harness.server.fail_next(1, status)

    failed = harness.failing_build()

    assert len(failed.failures) == 1, failed.failures
    assert f"HTTP {status}" in failed.failures[0][2]
    assert sorted(per_prompt(harness.server).values()) == [1, 1, 1]
    assert {r.body["model"] for r in harness.server.chat_requests} == {MODEL}
    assert (harness.stats.retries, harness.stats.fallbacks) == (0, 0)
    assert harness.time.sleeps == []


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(harness: Harness, status: int) -> None:
    harness.site.use_collection(3)
    harness.settings(**SERIAL)
    harness.server.fail_next(1, status, headers={"Retry-After": "7"})
    started = harness.time.now

    report = harness.build()

    assert report.failures == []
    assert harness.server.chat_count == 3 + 1
    assert sorted(b.attempts for b in report.blocks) == [1, 1, 2]
    # The retry waited what the server asked, not its own backoff (0.25 s here); after a
    # 429 the key rested just as long, which that wait already covered.
    assert 7.0 in harness.time.sleeps
    assert sum(harness.time.sleeps) == pytest.approx(7.0)
    assert harness.time.now - started == pytest.approx(7.0)
    assert_pages_correct(harness.site)


def test_retry_after_above_the_cap_fails_over_without_sleeping(harness: Harness) -> None:
    harness.site.use_collection(3)
    harness.settings(**SERIAL, retry={"retry_after_cap": 30}, fallbacks={MODEL: ["backup-model"]})
    harness.server.fail_next(1, 503, headers={"Retry-After": "120"})

    report = harness.build()

    assert report.failures == []
    assert harness.time.sleeps == [], "nobody sat out the 120 s"
    models = Counter(b.model for b in report.blocks)
    assert models == {MODEL: 2, "backup-model": 1}
    (moved,) = [b for b in report.blocks if b.model == "backup-model"]
    assert moved.attempts == 1  # on the fallback; the primary's one attempt came before
    sent = [(user_message(r), r.body["model"]) for r in harness.server.chat_requests]
    asked_twice = [p for p, n in Counter(p for p, _ in sent).items() if n == 2]
    assert len(asked_twice) == 1
    assert [m for p, m in sent if p == asked_twice[0]] == [MODEL, "backup-model"]
    assert harness.stats.fallbacks == 1


def test_retry_after_above_the_cap_on_a_429_fails_over_to_another_server(
    harness: Harness,
) -> None:
    """A 429 rests the key that got it, so the fallback is on another endpoint's keys.

    One block: a request after it would find the primary's only key resting for 120 s,
    and wait for it in the key pool (the cap applies to retries, not to the pool).
    """
    with second_server() as backup:
        harness.site.use_collection(1)
        harness.settings(
            **SERIAL,
            retry={"retry_after_cap": 30},
            fallbacks={MODEL: ["ollama:backup-model"]},
            endpoints={"ollama": {"api_url": backup.url}},
        )
        harness.server.fail_next(1, 429, headers={"Retry-After": "120"})

        report = harness.build()

        assert report.failures == []
        assert harness.time.sleeps == []
        assert harness.server.chat_count == 1
        assert backup.chat_count == 1
        assert backup.chat_requests[0].body["model"] == "backup-model"
        assert [b.model for b in report.blocks] == ["backup-model"]
        assert_pages_correct(harness.site)


def test_settings_for_rate_limits_and_the_breaker_reach_the_client(harness: Harness) -> None:
    harness.settings(
        concurrency=6,
        retry={"rate_limit_wait": 42},
        breaker={"failure_threshold": 3, "failure_rate": 0.9, "window": 10, "timeout": 7},
    )

    async def scenario() -> None:
        async with harness.client(harness.prepare()) as client:
            breaker = breaker_of(client, "openai")
            assert (breaker.failure_threshold, breaker.failure_rate) == (3, 0.9)
            assert (breaker.window, breaker.timeout) == (10, 7)
            assert client.retry_policy.rate_limit_wait == 42
            assert client.pacing("openai").ceiling == 6

    anyio.run(scenario)


def test_429s_on_half_the_requests_cut_the_concurrency_and_spend_no_budget(
    harness: Harness,
) -> None:
    blocks, concurrency = 200, 8
    server = harness.server
    harness.site.use_collection(blocks)
    harness.settings(concurrency=concurrency)
    server.fail_rate(0.5, statuses=(429,), headers={"Retry-After": "1"}, seed=3)

    async def scenario() -> None:
        project = harness.prepare()
        async with harness.client(project) as client:
            report = await build_project(project, client=client)
            assert report.failures == []
            pacing = client.pacing("openai")
            assert pacing.cuts >= 1
            assert pacing.lowest < concurrency
            assert 1 <= pacing.limit <= concurrency
            assert client.retry_budget.retries == 0
            assert breaker_of(client, "openai").state == "closed"

    anyio.run(scenario)
    assert server.fault_count > 0.2 * blocks  # more than the error budget would allow
    assert server.answered_count == blocks
    assert server.max_in_flight <= concurrency
    assert_pages_correct(harness.site)


# --------------------------------------------------------------------------- breaker


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize("how", ["http-500", "dead-port"])
def test_breaker_stops_requests_to_a_failing_server(
    harness: Harness, loopback_only: ConnectLog, how: str, concurrency: int
) -> None:
    server = harness.server
    harness.site.use_collection(20)
    harness.settings(concurrency=concurrency)
    if how == "http-500":
        server.fail_rate(1.0, statuses=(500,))

        def reached() -> int:
            return server.chat_count

    else:
        dead = FakeLLMServer()
        dead.close()
        harness.settings(api_url=dead.url)

        def reached() -> int:
            return loopback_only.to_port(dead.port)

    # Up to concurrency - 1 attempts may be on the wire when the 5th failure opens it.
    most = BREAKER_THRESHOLD + concurrency - 1

    async def scenario() -> None:
        project = harness.prepare()
        async with harness.client(project) as client:
            started = harness.time.now
            with pytest.raises(BuildFailed) as caught:
                await build_project(project, client=client)
            assert len(caught.value.failures) == 20
            assert BREAKER_THRESHOLD <= reached() <= most
            if concurrency == 1:
                assert reached() == BREAKER_THRESHOLD
            reasons = [reason for _, _, reason in caught.value.failures]
            assert sum("circuit breaker" in r for r in reasons) >= 20 - BREAKER_THRESHOLD
            # Failing fast: nothing waited for the breaker, only the short backoffs.
            assert harness.time.now - started < 5
            assert breaker_of(client, "openai").state == "open"

            # Before the timeout, nothing at all reaches the server.
            before = reached()
            harness.time.advance(BREAKER_TIMEOUT / 2)
            with pytest.raises(BuildFailed):
                await build_project(project, client=client)
            assert reached() == before

            # After it, exactly one trial goes through; it fails, and the breaker reopens.
            harness.time.advance(BREAKER_TIMEOUT / 2)
            with pytest.raises(BuildFailed) as again:
                await build_project(project, client=client)
            assert len(again.value.failures) == 20
            assert reached() == before + 1
            assert breaker_of(client, "openai").state == "open"

    anyio.run(scenario)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_breaker_closes_after_a_successful_trial(harness: Harness, concurrency: int) -> None:
    server = harness.server
    harness.site.use_collection(20)
    harness.settings(concurrency=concurrency)
    server.fail_rate(1.0, statuses=(503,))

    async def scenario() -> None:
        project = harness.prepare()
        async with harness.client(project) as client:
            with pytest.raises(BuildFailed):
                await build_project(project, client=client)
            failed_requests = server.chat_count
            server.fail_rate(0)
            harness.time.advance(BREAKER_TIMEOUT)

            try:
                report = await build_project(project, client=client)
            except BuildFailed as caught:
                # While the one trial is in flight, requests beside it are refused.
                assert concurrency > 1
                for _, _, reason in caught.failures:
                    assert "half-open, a trial request is in flight" in reason
                report = await build_project(project, client=client)
            assert report.failures == []
            assert breaker_of(client, "openai").state == "closed"
            assert server.answered_count == 20
            assert server.chat_count == failed_requests + 20

    anyio.run(scenario)


# --------------------------------------------------------------------------- flaky server


@pytest.mark.parametrize(
    "budget",
    [
        pytest.param(1.0, id="budget-covers-every-retry"),
        pytest.param(None, id="default-budget"),
    ],
)
def test_200_pages_against_a_flaky_server(harness: Harness, budget: float | None) -> None:
    pages = 200
    server = harness.server
    harness.site.use_collection(pages)
    # The breaker opens when half of its last 50 calls failed: at a 30% failure rate that
    # is rare but possible, and would fail the rest of the build fast. That is right for
    # a dying server, but this test is about retries: keep it shut.
    retry: dict[str, Any] = {"base_delay": 0.01, "max_delay": 0.05}
    if budget is not None:
        retry["budget"] = budget
    harness.settings(breaker={"failure_threshold": 1000}, retry=retry)
    server.fail_rate(0.3, kinds=("status", "reset"), statuses=(500, 502, 503, 504), seed=20)

    try:
        report = harness.build()
    except BuildFailed as caught:
        failures = caught.failures
        assert not harness.site.output.exists(), "a failed first build writes no output"
    else:
        failures = []
        assert report.failures == []
        assert_pages_correct(harness.site)

    counts = per_prompt(server)
    assert len(counts) == pages
    assert max(counts.values()) <= MAX_ATTEMPTS
    answered = Counter(server.answered_prompts)
    assert max(answered.values()) == 1
    failed_pages = {page for page, _, _ in failures}
    assert len(failed_pages) == len(failures) == pages - len(answered)
    for page, block, reason in failures:
        assert block == "summary"
        assert page.startswith("projects/item-")
        assert "HTTP 5" in reason or "cannot reach" in reason, reason
    retries = server.chat_count - pages
    if budget is None:
        # The default budget: retries are at most 20% of the requests (at least 5).
        assert retries <= max(5, 0.2 * pages)
    else:
        # Every block that failed was asked three times; none gave up sooner.
        unanswered = [p for p in counts if p not in answered]
        assert len(unanswered) == len(failures)
        assert all(counts[p] == MAX_ATTEMPTS for p in unanswered)

    # The rerun asks only what is missing.
    server.fail_rate(0)
    before = (server.chat_count, server.answered_count)

    again = harness.build()

    assert again.failures == []
    assert server.answered_count - before[1] == len(failures)
    assert server.chat_count - before[0] == len(failures)
    assert (again.llm_calls, again.cache_hits) == (len(failures), pages - len(failures))
    assert_pages_correct(harness.site)


# --------------------------------------------------------------------------- rate limits


def rate_limited_build(harness: Harness, keys: int) -> float:
    """Simulated seconds a build of the harness's project takes with `keys` keys at 60 rpm."""
    names = [f"K{n}" for n in range(1, keys + 1)]
    harness.env = {name: f"sk-test-key-{name}" for name in names}
    harness.settings(api_keys=[{"env": name, "rpm": 60} for name in names], concurrency=4)
    harness.server.reset()
    harness.server.limit_per_key(60, window=60.0, clock=harness.time)
    started = harness.time.now

    report = harness.build()

    assert report.failures == []
    assert harness.server.rate_limited_count == 0, "the client kept to the limit itself"
    by_key = Counter(r.headers["authorization"] for r in harness.server.chat_requests)
    assert set(by_key) == {f"Bearer sk-test-key-{name}" for name in names}
    return harness.time.now - started


def test_requests_per_minute_per_key(harness: Harness) -> None:
    blocks = 200
    harness.site.use_collection(blocks)
    harness.site.update_settings("cache", enabled=False)

    one_key = rate_limited_build(harness, 1)
    three_keys = rate_limited_build(harness, 3)

    assert harness.server.answered_count == blocks
    # A sliding minute: 60 requests at once, then 60 more each minute. One key sends the
    # 200 in minutes 0, 1, 2 and 3; three keys send 180 at once and the last 20 a minute on.
    assert one_key == pytest.approx(180, abs=5)
    assert three_keys == pytest.approx(60, abs=5)
    assert 2.5 <= one_key / three_keys <= 3.5


# --------------------------------------------------------------------------- aliases


def test_alias_falls_back_to_another_server_and_caches_under_the_alias(
    harness: Harness,
) -> None:
    primary = harness.server
    blocks = 6
    harness.site.use_collection(blocks)
    with second_server() as backup:
        harness.settings(
            model="writer",
            aliases={"writer": "openai:gpt-x"},
            fallbacks={"writer": ["ollama:llama-y"]},
            endpoints={"ollama": {"api_url": backup.url}},
        )
        primary.fail_rate(1.0, statuses=(503,))

        report = harness.build()

        assert report.failures == []
        assert {b.model for b in report.blocks} == {"llama-y"}
        assert {r.body["model"] for r in primary.chat_requests} == {"gpt-x"}
        assert primary.answered_count == 0
        assert {r.body["model"] for r in backup.chat_requests} == {"llama-y"}
        assert backup.answered_count == blocks
        assert backup.chat_requests[0].path == "/api/chat"
        assert_pages_correct(harness.site)

        primary.fail_rate(0)
        sent = (primary.chat_count, backup.chat_count)

        again = harness.build()

        assert again.failures == []
        assert (again.cache_hits, again.llm_calls) == (blocks, 0)
        assert (primary.chat_count, backup.chat_count) == sent
