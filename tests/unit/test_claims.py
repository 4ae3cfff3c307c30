"""Claims (trinity.llm.claims) against a real redis-server: taking a key, fencing, the
waiters' polls, values planted under a lock's name, and a Redis that is not there.

How two clients share one call through them is in tests/integration/test_shared_calls.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
import redis

from tests.fakeclock import FakeClock
from tests.redisserver import RedisServer, free_port
from trinity.cache.redislink import RedisLink
from trinity.llm.claims import CLAIM_TTL, FIRST_POLL, LAST_POLL, Claim, Claims, Outcome

pytestmark = pytest.mark.anyio

PREFIX = "test:"
KEY = "v1:0123456789abcdef"
PATIENT = 5.0  # a Redis timeout a busy machine cannot trip


@pytest.fixture
async def link(redis_db: RedisServer) -> AsyncIterator[RedisLink]:
    link = RedisLink(host=redis_db.host, port=redis_db.port, prefix=PREFIX, timeout=PATIENT)
    yield link
    await link.aclose()  # its asyncio client belongs to the test's event loop


@pytest.fixture
def db(redis_db: RedisServer) -> Iterator[redis.Redis]:
    with redis_db.client() as client:
        yield client


def answer(text: str = "ours") -> Callable[[], Awaitable[str]]:
    async def ask() -> str:
        return text

    return ask


async def nothing() -> str | None:
    return None


def claim_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trinity.llm.claims" and r.levelno > 20]


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(getattr(r, "event", "")) for r in caplog.records if r.name == "trinity.llm.claims"]


async def until_gone(db: redis.Redis, name: str) -> None:
    """Wait (really) until Redis has expired `name`; bounded, so a bug fails the test."""
    with anyio.fail_after(10):
        while db.exists(name):
            await anyio.sleep(0.01)


# --------------------------------------------------------------------------- taking a key


async def test_the_first_to_take_a_key_holds_it_and_the_next_finds_it_held(
    link: RedisLink, db: redis.Redis
) -> None:
    claims = Claims(link)

    first = await claims.take(KEY)
    second = await claims.take(KEY)

    assert isinstance(first, Claim)
    assert second is Outcome.HELD
    assert first.name == f"{PREFIX}lock:{KEY}"
    assert db.get(first.name) == first.token.encode()
    assert 0 < db.pttl(first.name) <= CLAIM_TTL * 1000
    assert await claims.release(first)
    assert not db.exists(first.name)


async def test_tokens_are_128_random_bits_that_do_not_repeat(link: RedisLink) -> None:
    claims = Claims(link)
    tokens = set()
    for number in range(50):
        taken = await claims.take(f"{KEY}{number}")
        assert isinstance(taken, Claim)
        assert len(taken.token) == 32 and int(taken.token, 16) >= 0
        tokens.add(taken.token)
    assert len(tokens) == 50


async def test_a_stale_holder_neither_extends_nor_releases_the_claim_of_the_next(
    link: RedisLink, db: redis.Redis
) -> None:
    stalled = Claims(link, ttl=0.2)
    other = Claims(link)
    old = await stalled.take(KEY)
    assert isinstance(old, Claim)
    await until_gone(db, old.name)  # the stalled holder's claim expired

    new = await other.take(KEY)
    assert isinstance(new, Claim)

    assert not await stalled.extend(old)
    assert not await stalled.release(old)
    assert db.get(new.name) == new.token.encode()
    assert db.pttl(new.name) > 0.2 * 1000  # the stale extend did not shorten it either
    assert await other.release(new)


async def test_extending_a_claim_gives_it_its_full_ttl_again(
    link: RedisLink, db: redis.Redis
) -> None:
    claims = Claims(link, ttl=60)
    claim = await claims.take(KEY)
    assert isinstance(claim, Claim)
    db.pexpire(claim.name, 1000)

    assert await claims.extend(claim)
    assert db.pttl(claim.name) > 1000


# --------------------------------------------------------------------------- waiting


async def test_a_waiter_polls_more_and_more_slowly_until_the_answer_is_there(
    link: RedisLink, db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    db.set(f"{PREFIX}lock:{KEY}", "another-process", px=10_000)
    clock = FakeClock()
    claims = Claims(link, sleep=clock.sleep)
    looks = 0

    async def look() -> str | None:
        nonlocal looks
        looks += 1
        return "theirs" if looks == 12 else None

    async def ask() -> str:
        raise AssertionError("the waiter asked although the holder answered")

    with caplog.at_level(logging.INFO, logger="trinity"):
        result = await claims.once(KEY, ask=ask, look=look, accept=lambda found: True)

    assert result == ("theirs", True)
    expected = [FIRST_POLL]
    while len(expected) < 12:
        expected.append(min(expected[-1] * 1.5, LAST_POLL))
    assert clock.sleeps == pytest.approx(expected)
    assert clock.sleeps[-1] == LAST_POLL
    assert claims.waiting == 0
    assert events(caplog) == ["llm_claim_wait"]
    (record,) = caplog.records
    assert KEY[:12] in record.getMessage() and KEY not in record.getMessage()


async def test_a_shared_answer_the_caller_refuses_is_asked_again(
    link: RedisLink, db: redis.Redis
) -> None:
    db.set(f"{PREFIX}lock:{KEY}", "another-process", px=10_000)
    claims = Claims(link, sleep=FakeClock().sleep)

    async def look() -> str:
        return "theirs"

    result = await claims.once(KEY, ask=answer(), look=look, accept=lambda found: False)

    assert result == ("ours", False)


async def test_an_answer_stored_just_before_the_release_is_not_missed(
    link: RedisLink, db: redis.Redis
) -> None:
    # The holder stored and released between the waiter's look and its check of the lock.
    name = f"{PREFIX}lock:{KEY}"
    db.set(name, "another-process", px=10_000)
    stored: list[str] = []

    async def sleep(seconds: float) -> None:
        db.delete(name)

    async def look() -> str | None:
        stored.append("looked")
        return "theirs" if len(stored) > 1 else None

    result = await Claims(link, sleep=sleep).once(
        KEY, ask=answer(), look=look, accept=lambda found: True
    )

    assert result == ("theirs", True)


async def test_a_waiter_takes_over_a_claim_that_expired_without_an_answer(
    link: RedisLink, db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"{PREFIX}lock:{KEY}"
    db.set(name, "a-holder-that-died", px=150)
    claims = Claims(link)
    seen: list[bytes | None] = []

    async def ask() -> str:
        seen.append(db.get(name))
        return "ours"

    with caplog.at_level(logging.INFO, logger="trinity"):
        result = await claims.once(KEY, ask=ask, look=nothing, accept=lambda found: True)

    assert result == ("ours", False)
    (token,) = seen
    assert token is not None and token != b"a-holder-that-died"  # it asked holding its claim
    assert not db.exists(name)  # and released it
    assert events(caplog) == ["llm_claim_wait", "llm_claim_takeover"]


# --------------------------------------------------------------------------- hostile values


def plant_hash(db: redis.Redis, name: str) -> None:
    db.hset(name, "field", "value")
    db.pexpire(name, 150)


def plant_list(db: redis.Redis, name: str) -> None:
    db.rpush(name, "a", "b")
    db.pexpire(name, 150)


def plant_bytes(db: redis.Redis, name: str) -> None:
    db.set(name, b"\xff\x00\xfe garbage", px=150)


def plant_forever(db: redis.Redis, name: str) -> None:
    db.set(name, "no ttl at all")


def plant_a_day(db: redis.Redis, name: str) -> None:
    db.set(name, "a day", ex=86_400)


@pytest.mark.parametrize("plant", [plant_hash, plant_list, plant_bytes, plant_forever, plant_a_day])
async def test_a_value_planted_under_the_lock_never_crashes_nor_stalls(
    link: RedisLink,
    db: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    plant: Callable[[redis.Redis, str], None],
) -> None:
    plant(db, f"{PREFIX}lock:{KEY}")
    claims = Claims(link)

    with caplog.at_level(logging.INFO, logger="trinity"):
        result = await claims.once(KEY, ask=answer(), look=nothing, accept=lambda found: True)

    assert result == ("ours", False)
    assert link.up, "a planted value tripped the breaker"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_holder_whose_lock_was_replaced_by_another_type_lets_go_quietly(
    link: RedisLink, db: redis.Redis
) -> None:
    claims = Claims(link)
    claim = await claims.take(KEY)
    assert isinstance(claim, Claim)
    db.delete(claim.name)
    db.hset(claim.name, "field", "value")

    assert not await claims.extend(claim)
    assert not await claims.release(claim)
    assert db.type(claim.name) == b"hash"
    assert link.up


# --------------------------------------------------------------------------- the holder


async def test_a_holder_releases_its_claim_when_its_call_fails(
    link: RedisLink, db: redis.Redis
) -> None:
    claims = Claims(link)

    async def ask() -> str:
        raise ValueError("the model said no")

    with pytest.raises(ValueError, match="the model said no"):
        await claims.once(KEY, ask=ask, look=nothing, accept=lambda found: True)

    assert not db.exists(claims.name(KEY))


async def test_a_cancelled_holder_releases_its_claim(link: RedisLink, db: redis.Redis) -> None:
    claims = Claims(link)
    started = anyio.Event()

    async def ask() -> str:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: claims.once(KEY, ask=ask, look=nothing, accept=lambda found: True))
        await started.wait()
        assert db.exists(claims.name(KEY))
        group.cancel_scope.cancel()

    assert not db.exists(claims.name(KEY))


async def test_the_heartbeat_extends_the_claim_while_the_call_runs(
    link: RedisLink, db: redis.Redis
) -> None:
    beats: list[float] = []
    beaten = anyio.Event()
    claims = Claims(link, ttl=60)

    async def sleep(seconds: float) -> None:
        beats.append(seconds)
        if len(beats) > 1:
            beaten.set()
            await anyio.sleep_forever()

    claims.sleep = sleep
    pttls: list[int] = []

    async def ask() -> str:
        db.pexpire(claims.name(KEY), 1000)  # as if most of its TTL had gone by
        await beaten.wait()
        pttls.append(int(db.pttl(claims.name(KEY))))
        return "ours"

    result = await claims.once(KEY, ask=ask, look=nothing, accept=lambda found: True)

    assert result == ("ours", False)
    assert beats[0] == pytest.approx(20)  # a third of the TTL
    assert pttls[0] > 1000
    assert not db.exists(claims.name(KEY))


# --------------------------------------------------------------------------- no Redis


async def test_without_redis_every_process_asks_for_itself_after_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = RedisLink(host="127.0.0.1", port=free_port(), prefix=PREFIX, purpose="shared Redis")
    claims = Claims(link)

    with caplog.at_level(logging.INFO, logger="trinity"):
        for number in range(3):
            result = await claims.once(
                f"{KEY}{number}", ask=answer(), look=nothing, accept=lambda found: True
            )
            assert result == ("ours", False)
    await link.aclose()

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["trinity.cache.redislink"]
    assert claim_warnings(caplog) == []
    assert link.failed_calls == 1
