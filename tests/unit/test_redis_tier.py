"""The Redis tier against a real redis-server: JSON under a prefix, TTLs, and the breaker.

A cache must never slow a build down, so most of these take Redis away (killed, frozen
with SIGSTOP, behind a password) and check that one failure opens the breaker and that
no later call touches Redis again.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio

from tests.conftest import ConnectLog
from tests.fakeclock import FakeClock
from tests.redisserver import RedisServer, free_port, running_redis_server
from tests.unit.conftest import ProjectFactory
from trinity.cache.codec import encode
from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisBreaker, RedisTier
from trinity.cache.tier import TierUsage

PREFIX = "test:"
PASSWORD = "s3cret-redis-pw"


class CommandCount:
    """How many commands redis-py was asked to send, from any client in this process."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def redis_calls(monkeypatch: pytest.MonkeyPatch) -> CommandCount:
    counter = CommandCount()
    sync_execute: Callable[..., Any] = redis.Redis.execute_command
    async_execute: Callable[..., Any] = redis.asyncio.Redis.execute_command

    def counted(self: redis.Redis, *args: Any, **options: Any) -> Any:
        counter.count += 1
        return sync_execute(self, *args, **options)

    async def counted_async(self: redis.asyncio.Redis, *args: Any, **options: Any) -> Any:
        counter.count += 1
        return await async_execute(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counted)
    monkeypatch.setattr(redis.asyncio.Redis, "execute_command", counted_async)
    return counter


@pytest.fixture
def raw(redis_db: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on the shared server, to look behind the tier's back."""
    with redis_db.client() as client:
        yield client


@pytest.fixture
def make_tier() -> Iterator[Callable[..., RedisTier]]:
    """Factory: `make_tier(server, **options)`, every tier closed after the test."""
    made: list[RedisTier] = []

    def make(server: RedisServer, **options: Any) -> RedisTier:
        options.setdefault("prefix", PREFIX)
        tier = RedisTier(host=server.host, port=server.port, **options)
        made.append(tier)
        return tier

    yield make
    for tier in made:
        tier.close()


@pytest.fixture
def tier(redis_db: RedisServer, make_tier: Callable[..., RedisTier]) -> RedisTier:
    return make_tier(redis_db)


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path / "redis-auth", password=PASSWORD) as server:
        yield server


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def use_every_call(tier: RedisTier, times: int = 3) -> None:
    for n in range(times):
        assert tier.get("k") is None
        tier.set(f"k{n}", n)
        tier.delete("k")


async def use_every_call_async(tier: RedisTier, times: int = 3) -> None:
    for n in range(times):
        assert await tier.get_async("k") is None
        await tier.set_async(f"k{n}", n)
        await tier.delete_async("k")


# ---------------------------------------------------------------------------- storing


def test_round_trip_stores_json_bytes_under_the_prefix(tier: RedisTier, raw: redis.Redis) -> None:
    value = {"text": "Grüße ✓", "n": 3, "list": [1, None, True]}
    tier.set("k", value)
    assert raw.get(PREFIX + "k") == encode(value)
    assert raw.exists("k") == 0
    assert tier.get("k") == value
    assert tier.get("missing") is None
    tier.delete("k")
    assert raw.exists(PREFIX + "k") == 0
    assert tier.get("k") is None
    assert (tier.failed_calls, tier.breaker.is_open) == (0, False)


def test_location_names_the_server_and_prefix(tier: RedisTier, redis_db: RedisServer) -> None:
    assert tier.location == f"redis://{redis_db.host}:{redis_db.port}/0 {PREFIX}*"


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(b"not json {", id="corrupt"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(pickle.dumps({"a": 1}), id="pickle"),
    ],
)
def test_foreign_values_read_as_a_miss_without_opening_the_breaker(
    tier: RedisTier, raw: redis.Redis, planted: bytes
) -> None:
    raw.set(PREFIX + "k", planted)
    assert tier.get("k") is None
    assert (tier.failed_calls, tier.breaker.is_open) == (0, False)


