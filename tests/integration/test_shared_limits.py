"""Rate limits shared through a real redis-server by key pools and clients that stand for
processes building at once: the windows hold across them (counted by the times Redis
itself recorded, never by wall time), corrections, 429 cooldowns and header pacing reach
every one of them, and a Redis that dies mid-run leaves each with its own limits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from tests.fakellm import FakeLLMServer
from tests.redisserver import RedisServer, running_redis_server
from trinity.cache.redislink import RedisLink
from trinity.errors import LLMError, RateLimitedError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.ratelimit import ApiKey, KeyLimits, KeyPool, Lease, PoolSharing
from trinity.llm.retry import RetryPolicy
from trinity.llm.settings import LLMSettings
from trinity.llm.sharedlimits import WINDOW_MARGIN, SharedLimits, key_identity

ENDPOINT = "openai http://127.0.0.1:9"
SECRET = "sk-shared-SECRET-0123456789"
PATIENT = 2.0  # seconds a test link waits for Redis: these machines are shared and slow


def link_to(server: RedisServer, timeout: float = PATIENT) -> RedisLink:
    return RedisLink(host=server.host, port=server.port, prefix="trinity:", timeout=timeout)


def shared_pool(
    link: RedisLink, limits: KeyLimits, *, window: float = 60.0, patience: float = 3600.0
) -> KeyPool:
    """A pool on one key, its limits shared through `link`: one 'process' of the test."""
    return KeyPool(
        [ApiKey("OPENAI_API_KEY", SECRET, limits)],
        window=window,
        patience=patience,
        sharing=PoolSharing(ENDPOINT, SharedLimits(link, window=window)),
    )


def chat_settings(server: FakeLLMServer, api_key: str, **options: Any) -> LLMSettings:
    """Settings that ask `server` in OpenAI's format with one key, for short answers."""
    return LLMSettings(
        provider="openai", api_url=server.url, model="m", api_key=api_key, max_tokens=20, **options
    )


def names(part: str) -> str:
    return f"trinity:limits:{key_identity(ENDPOINT, SECRET)}:{part}"


def run_with(server: RedisServer, body: Callable[[RedisLink], Awaitable[Any]]) -> Any:
    """`body(link)` on an event loop of its own, its link closed after."""

    async def main() -> Any:
        link = link_to(server)
        try:
            return await body(link)
        finally:
            await link.aclose()

    return anyio.run(main)


