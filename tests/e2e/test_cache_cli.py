"""`trinity cache stats | clear | prune`, the build summary's cache row, and bad input to
the cache commands, through the CLI against the fake LLM server and a real redis-server."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from tests.e2e.sitekit import BLOCKS, MODEL, RunResult, SiteProject
from tests.redisserver import RedisServer, free_port
from trinity.cache.disk import DiskTier
from trinity.cache.redis import RedisTier
from trinity.cache.tier import CacheTier
from trinity.llm.entries import KEY_VERSION
from trinity.manifest import MANIFEST_FILE

PREFIX = "trinity:"
UNRELATED_KEY = "another-app:session"
UNRELATED_VALUE = b"not Trinity's"
TIERS = ("memory", "redis", "disk")
TTL = 3600


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def cache_command(site: SiteProject, *args: str, env: Mapping[str, str] | None = None) -> RunResult:
    return site.cli("cache", *args, "--project", site.root, env=env)


def stats_rows(result: RunResult) -> dict[str, list[str]]:
    """The rows of the stats table by tier, as cells (columns are 2+ spaces apart)."""
    rows: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in TIERS:
            rows[cells[0]] = cells
    return rows


def disk_entries(site: SiteProject) -> int:
    disk = DiskTier(site.root / ".cache")
    try:
        return len(disk)
    finally:
        disk.close()


def trinity_keys(server: RedisServer) -> set[bytes]:
    with server.client() as client:
        return set(client.scan_iter(match=PREFIX + "*"))


def unreachable_redis() -> dict[str, str]:
    """Variables that enable Redis on a loopback port where nothing listens."""
    return {"CACHE_REDIS_HOST": "127.0.0.1", "CACHE_REDIS_PORT": str(free_port())}


@pytest.fixture
def redis_env(site_project: SiteProject, redis_db: RedisServer) -> dict[str, str]:
    """Redis enabled for the site through the environment, with an unrelated key in it.

    The site waits for Redis patiently: the 0.1 s default may pass on a busy machine.
    """
    data = site_project.settings()
    data["cache"]["redis"]["timeout"] = 5.0
    site_project.write_settings(data)
    with redis_db.client() as client:
        client.set(UNRELATED_KEY, UNRELATED_VALUE)
    return redis_db.environ


def unrelated_value(server: RedisServer) -> bytes | None:
    with server.client() as client:
        value = client.get(UNRELATED_KEY)
    assert value is None or isinstance(value, bytes)
    return value


# --------------------------------------------------------------------------- stats


def test_stats_show_entries_and_the_last_builds_hit_rate(site_project: SiteProject) -> None:
    before = cache_command(site_project, "stats")
    assert_ok(before)
    empty = stats_rows(before)["disk"]
    assert (empty[1], empty[3]) == ("0", "-")  # no entries, and no build to judge by

    assert_ok(site_project.build())
    # Without the last build's record, the next one renders every page from the cache.
    (site_project.output / MANIFEST_FILE).unlink()
    assert_ok(site_project.build())
    result = cache_command(site_project, "stats")

    assert_ok(result)
    rows = stats_rows(result)
    assert list(rows) == ["memory", "disk"]
    memory, disk = rows["memory"], rows["disk"]
    # The memory tier lives as long as a build: empty now, and it answered nothing.
    assert memory == ["memory", "0", "0 B", f"0 of {BLOCKS} (0%)", "this process"]
    assert disk[1] == str(BLOCKS)
    assert re.fullmatch(r"[0-9.]+ (B|KB|MB)", disk[2])
    assert disk[3:] == [f"{BLOCKS} of {BLOCKS} (100%)", str(site_project.root / ".cache")]

    # A build with nothing to do reads no cache: there is no hit rate to judge it by.
    assert_ok(site_project.build())
    after = stats_rows(cache_command(site_project, "stats"))
    assert (after["disk"][1], after["disk"][3]) == (str(BLOCKS), "-")


def test_stats_show_the_redis_row_when_redis_is_enabled(
    site_project: SiteProject, redis_env: dict[str, str]
) -> None:
    assert_ok(site_project.build(env=redis_env))

    result = cache_command(site_project, "stats", env=redis_env)

    assert_ok(result)
    rows = stats_rows(result)
    assert list(rows) == ["memory", "redis", "disk"]
    redis = rows["redis"]
    assert redis[1] == str(BLOCKS)
    assert redis[3] == f"0 of {BLOCKS} (0%)"
    port = redis_env["CACHE_REDIS_PORT"]
    assert redis[4] == f"redis://127.0.0.1:{port}/0 {PREFIX}*"


def test_stats_show_an_unreachable_redis_in_its_row(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    env = unreachable_redis()

    result = cache_command(site_project, "stats", env=env)

    assert_ok(result)
    rows = stats_rows(result)
    assert list(rows) == ["memory", "redis", "disk"]
    (_, problem) = rows["redis"]
    assert re.search(r"refused", problem, re.IGNORECASE), problem
    assert f"(redis://127.0.0.1:{env['CACHE_REDIS_PORT']}/0 {PREFIX}*)" in problem
    assert rows["disk"][1] == str(BLOCKS)


# --------------------------------------------------------------------------- clear


def test_clear_empties_every_tier_but_only_trinitys_redis_keys(
    site_project: SiteProject, redis_env: dict[str, str], redis_db: RedisServer
) -> None:
    assert_ok(site_project.build(env=redis_env))
    assert len(trinity_keys(redis_db)) == BLOCKS

    result = cache_command(site_project, "clear", env=redis_env)

    assert_ok(result)
    assert f"redis: removed {BLOCKS} entries" in result.stdout
    assert f"disk: removed {BLOCKS} entries" in result.stdout
    assert trinity_keys(redis_db) == set()
    assert unrelated_value(redis_db) == UNRELATED_VALUE
    assert disk_entries(site_project) == 0
    assert_ok(site_project.build(env=redis_env))
    assert site_project.server.chat_count == 2 * BLOCKS


@pytest.mark.parametrize(
    ("tier", "cleared"),
    [("disk", "disk"), ("filesystem", "disk"), ("redis", "redis")],
    ids=["disk", "filesystem-alias", "redis"],
)
def test_clear_one_tier(
    site_project: SiteProject,
    redis_env: dict[str, str],
    redis_db: RedisServer,
    tier: str,
    cleared: str,
) -> None:
    assert_ok(site_project.build(env=redis_env))

    result = cache_command(site_project, "clear", "--tier", tier, env=redis_env)

    assert_ok(result)
    assert result.stdout.strip() == f"{cleared}: removed {BLOCKS} entries"
    left = {"redis": len(trinity_keys(redis_db)), "disk": disk_entries(site_project)}
    assert left == {name: 0 if name == cleared else BLOCKS for name in left}
    assert unrelated_value(redis_db) == UNRELATED_VALUE


# --------------------------------------------------------------------------- prune


def entry(created: float) -> dict[str, Any]:
    """A cached answer as the client writes it."""
    return {
        "text": "An answer.",
        "model": MODEL,
        "input_tokens": 3,
        "output_tokens": 2,
        "finish_reason": "stop",
        "created": created,
    }


def plant(tier: CacheTier, now: float) -> tuple[str, dict[str, Any]]:
    """A fresh entry, one past cache.ttl, one under an old key version and one that is
    not an answer; the key and value of the fresh one."""
    fresh = f"v{KEY_VERSION}:{'a' * 64}"
    tier.set(fresh, entry(now - 60))
    tier.set(f"v{KEY_VERSION}:{'b' * 64}", entry(now - 2 * TTL))
    tier.set(f"v{KEY_VERSION - 1}:{'c' * 64}", entry(now - 60))
    tier.set(f"v{KEY_VERSION}:{'d' * 64}", {"not": "an answer"})
    return fresh, entry(now - 60)


def open_disk(site: SiteProject, redis: RedisServer) -> CacheTier:
    return DiskTier(site.root / ".cache")


def open_redis(site: SiteProject, redis: RedisServer) -> CacheTier:
    return RedisTier(host=redis.host, port=redis.port, prefix=PREFIX, timeout=5.0)


@pytest.mark.parametrize("tier_name", ["disk", "redis"])
def test_prune_drops_expired_old_version_and_foreign_entries(
    site_project: SiteProject, redis_env: dict[str, str], redis_db: RedisServer, tier_name: str
) -> None:
    site_project.update_settings("cache", ttl=TTL)
    opener = open_disk if tier_name == "disk" else open_redis
    tier = opener(site_project, redis_db)
    try:
        fresh, value = plant(tier, time.time())
    finally:
        tier.close()

    result = cache_command(site_project, "prune", env=redis_env)

    assert_ok(result)
    other = "redis" if tier_name == "disk" else "disk"
    assert f"{tier_name}: pruned 3 entries" in result.stdout
    assert f"{other}: pruned 0 entries" in result.stdout
    tier = opener(site_project, redis_db)
    try:
        assert tier.usage().entries == 1
        assert tier.get(fresh) == value
    finally:
        tier.close()
    assert unrelated_value(redis_db) == UNRELATED_VALUE


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("tier", "hint"),
    [("bogus", ""), ("disc", "did you mean 'disk'?")],
)
def test_an_unknown_tier_is_refused_with_the_choices(
    site_project: SiteProject, tier: str, hint: str
) -> None:
    result = cache_command(site_project, "clear", "--tier", tier)

    assert result.exit_code == 2, result.describe()
    assert "Traceback" not in result.output
    assert f"--tier: '{tier}' is not one of memory, redis, disk, filesystem" in result.flat
    assert hint in result.flat


def test_a_tier_that_is_not_enabled_is_refused(site_project: SiteProject) -> None:
    assert_ok(site_project.build())

    result = cache_command(site_project, "clear", "--tier", "redis")

    assert result.exit_code == 2, result.describe()
    assert "Traceback" not in result.output
    assert "--tier" in result.flat
    assert re.search(r"add it to cache\.tiers in \S*settings\.yaml", result.flat), result.flat
    assert "CACHE_REDIS_HOST" in result.flat
    assert disk_entries(site_project) == BLOCKS


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"tiers": ["memcached"]}, "cache.tiers[0]"),
        ({"tiers": ["disk", "filesystem"]}, "cache.tiers[1]"),
        ({"ttl": "soon"}, "cache.ttl"),
        ({"redis": {"port": 70000}}, "cache.redis.port"),
        ({"redis": {"password": "hunter2"}}, "cache.redis.password"),
        ({"disk": {"max_size_mb": 0}}, "cache.disk.max_size_mb"),
        ({"dir": ".cache"}, "cache.dir"),
    ],
    ids=["unknown-tier", "tier-twice", "ttl", "redis-port", "redis-password", "disk-size", "dir"],
)
@pytest.mark.parametrize("command", ["stats", "clear", "prune"])
def test_a_malformed_cache_section_is_refused(
    site_project: SiteProject, section: dict[str, Any], key: str, command: str
) -> None:
    data = site_project.settings()
    data["cache"] = {**data["cache"], **section}
    site_project.write_settings(data)

    result = cache_command(site_project, command)

    assert result.exit_code == 2, result.describe()
    assert "Traceback" not in result.output
    assert f"settings.yaml: {key}:" in result.flat
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("command", "done", "count", "left"),
    [("clear", "removed", BLOCKS, 0), ("prune", "pruned", 0, BLOCKS)],
)
def test_an_unreachable_redis_fails_the_command_after_the_other_tiers(
    site_project: SiteProject, command: str, done: str, count: int, left: int
) -> None:
    assert_ok(site_project.build())
    env = unreachable_redis()

    result = cache_command(site_project, command, env=env)

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "Error: the redis cache failed:" in result.flat
    assert f"127.0.0.1:{env['CACHE_REDIS_PORT']}" in result.flat
    assert result.stdout.strip() == f"disk: {done} {count} entries"
    assert disk_entries(site_project) == left


# --------------------------------------------------------------------------- build summary


def test_the_summary_shows_hits_per_tier_on_a_rebuild(
    site_project: SiteProject, redis_env: dict[str, str]
) -> None:
    first = site_project.build(env=redis_env)
    assert_ok(first)
    assert re.search(r"cache hits\s+0\s*$", first.stderr, re.MULTILINE), first.stderr

    from_disk = site_project.build()  # Redis, ahead of disk, is off this time
    shutil.rmtree(site_project.root / ".cache")
    from_redis = site_project.build(env=redis_env)

    for result, tier in ((from_disk, "disk"), (from_redis, "redis")):
        assert_ok(result)
        row = rf"cache hits\s+{BLOCKS} \({tier} {BLOCKS}\)\s*$"
        assert re.search(row, result.stderr, re.MULTILINE), result.stderr
    assert site_project.server.chat_count == BLOCKS


def test_stats_work_from_the_project_folder(
    site_project: SiteProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_ok(site_project.build())
    monkeypatch.chdir(site_project.root)

    result = site_project.cli("cache", "stats")

    assert_ok(result)
    assert stats_rows(result)["disk"][1] == str(BLOCKS)


# --------------------------------------------------------------------------- odd paths

# Square brackets are Rich markup: a folder named like this must still be shown as it is.
BRACKETED = "[draft]"


def test_stats_show_a_bracketed_cache_folder_as_it_is(
    make_site_project: Callable[..., SiteProject],
) -> None:
    site = make_site_project(BRACKETED)
    assert_ok(site.build())

    result = cache_command(site, "stats")

    assert_ok(result)
    assert stats_rows(result)["disk"][4] == str(site.root / ".cache")


def test_a_settings_error_names_a_bracketed_file_as_it_is(
    make_site_project: Callable[..., SiteProject],
) -> None:
    site = make_site_project(BRACKETED)
    site.update_settings("cache", ttl="soon")

    result = cache_command(site, "stats")

    assert result.exit_code == 2, result.describe()
    assert f"{BRACKETED}/config/settings.yaml: cache.ttl:" in result.flat


def test_stats_clear_and_prune_leave_the_state_builds_share_alone(
    site_project: SiteProject, redis_env: dict[str, str], redis_db: RedisServer
) -> None:
    """Rate-limit windows, a request's lock and a day's budget live under the prefix too,
    and are not cached answers: counted as entries they broke `stats` (a sorted set has
    no length as a string), and deleted they would reset another running build's limits."""
    site_project.update_settings("llm", limits={"rpm": 1000})
    assert_ok(site_project.build(env=redis_env))
    with redis_db.client() as client:
        client.set(f"{PREFIX}lock:v{KEY_VERSION}:abc", "a-token", px=60_000)
        client.hset(f"{PREFIX}budget:site:2026-12-06", "tokens", 10)
        shared = {k for k in trinity_keys(redis_db) if not k.startswith(b"trinity:v")}
    assert any(k.startswith(b"trinity:limits:") for k in shared)
    assert len(shared) >= 3

    stats = cache_command(site_project, "stats", env=redis_env)
    assert_ok(stats)
    assert stats_rows(stats)["redis"][1] == str(BLOCKS)
    for command in ("prune", "clear"):
        assert_ok(cache_command(site_project, command, env=redis_env))
        assert shared <= trinity_keys(redis_db), command
    assert trinity_keys(redis_db) == shared