def test_db_selects_the_redis_database(
    redis_db: RedisServer, make_tier: Callable[..., RedisTier], raw: redis.Redis
) -> None:
    tier = make_tier(redis_db, db=3)
    tier.set("k", 1)
    assert raw.exists(PREFIX + "k") == 0
    with redis.Redis(host=redis_db.host, port=redis_db.port, db=3) as third:
        assert third.get(PREFIX + "k") == b"1"


# ---------------------------------------------------------------------------- expiry


@pytest.mark.parametrize(
    ("tier_ttl", "set_ttl", "expected"),
    [
        pytest.param(None, None, None, id="no-ttl"),
        pytest.param(60, None, 60, id="tier-ttl"),
        pytest.param(60, 5, 5, id="per-set-override"),
        pytest.param(None, 7.6, 8, id="rounded"),
        pytest.param(None, 0.2, 1, id="at-least-one-second"),
    ],
)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.anyio
async def test_ttl_sets_a_redis_expiry(
    redis_db: RedisServer,
    make_tier: Callable[..., RedisTier],
    raw: redis.Redis,
    tier_ttl: float | None,
    set_ttl: float | None,
    expected: int | None,
    use_async: bool,
) -> None:
    tier = make_tier(redis_db, ttl=tier_ttl)
    if use_async:
        await tier.set_async("k", "v", ttl=set_ttl)
        await tier.aclose()
    else:
        tier.set("k", "v", ttl=set_ttl)
    remaining = raw.pttl(PREFIX + "k")
    if expected is None:
        assert remaining == -1  # the key exists and never expires
    else:
        assert max(0, expected * 1000 - 5000) < remaining <= expected * 1000


# ---------------------------------------------------------------------------- prefix


@pytest.fixture
def neighbours(raw: redis.Redis) -> dict[str, bytes]:
    """Keys other programs keep in the same Redis; some match the prefix as a glob would."""
    keys = {
        "site-b:k": b'{"other":"site"}',
        "other:k": b"not even json",
        "site*": b"1",
        "k": b"2",
    }
    raw.mset(keys)
    return keys


@pytest.fixture
def glob_tier(redis_db: RedisServer, make_tier: Callable[..., RedisTier]) -> RedisTier:
    """A tier whose prefix is a glob pattern if left unescaped: `site*:` matches `site-b:k`."""
    return make_tier(redis_db, prefix="site*:")


def remaining_keys(raw: redis.Redis) -> set[str]:
    return {name.decode() for name in cast(list[bytes], raw.keys("*"))}


def test_clear_deletes_only_its_own_prefix(
    glob_tier: RedisTier, raw: redis.Redis, neighbours: dict[str, bytes]
) -> None:
    glob_tier.set("a", 1)
    glob_tier.set("b", {"x": 2})
    assert glob_tier.clear() == 2
    assert remaining_keys(raw) == set(neighbours)
    assert glob_tier.clear() == 0


def test_usage_counts_only_its_own_prefix(
    glob_tier: RedisTier, neighbours: dict[str, bytes]
) -> None:
    assert glob_tier.usage() == TierUsage("redis", 0, 0)
    values = ["é", {"x": [1, 2]}, None]
    for n, value in enumerate(values):
        glob_tier.set(str(n), value)
    size = sum(len(encode(value)) for value in values)
    assert glob_tier.usage() == TierUsage("redis", 3, size)


def test_clear_and_usage_cover_more_than_one_scan_batch(tier: RedisTier, raw: redis.Redis) -> None:
    raw.mset({f"{PREFIX}{n}": b"[1]" for n in range(2500)})
    assert tier.usage() == TierUsage("redis", 2500, 3 * 2500)
    assert tier.clear() == 2500
    assert raw.dbsize() == 0


def test_prune_deletes_refused_and_unreadable_values_under_its_prefix(
    glob_tier: RedisTier, raw: redis.Redis, neighbours: dict[str, bytes]
) -> None:
    glob_tier.set("kept", {"stale": False})
    glob_tier.set("refused", {"stale": True})
    raw.set("site*:corrupt", b"{broken")
    raw.set("site*:pickled", pickle.dumps({"stale": False}))
    judged: list[tuple[str, Any]] = []

    def keep(key: str, value: Any) -> bool:
        judged.append((key, value))
        return not value["stale"]

    assert glob_tier.prune(keep) == 3
    assert sorted(judged) == [("kept", {"stale": False}), ("refused", {"stale": True})]
    assert remaining_keys(raw) == {*neighbours, "site*:kept"}
    assert glob_tier.prune(keep) == 0