def in_threads(count: int, server: RedisServer, body: Callable[[RedisLink], Awaitable[Any]]):  # type: ignore[no-untyped-def]
    """`body` run by `count` threads at once, each its own event loop and Redis link (as
    processes are); their results in thread order."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def thread(index: int) -> None:
        try:
            results[index] = run_with(server, body)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def most_in_any_window(grants: list[tuple[float, int]], window_us: float) -> int:
    """The most units granted within any `window_us` (µs) of Redis time."""
    grants = sorted(grants)
    most = 0
    for i, (start, _) in enumerate(grants):
        most = max(most, sum(amount for at, amount in grants[i:] if at < start + window_us))
    return most


@pytest.fixture
def raw(redis_db: RedisServer) -> Iterator[redis.Redis]:
    with redis_db.client() as client:
        yield client


# --------------------------------------------------------------------------- the windows


@pytest.mark.parametrize(
    ("limits", "tokens", "limit"),
    [
        pytest.param(KeyLimits(rpm=4), 1, 4, id="requests"),
        pytest.param(KeyLimits(rpm=10_000, input_tpm=100), 30, 100, id="input-tokens"),
    ],
)
def test_two_pools_never_grant_more_than_the_limit_in_any_window(
    redis_db: RedisServer, limits: KeyLimits, tokens: int, limit: int
) -> None:
    window = 0.4
    grants: list[tuple[float, int]] = []
    lock = threading.Lock()

    async def acquire_many(link: RedisLink) -> None:
        pool = shared_pool(link, limits, window=window)
        with redis_db.client() as client:

            async def one() -> None:
                lease = await pool.acquire(tokens, 0)
                assert lease.shared is not None
                # When Redis counted it: the member's score, in Redis's microseconds.
                at = client.zscore(names("requests"), f"{lease.shared.member}:1")
                assert at is not None
                with lock:
                    grants.append((at, tokens))

            async with anyio.create_task_group() as group:
                for _ in range(6):
                    group.start_soon(one)

    in_threads(2, redis_db, acquire_many)

    assert len(grants) == 12
    # Each pool alone would allow `limit` a window: together they still get only that.
    assert most_in_any_window(grants, window * 1_000_000) <= limit
    assert most_in_any_window(grants, window * (1 + WINDOW_MARGIN) * 1_000_000) <= limit


def test_every_key_written_expires_and_names_no_secret(
    redis_db: RedisServer, raw: redis.Redis
) -> None:
    async def use(link: RedisLink) -> None:
        pool = shared_pool(link, KeyLimits(rpm=5, input_tpm=1000, output_tpm=1000))
        lease = await pool.acquire(10, 10)
        await lease.finish(
            5, 5, {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "20s"}
        )
        await lease.rate_limited(2.0)

    run_with(redis_db, use)

    keys = raw.keys("*")
    # A window is a sorted set and the sum of its amounts.
    assert {k.decode().split(" key:")[1].split(":", 1)[1] for k in keys} == {
        "requests",
        "requests:sum",
        "input",
        "input:sum",
        "output",
        "output:sum",
        "pacing",
        "cooldown",
    }
    for key in keys:
        assert key.startswith(b"trinity:limits:openai http://127.0.0.1:9 key:")
        assert SECRET.encode() not in key
        assert raw.pttl(key) > 0, key


def test_two_different_keys_under_one_variable_name_do_not_share(redis_db: RedisServer) -> None:
    async def use(link: RedisLink) -> tuple[str, str]:
        one = KeyPool(
            [ApiKey("K", "secret-one", KeyLimits(rpm=1))],
            patience=0,
            sharing=PoolSharing(ENDPOINT, SharedLimits(link)),
        )
        two = KeyPool(
            [ApiKey("K", "secret-two", KeyLimits(rpm=1))],
            patience=0,
            sharing=PoolSharing(ENDPOINT, SharedLimits(link)),
        )
        return (await one.acquire(1, 1)).name, (await two.acquire(1, 1)).name

    assert run_with(redis_db, use) == ("K", "K")  # neither waited for the other


# --------------------------------------------------------------------------- corrections


def test_a_reconcile_in_one_process_gives_tokens_back_to_another(redis_db: RedisServer) -> None:
    limits = KeyLimits(input_tpm=100)

    async def body(link_a: RedisLink) -> None:
        link_b = link_to(redis_db)
        try:
            first = shared_pool(link_a, limits, patience=0)
            second = shared_pool(link_b, limits, patience=0)
            lease = await first.acquire(80, 0)
            with pytest.raises(RateLimitedError):
                await second.acquire(50, 0)  # 80 + 50 > 100, counted in Redis
            await lease.finish(10, 0)  # it used 10: 70 come back, for everyone
            second = shared_pool(link_b, limits, patience=0)  # forget the wait it learnt
            assert (await second.acquire(50, 0)).name == "OPENAI_API_KEY"
        finally:
            await link_b.aclose()

    run_with(redis_db, body)


def test_a_429_cooldown_set_by_one_client_holds_the_other(redis_db: RedisServer) -> None:
    async def body(link_a: RedisLink) -> None:
        link_b = link_to(redis_db)
        try:
            first = shared_pool(link_a, KeyLimits(), patience=5)
            second = shared_pool(link_b, KeyLimits(), patience=5)
            await (await first.acquire(1, 1)).rate_limited(retry_after=30)
            with pytest.raises(RateLimitedError) as caught:
                await second.acquire(1, 1)
            assert caught.value.retry_after == pytest.approx(30, abs=2)
            # What it learnt is what the client's fast path reads, with no Redis call.
            assert second.wait_time(1, 1) == pytest.approx(30, abs=2)
        finally:
            await link_b.aclose()

    run_with(redis_db, body)


def test_a_long_429_seen_by_one_client_fails_the_other_over_at_once(
    redis_db: RedisServer, fake_llm: FakeLLMServer
) -> None:
    """The client's fast path (a wait past llm.retry.retry_after_cap is not waited for)
    holds for a cooldown another process learnt: nothing is sent, nothing sleeps."""
    fake_llm.fail_next(1, 429, headers={"Retry-After": "120"})
    settings = chat_settings(fake_llm, "sk-shared")

    async def body(link_a: RedisLink) -> None:
        link_b = link_to(redis_db)
        try:
            async with AsyncLLMClient(settings, shared=link_a) as first:
                with pytest.raises(RateLimitedError):
                    await first.generate_content_async("first")
            async with AsyncLLMClient(settings, shared=link_b) as second:
                with pytest.raises(RateLimitedError) as caught:
                    await second.generate_content_async("second")
                assert caught.value.retry_after is not None
                assert caught.value.retry_after > 100
                with pytest.raises(RateLimitedError, match=r"rate limited for 1\d\d s"):
                    await second.generate_content_async("third")  # learnt: no Redis call
        finally:
            await link_b.aclose()

    run_with(redis_db, body)
    assert fake_llm.chat_count == 1, "only the first request reached the server"


def test_header_pacing_learnt_by_one_client_paces_the_other(redis_db: RedisServer) -> None:
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20s"}

    async def body(link_a: RedisLink) -> None:
        link_b = link_to(redis_db)
        try:
            first = shared_pool(link_a, KeyLimits(), patience=5)
            second = shared_pool(link_b, KeyLimits(), patience=5)
            await (await first.acquire(1, 1)).finish(1, 1, spent)
            with pytest.raises(RateLimitedError) as caught:
                await second.acquire(1, 1)
            assert caught.value.retry_after == pytest.approx(20, abs=2)
        finally:
            await link_b.aclose()

    run_with(redis_db, body)


# --------------------------------------------------------------------------- untrusted


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda r: r.set(names("cooldown"), "soon"), id="cooldown-not-a-number"),
        pytest.param(lambda r: r.set(names("cooldown"), "9" * 30), id="cooldown-huge"),
        pytest.param(lambda r: r.hset(names("cooldown"), "a", "b"), id="cooldown-a-hash"),
        pytest.param(lambda r: r.set(names("requests"), "x"), id="window-a-string"),
        pytest.param(
            lambda r: r.zadd(names("input"), {"evil:abc": 1, "evil2:" + "9" * 400: 2}),
            id="window-old-nonsense",
        ),
        pytest.param(lambda r: r.zadd(names("requests"), {"future": 9e15}), id="future"),
        pytest.param(
            lambda r: r.hset(
                names("pacing"),
                mapping={
                    "requests.remaining": "none",
                    "requests.reset": "later",
                    "tokens.remaining": "0",
                    "tokens.reset": "9" * 20,
                },
            ),
            id="pacing-nonsense",
        ),
    ],
)
def test_planted_values_are_not_trusted(
    redis_db: RedisServer, raw: redis.Redis, plant: Callable[[redis.Redis], Any]
) -> None:
    plant(raw)

    async def body(link: RedisLink) -> Lease:
        pool = shared_pool(link, KeyLimits(rpm=5, input_tpm=1000), patience=1)
        lease = await pool.acquire(10, 10)
        assert link.up, "a planted value must not cost the build its Redis"
        return lease

    lease = run_with(redis_db, body)
    assert lease.shared is not None  # Redis decided, and let it go


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda r, key: r.set(key, "lots"), id="not-a-number"),
        pytest.param(lambda r, key: r.set(key, "9" * 15), id="huge"),
        pytest.param(lambda r, key: r.set(key, "-50"), id="negative"),
        pytest.param(lambda r, key: r.set(key, "1.5"), id="fraction"),
        pytest.param(lambda r, key: (r.delete(key), r.hset(key, "a", "b")), id="a-hash"),
        pytest.param(lambda r, key: r.delete(key), id="lost"),
    ],
)
def test_a_window_sum_that_is_not_ours_is_counted_again(
    redis_db: RedisServer, raw: redis.Redis, plant: Callable[[redis.Redis, str], Any]
) -> None:
    limits = KeyLimits(input_tpm=1000)

    async def reserve(link: RedisLink) -> None:
        await shared_pool(link, limits, patience=1).acquire(10, 0)

    run_with(redis_db, reserve)
    plant(raw, names("input") + ":sum")

    run_with(redis_db, reserve)  # passes: the window holds 10 of its 1000

    assert raw.get(names("input") + ":sum") == b"20"
    assert raw.pttl(names("input") + ":sum") > 0


def test_a_check_that_refuses_keeps_the_sum_of_what_it_dropped(
    redis_db: RedisServer, raw: redis.Redis
) -> None:
    """A check drops the members that left the window, and a refused one writes nothing
    else: the sum beside the window must drop with them, or it counts requests long gone
    and refuses every request after it for another window (a benchmark's second minute
    sent 28 requests of 600)."""
    seconds, micros = raw.time()
    now = seconds * 1_000_000 + micros
    gone = now - 61_000_000  # left a 60 s window (and its margin) a moment ago
    raw.zadd(names("requests"), {"gone:1": gone, "here:1": now})
    raw.set(names("requests") + ":sum", 2, px=120_000)
    raw.zadd(names("output"), {"full:10": now})  # the output window refuses the next one
    raw.set(names("output") + ":sum", 10, px=120_000)
    raw.pexpire(names("requests"), 120_000)

    async def body(link: RedisLink) -> None:
        pool = shared_pool(link, KeyLimits(rpm=2, output_tpm=10), patience=0)
        with pytest.raises(RateLimitedError):
            await pool.acquire(1, 5)

    run_with(redis_db, body)

    assert raw.zrange(names("requests"), 0, -1) == [b"here:1"]
    assert raw.get(names("requests") + ":sum") == b"1"
    assert raw.pttl(names("requests") + ":sum") > 0


def test_a_huge_planted_amount_costs_at_most_one_window(
    redis_db: RedisServer, raw: redis.Redis
) -> None:
    seconds, micros = raw.time()
    now = seconds * 1_000_000 + micros
    raw.zadd(names("input"), {"evil:abc": now, "evil2:" + "9" * 20: now})

    async def body(link: RedisLink) -> None:
        pool = shared_pool(link, KeyLimits(input_tpm=1000), patience=1)
        with pytest.raises(RateLimitedError) as caught:
            await pool.acquire(10, 10)
        assert caught.value.retry_after is not None
        assert 1 < caught.value.retry_after <= 60 * (1 + WINDOW_MARGIN) + 1
        assert link.up

    run_with(redis_db, body)


# --------------------------------------------------------------------------- Redis goes away


def test_redis_killed_mid_run_warns_once_and_the_local_limits_carry_on(
    tmp_path: Any, fake_llm: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = chat_settings(fake_llm, "sk-one", limits=KeyLimits(rpm=1000))
    with running_redis_server(tmp_path / "redis") as server:

        async def body() -> list[str]:
            link = link_to(server, timeout=0.5)
            answers = []
            async with AsyncLLMClient(settings, shared=link) as client:
                for n in range(3):
                    answers.append(await client.generate_content_async(f"before {n}"))
                server.kill()
                for n in range(10):
                    answers.append(await client.generate_content_async(f"after {n}"))
            await link.aclose()
            return answers

        with caplog.at_level(logging.WARNING):
            answers = anyio.run(body)

    assert len(answers) == 13
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].getMessage().startswith(f"Redis at {server.host}:{server.port}/0 failed")
    assert fake_llm.chat_count == 13


def test_redis_gone_before_the_first_call_leaves_the_local_limits(
    fake_llm: FakeLLMServer,
) -> None:
    from tests.redisserver import free_port

    settings = chat_settings(
        fake_llm, "sk-one", limits=KeyLimits(rpm=2), retry=RetryPolicy(retry_after_cap=1)
    )

    async def body() -> list[str | None]:
        link = RedisLink(host="127.0.0.1", port=free_port(), timeout=0.1)
        results: list[str | None] = []
        async with AsyncLLMClient(settings, shared=link) as client:
            for n in range(3):
                try:
                    results.append(await client.generate_content_async(f"p {n}"))
                except LLMError:
                    results.append(None)
        return results

    results = anyio.run(body)
    # The third would wait a minute for the local window: refused at once, never sent.
    assert [r is not None for r in results] == [True, True, False]
    assert fake_llm.chat_count == 2


# --------------------------------------------------------------------------- real server


def test_clients_that_know_the_limit_are_never_refused_by_the_server(
    redis_db: RedisServer, fake_llm: FakeLLMServer
) -> None:
    """Two clients (processes, as far as Redis is concerned) send twice what one key may
    in a minute: the server's own limit never refuses one; what does not fit is refused
    by the client, before it is sent."""
    limit = 5
    fake_llm.limit_per_key(limit, window=60.0)
    settings = chat_settings(
        fake_llm,
        "sk-shared",
        limits=KeyLimits(rpm=limit),
        retry=RetryPolicy(retry_after_cap=1, rate_limit_wait=1),
    )

    async def client_asks(link: RedisLink) -> int:
        answered = 0

        async def ask(n: int) -> None:
            nonlocal answered
            try:
                await client.generate_content_async(f"prompt {id(link)} {n}")
                answered += 1
            except RateLimitedError:
                pass

        async with (
            AsyncLLMClient(settings, shared=link) as client,
            anyio.create_task_group() as group,
        ):
            for n in range(limit):
                group.start_soon(ask, n)
        return answered

    answered = in_threads(2, redis_db, client_asks)

    assert sum(answered) == limit
    assert fake_llm.rate_limited_count == 0
    assert len(fake_llm.answered) == limit


# The child of the test below: one process with its own client, asking its share.
CHILD = """
import sys, anyio
from trinity.cache.redislink import RedisLink
from trinity.errors import RateLimitedError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.ratelimit import KeyLimits
from trinity.llm.retry import RetryPolicy
from trinity.llm.settings import LLMSettings

url, redis_port, limit, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
settings = LLMSettings(
    provider="openai", api_url=url, model="m", api_key="sk-shared",
    limits=KeyLimits(rpm=limit), max_tokens=20,
    retry=RetryPolicy(retry_after_cap=1, rate_limit_wait=1),
)

async def main() -> None:
    link = RedisLink(host="127.0.0.1", port=redis_port, timeout=2.0)
    answered = 0
    async with AsyncLLMClient(settings, shared=link) as client:
        for n in range(limit):
            try:
                await client.generate_content_async(f"{name} prompt {n}")
                answered += 1
            except RateLimitedError:
                pass
    await link.aclose()
    print(answered)

anyio.run(main)
"""


def test_processes_that_know_the_limit_are_never_refused_by_the_server(
    redis_db: RedisServer, fake_llm: FakeLLMServer
) -> None:
    limit, processes = 4, 3
    fake_llm.limit_per_key(limit, window=60.0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, fake_llm.url, str(redis_db.port), str(limit), f"p{i}"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    answered = [int(child.communicate(timeout=60)[0]) for child in children]

    assert sum(answered) == limit
    assert fake_llm.rate_limited_count == 0
    assert len(fake_llm.answered) == limit