# ---------------------------------------------------------------------------- outages


@pytest.mark.parametrize("used_before", [True, False], ids=["after-use", "before-first-call"])
def test_a_killed_server_opens_the_breaker_once_and_is_never_called_again(
    own_redis_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    loopback_only: ConnectLog,
    redis_calls: CommandCount,
    caplog: pytest.LogCaptureFixture,
    used_before: bool,
) -> None:
    tier = make_tier(own_redis_server)
    if used_before:
        tier.set("k0", "v")
        assert tier.get("k0") == "v"
    own_redis_server.kill()
    port = own_redis_server.port

    with caplog.at_level(logging.WARNING, logger="trinity"):
        connects = loopback_only.to_port(port)
        assert tier.get("k0") is None
        # redis-py's own retries are off: the failing call tried to connect at most once.
        assert loopback_only.to_port(port) - connects <= 1
        assert (tier.failed_calls, tier.breaker.is_open, tier.breaker.openings) == (1, True, 1)

        connects, commands = loopback_only.to_port(port), redis_calls.count
        use_every_call(tier)

    assert tier.failed_calls == 1
    assert (loopback_only.to_port(port), redis_calls.count) == (connects, commands)
    (warning,) = warnings_in(caplog)
    assert f"127.0.0.1:{port}/0" in warning
    assert "continuing without it" in warning


def test_nothing_listening_costs_one_connect_attempt(
    loopback_only: ConnectLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    tier = RedisTier(host="127.0.0.1", port=port)
    try:
        with caplog.at_level(logging.WARNING, logger="trinity"):
            tier.set("k", 1)
            use_every_call(tier)
    finally:
        tier.close()
    assert loopback_only.to_port(port) == 1
    assert tier.failed_calls == 1
    assert len(warnings_in(caplog)) == 1


def test_time_lost_counts_the_failed_call_with_the_injected_clock() -> None:
    tier = RedisTier(host="127.0.0.1", port=free_port(), clock=FakeClock(step=0.25))
    try:
        assert tier.get("k") is None
        use_every_call(tier)
    finally:
        tier.close()
    assert tier.failed_calls == 1
    assert tier.time_lost == 0.25  # one call: started at t, failed at t + 0.25


@pytest.mark.parametrize("used_before", [True, False], ids=["open-connection", "new-connection"])
def test_a_paused_server_times_out_once_and_is_never_called_again(
    own_redis_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    loopback_only: ConnectLog,
    redis_calls: CommandCount,
    caplog: pytest.LogCaptureFixture,
    used_before: bool,
) -> None:
    tier = make_tier(own_redis_server)
    if used_before:
        tier.set("k0", "v")
    own_redis_server.pause()
    try:
        with caplog.at_level(logging.WARNING, logger="trinity"):
            # Returns after the 100 ms socket timeout rather than waiting for Redis.
            assert tier.get("k0") is None
            assert (tier.failed_calls, tier.breaker.is_open) == (1, True)
            connects, commands = loopback_only.to_port(own_redis_server.port), redis_calls.count
            use_every_call(tier)
    finally:
        own_redis_server.resume()

    assert tier.failed_calls == 1
    assert (loopback_only.to_port(own_redis_server.port), redis_calls.count) == (
        connects,
        commands,
    )
    (warning,) = warnings_in(caplog)
    assert "timeout" in warning.lower()


def test_the_breaker_stays_open_after_the_server_comes_back(
    own_redis_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    redis_calls: CommandCount,
) -> None:
    tier = make_tier(own_redis_server)
    tier.set("k", "v")
    own_redis_server.pause()
    try:
        assert tier.get("k") is None
    finally:
        own_redis_server.resume()
    commands = redis_calls.count
    assert tier.get("k") is None  # for the rest of the run, without asking
    assert redis_calls.count == commands


# ---------------------------------------------------------------------------- breaker


def test_breaker_opens_on_the_first_trip_only() -> None:
    breaker = RedisBreaker(clock=FakeClock())
    assert not breaker.is_open
    assert breaker.trip() is True
    assert breaker.trip() is False
    assert (breaker.is_open, breaker.openings) == (True, 1)


def test_breaker_without_reset_after_stays_open_for_good() -> None:
    clock = FakeClock()
    breaker = RedisBreaker(clock=clock)
    breaker.trip()
    clock.now += 10**9
    assert breaker.is_open


def test_breaker_closes_after_reset_after_and_can_open_again() -> None:
    clock = FakeClock()
    breaker = RedisBreaker(reset_after=30, clock=clock)
    breaker.trip()
    clock.now += 29.9
    assert breaker.is_open
    clock.now += 0.1
    assert not breaker.is_open
    assert breaker.trip() is True
    assert (breaker.is_open, breaker.openings) == (True, 2)


def test_reset_after_lets_the_tier_try_redis_again(
    own_redis_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    tier = make_tier(own_redis_server, breaker=RedisBreaker(reset_after=30, clock=clock))
    tier.set("k", "v")
    with caplog.at_level(logging.WARNING, logger="trinity"):
        own_redis_server.pause()
        try:
            assert tier.get("k") is None
        finally:
            own_redis_server.resume()
        clock.now += 29
        assert tier.get("k") is None  # still open, though Redis is back
        clock.now += 1
        assert tier.get("k") == "v"

        own_redis_server.pause()
        try:
            assert tier.get("k") is None
        finally:
            own_redis_server.resume()

    assert (tier.failed_calls, tier.breaker.openings) == (2, 2)
    assert len(warnings_in(caplog)) == 2  # one per opening


# ---------------------------------------------------------------------------- password


def test_a_password_protected_server_works_with_the_password(
    auth_server: RedisServer, make_tier: Callable[..., RedisTier]
) -> None:
    tier = make_tier(auth_server, password=PASSWORD)
    tier.set("k", {"a": 1})
    assert tier.get("k") == {"a": 1}
    assert tier.failed_calls == 0
    with auth_server.client() as client:
        assert client.get(PREFIX + "k") == encode({"a": 1})


@pytest.mark.parametrize("password", [None, "wrong-password"], ids=["none", "wrong"])
def test_a_password_protected_server_is_a_miss_without_the_password(
    auth_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    caplog: pytest.LogCaptureFixture,
    password: str | None,
) -> None:
    tier = make_tier(auth_server, password=password)
    with caplog.at_level(logging.WARNING, logger="trinity"):
        tier.set("k", 1)
        assert tier.get("k") is None
    assert (tier.failed_calls, tier.breaker.is_open) == (1, True)
    (warning,) = warnings_in(caplog)
    assert "wrong-password" not in warning
    with auth_server.client() as client:
        assert client.dbsize() == 0


# ---------------------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_round_trip_shares_entries_with_the_sync_client(
    tier: RedisTier, raw: redis.Redis
) -> None:
    await tier.set_async("k", {"a": "é"})
    assert raw.get(PREFIX + "k") == encode({"a": "é"})
    assert tier.get("k") == {"a": "é"}
    tier.set("sync", [1])
    assert await tier.get_async("sync") == [1]
    await tier.delete_async("k")
    assert await tier.get_async("k") is None
    assert raw.exists(PREFIX + "k") == 0
    await tier.aclose()
    # A closed tier makes a new client when it is used again.
    assert await tier.get_async("sync") == [1]
    await tier.aclose()


@pytest.mark.parametrize("outage", ["kill", "pause"])
@pytest.mark.anyio
async def test_async_outage_opens_the_breaker_shared_with_the_sync_path(
    own_redis_server: RedisServer,
    make_tier: Callable[..., RedisTier],
    loopback_only: ConnectLog,
    redis_calls: CommandCount,
    caplog: pytest.LogCaptureFixture,
    outage: str,
) -> None:
    tier = make_tier(own_redis_server)
    await tier.set_async("k0", "v")
    stop: dict[str, Callable[[], None]] = {
        "kill": own_redis_server.kill,
        "pause": own_redis_server.pause,
    }
    stop[outage]()
    port = own_redis_server.port
    try:
        with caplog.at_level(logging.WARNING, logger="trinity"):
            assert await tier.get_async("k0") is None
            assert (tier.failed_calls, tier.breaker.is_open) == (1, True)
            connects, commands = loopback_only.to_port(port), redis_calls.count
            await use_every_call_async(tier)
            use_every_call(tier)
    finally:
        if outage == "pause":
            own_redis_server.resume()
        await tier.aclose()

    assert tier.failed_calls == 1
    assert (loopback_only.to_port(port), redis_calls.count) == (connects, commands)
    assert len(warnings_in(caplog)) == 1


# ---------------------------------------------------------------------------- manager


@pytest.fixture
def stack(
    tier: RedisTier, tmp_path: Path
) -> Iterator[tuple[CacheManager, MemoryTier, RedisTier, DiskTier]]:
    memory, disk = MemoryTier(), DiskTier(tmp_path / "disk")
    manager = CacheManager([memory, tier, disk])
    yield manager, memory, tier, disk
    manager.close()


Stack = tuple[CacheManager, MemoryTier, RedisTier, DiskTier]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.anyio
async def test_manager_promotes_through_memory_redis_and_disk(
    stack: Stack, raw: redis.Redis, use_async: bool
) -> None:
    manager, memory, redis_tier, disk = stack

    async def lookup(key: str) -> tuple[Any, str] | None:
        return await manager.lookup_async(key) if use_async else manager.lookup(key)

    disk.set("deep", {"from": "disk"})
    assert await lookup("deep") == ({"from": "disk"}, "disk")
    assert memory.get("deep") == {"from": "disk"}
    assert raw.get(PREFIX + "deep") == encode({"from": "disk"})

    redis_tier.set("middle", {"from": "redis"})
    assert await lookup("middle") == ({"from": "redis"}, "redis")
    assert memory.get("middle") == {"from": "redis"}
    assert disk.get("middle") is None

    assert await lookup("deep") == ({"from": "disk"}, "memory")
    assert manager.hits == {"memory": 1, "redis": 1, "disk": 1}
    await manager.aclose()


def test_manager_writes_clears_and_prunes_every_tier(stack: Stack, raw: redis.Redis) -> None:
    manager, memory, _, disk = stack
    manager.set("a", 1)
    manager.set("b", 2)
    assert raw.get(PREFIX + "a") == b"1"
    assert (len(memory), len(disk)) == (2, 2)
    assert manager.prune(lambda key, value: key != "b") == {"memory": 1, "redis": 1, "disk": 1}
    assert [u.entries for u in manager.usage()] == [1, 1, 1]
    assert manager.clear_all() == {"memory": 1, "redis": 1, "disk": 1}
    assert raw.dbsize() == 0


def test_manager_keeps_working_from_disk_when_redis_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = RedisTier(host="127.0.0.1", port=free_port())
    memory, disk = MemoryTier(), DiskTier(tmp_path / "disk")
    manager = CacheManager([memory, down, disk])
    try:
        with caplog.at_level(logging.WARNING, logger="trinity"):
            manager.set("k", "v")
            memory.clear()
            assert manager.lookup("k") == ("v", "disk")
            assert manager.lookup("k") == ("v", "memory")
    finally:
        manager.close()
    assert down.failed_calls == 1
    (warning,) = warnings_in(caplog)
    assert "Redis cache" in warning


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize("server_fixture", ["redis_db", "auth_server"], ids=["open", "password"])
def test_environment_settings_reach_the_server(
    project: ProjectFactory, request: pytest.FixtureRequest, server_fixture: str
) -> None:
    server: RedisServer = request.getfixturevalue(server_fixture)
    settings = project.load(environ=server.environ)
    assert settings.cache.tiers == ("memory", "redis", "disk")
    manager = CacheManager.from_settings(settings.cache)
    try:
        assert [tier.name for tier in manager.tiers] == ["memory", "redis", "disk"]
        redis_tier = manager.tier("redis")
        assert isinstance(redis_tier, RedisTier)
        assert (redis_tier.timeout, redis_tier.prefix) == (0.5, "trinity:")
        manager.set("k", {"a": 1})
        with server.client() as client:
            assert client.get("trinity:k") == encode({"a": 1})
            assert 0 < client.ttl("trinity:k") <= 30 * 24 * 3600
        assert redis_tier.failed_calls == 0
    finally:
        manager.close()
