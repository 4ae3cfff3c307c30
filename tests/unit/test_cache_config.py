"""The `cache:` section of config/settings.yaml, and the CACHE_REDIS_* environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import ProjectFactory
from trinity.cache.settings import (
    REDIS_RETENTION,
    CacheSettings,
    DiskTierSettings,
    MemoryTierSettings,
    RedisTierSettings,
)
from trinity.errors import EXIT_BAD_INPUT, ConfigError

SETTINGS_FILE = str(Path("config") / "settings.yaml")
SECRET = "redis-pw-0123456789-SECRET"


def cache_section(text: str) -> str:
    """A settings file with a site title and `text` indented under `cache:`."""
    body = "".join(f"  {line}\n" for line in text.strip("\n").splitlines())
    return f"site:\n  title: T\ncache:\n{body}"


def load_cache(
    project: ProjectFactory, text: str = "", environ: dict[str, str] | None = None
) -> CacheSettings:
    project.settings_file(cache_section(text) if text else "site:\n  title: T\n")
    return project.load(environ=environ or {}).cache


def cache_error(
    project: ProjectFactory, text: str = "", environ: dict[str, str] | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_cache(project, text, environ)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    return caught.value


# ---------------------------------------------------------------------------- values


def test_defaults_without_a_cache_section(project: ProjectFactory) -> None:
    cache = load_cache(project)
    assert cache == CacheSettings(disk=DiskTierSettings(directory=project.root / ".cache"))
    assert cache.enabled is True
    assert cache.ttl is None
    assert cache.tiers == ("memory", "disk")
    assert cache.memory == MemoryTierSettings(max_entries=10_000, ttl=None)
    assert cache.redis == RedisTierSettings(
        host="localhost",
        port=6379,
        db=0,
        password=None,
        prefix="trinity:",
        timeout=0.5,
        ttl=REDIS_RETENTION,
    )
    assert (cache.disk.max_size_mb, cache.disk.ttl) == (1024, None)
    assert cache.directory == project.root / ".cache"


def test_every_key_is_read(project: ProjectFactory) -> None:
    cache = load_cache(
        project,
        """
enabled: false
ttl: 3600
tiers: [memory, redis, disk]
memory: {max_entries: 50, ttl: 60}
redis: {host: cache.internal, port: 6380, db: 2, prefix: "site:", timeout: 0.25, ttl: 86400}
disk: {dir: var/answers, max_size_mb: 64, ttl: 7200}
""",
    )
    assert cache == CacheSettings(
        enabled=False,
        ttl=3600,
        tiers=("memory", "redis", "disk"),
        memory=MemoryTierSettings(max_entries=50, ttl=60),
        redis=RedisTierSettings(
            host="cache.internal", port=6380, db=2, prefix="site:", timeout=0.25, ttl=86400
        ),
        disk=DiskTierSettings(directory=project.root / "var" / "answers", max_size_mb=64, ttl=7200),
    )


def test_an_absolute_disk_dir_is_kept(project: ProjectFactory, tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared-cache"
    cache = load_cache(project, f"disk: {{dir: '{elsewhere}'}}")
    assert cache.disk.directory == elsewhere


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        pytest.param("[memory]", ("memory",), id="memory"),
        pytest.param("[disk]", ("disk",), id="disk"),
        pytest.param("[redis]", ("redis",), id="redis"),
        pytest.param("[filesystem]", ("disk",), id="filesystem-alias"),
        pytest.param("[memory, filesystem]", ("memory", "disk"), id="alias-with-memory"),
        pytest.param("[disk, redis, memory]", ("memory", "redis", "disk"), id="lookup-order"),
        pytest.param("[]", (), id="none"),
    ],
)
def test_tiers_are_read_in_lookup_order(
    project: ProjectFactory, tiers: str, expected: tuple[str, ...]
) -> None:
    assert load_cache(project, f"tiers: {tiers}").tiers == expected


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("tiers", "key", "message"),
    [
        pytest.param("[memory, rediss]", "cache.tiers[1]",
                     "'rediss' is not one of memory, redis, disk", id="unknown"),
        pytest.param("[sqlite]", "cache.tiers[0]", "'sqlite' is not one of", id="unknown-first"),
        pytest.param("[disk, memory, disk]", "cache.tiers[2]", "'disk' is listed twice",
                     id="duplicate"),
        pytest.param("[disk, filesystem]", "cache.tiers[1]", "'filesystem' is listed twice",
                     id="duplicate-alias"),
        pytest.param("memory", "cache.tiers", "expected a list of non-empty strings",
                     id="not-a-list"),
        pytest.param("[memory, '']", "cache.tiers", "expected a list of non-empty strings",
                     id="empty-name"),
    ],
)  # fmt: skip
def test_bad_tiers_name_the_entry(
    project: ProjectFactory, tiers: str, key: str, message: str
) -> None:
    error = cache_error(project, f"tiers: {tiers}")
    assert (error.path, error.key) == (SETTINGS_FILE, key)
    assert message in str(error)
    assert f"{SETTINGS_FILE}: {key}: " in str(error)


def test_an_unknown_tier_gets_a_hint(project: ProjectFactory) -> None:
    error = cache_error(project, "tiers: [memory, rediss]")
    assert "did you mean 'redis'" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param("memory: {max_entries: 0}", "cache.memory.max_entries",
                     "must be at least 1", id="memory-max-entries"),
        pytest.param("memory: {max_entries: lots}", "cache.memory.max_entries",
                     "expected an integer, got a string", id="memory-max-entries-type"),
        pytest.param("memory: {ttl: 0}", "cache.memory.ttl", "must be at least 1",
                     id="memory-ttl"),
        pytest.param("memory: {size: 3}", "cache.memory.size", "unknown key 'size'",
                     id="memory-unknown"),
        pytest.param("memory: 5", "cache.memory", "expected a mapping, got an integer",
                     id="memory-shape"),
        pytest.param("redis: {host: ''}", "cache.redis.host", "must not be empty",
                     id="redis-host"),
        pytest.param("redis: {port: 0}", "cache.redis.port", "must be at least 1",
                     id="redis-port-low"),
        pytest.param("redis: {port: 65536}", "cache.redis.port", "must be at most 65535",
                     id="redis-port-high"),
        pytest.param("redis: {db: -1}", "cache.redis.db", "must be at least 0", id="redis-db"),
        pytest.param("redis: {timeout: 0}", "cache.redis.timeout", "must be at least",
                     id="redis-timeout"),
        pytest.param("redis: {timeout: soon}", "cache.redis.timeout",
                     "expected a number, got a string", id="redis-timeout-type"),
        pytest.param("redis: {ttl: 0}", "cache.redis.ttl", "must be at least 1",
                     id="redis-ttl"),
        pytest.param("redis: {prefix: 3}", "cache.redis.prefix",
                     "expected a string, got an integer", id="redis-prefix"),
        pytest.param("redis: {hots: x}", "cache.redis.hots", "did you mean 'host'",
                     id="redis-unknown"),
        pytest.param("disk: {dir: ''}", "cache.disk.dir", "must not be empty", id="disk-dir"),
        pytest.param("disk: {max_size_mb: 0}", "cache.disk.max_size_mb",
                     "must be at least 1", id="disk-max-size"),
        pytest.param("disk: {max_size_mb: 1.5}", "cache.disk.max_size_mb",
                     "expected an integer, got a number", id="disk-max-size-type"),
        pytest.param("disk: {ttl: 0}", "cache.disk.ttl", "must be at least 1", id="disk-ttl"),
        pytest.param("disk: {directory: x}", "cache.disk.directory", "unknown key",
                     id="disk-unknown"),
        pytest.param("ttl: -5", "cache.ttl", "must be at least 1", id="cache-ttl"),
    ],
)  # fmt: skip
def test_bad_tier_settings_name_the_file_and_key(
    project: ProjectFactory, text: str, key: str, message: str
) -> None:
    error = cache_error(project, text)
    assert (error.path, error.key) == (SETTINGS_FILE, key)
    assert message in str(error)
    assert f"{SETTINGS_FILE}: {key}: " in str(error)


def test_the_old_cache_dir_key_points_to_its_new_place(project: ProjectFactory) -> None:
    error = cache_error(project, "dir: elsewhere")
    assert (error.path, error.key) == (SETTINGS_FILE, "cache.dir")
    assert "cache.disk.dir" in str(error)


def test_a_password_in_the_file_is_refused_without_echoing_it(project: ProjectFactory) -> None:
    error = cache_error(project, f"redis: {{host: cache.internal, password: {SECRET}}}")
    assert (error.path, error.key) == (SETTINGS_FILE, "cache.redis.password")
    assert "CACHE_REDIS_PASSWORD" in str(error)
    assert SECRET not in str(error)


def test_a_password_in_the_file_is_refused_even_with_one_in_the_environment(
    project: ProjectFactory,
) -> None:
    error = cache_error(project, "redis: {password: x}", {"CACHE_REDIS_PASSWORD": SECRET})
    assert error.key == "cache.redis.password"


# ---------------------------------------------------------------------------- environment


def test_cache_redis_host_switches_redis_on_and_overrides_the_host(
    project: ProjectFactory,
) -> None:
    cache = load_cache(
        project,
        "tiers: [memory, disk]\nredis: {host: from-file, port: 6380}",
        {"CACHE_REDIS_HOST": "from-env"},
    )
    assert cache.tiers == ("memory", "redis", "disk")
    assert (cache.redis.host, cache.redis.port) == ("from-env", 6380)


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        pytest.param(None, ("memory", "redis", "disk"), id="default-tiers"),
        pytest.param("[disk]", ("redis", "disk"), id="disk-only"),
        pytest.param("[redis]", ("redis",), id="already-on"),
        pytest.param("[]", ("redis",), id="no-tiers"),
    ],
)
def test_cache_redis_host_adds_redis_in_lookup_order(
    project: ProjectFactory, tiers: str | None, expected: tuple[str, ...]
) -> None:
    text = f"tiers: {tiers}" if tiers is not None else ""
    cache = load_cache(project, text, {"CACHE_REDIS_HOST": "10.0.0.5"})
    assert cache.tiers == expected
    assert cache.redis.host == "10.0.0.5"


def test_an_empty_cache_redis_host_changes_nothing(project: ProjectFactory) -> None:
    cache = load_cache(project, "redis: {host: from-file}", {"CACHE_REDIS_HOST": ""})
    assert cache.tiers == ("memory", "disk")
    assert cache.redis.host == "from-file"


@pytest.mark.parametrize(
    ("environ", "port"),
    [
        pytest.param({}, 6380, id="file"),
        pytest.param({"CACHE_REDIS_PORT": "7000"}, 7000, id="environment"),
        pytest.param({"CACHE_REDIS_PORT": " 7001 "}, 7001, id="spaces"),
        pytest.param({"CACHE_REDIS_PORT": ""}, 6380, id="empty"),
    ],
)
def test_cache_redis_port_overrides_the_port(
    project: ProjectFactory, environ: dict[str, str], port: int
) -> None:
    assert load_cache(project, "redis: {port: 6380}", environ).redis.port == port


def test_cache_redis_port_alone_does_not_switch_redis_on(project: ProjectFactory) -> None:
    cache = load_cache(project, "", {"CACHE_REDIS_PORT": "7000"})
    assert cache.tiers == ("memory", "disk")
    assert cache.redis.port == 7000


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("redis", id="word"),
        pytest.param("0", id="zero"),
        pytest.param("65536", id="too-high"),
        pytest.param("-1", id="negative"),
        pytest.param("63.79", id="decimal"),
        pytest.param("6379x", id="trailing"),
        # str.isdigit() accepts it, int() does not.
        pytest.param("²", id="superscript-two"),
    ],
)
def test_a_bad_cache_redis_port_names_the_variable(project: ProjectFactory, raw: str) -> None:
    error = cache_error(project, "", {"CACHE_REDIS_HOST": "h", "CACHE_REDIS_PORT": raw})
    assert (error.path, error.key) == ("environment", "CACHE_REDIS_PORT")
    assert str(error).startswith("environment: CACHE_REDIS_PORT: ")
    assert f"got '{raw}'" in str(error)


def test_cache_redis_password_comes_from_the_environment_only(project: ProjectFactory) -> None:
    cache = load_cache(project, "", {"CACHE_REDIS_HOST": "h", "CACHE_REDIS_PASSWORD": SECRET})
    assert cache.redis.password == SECRET
    assert SECRET not in repr(cache)
    assert load_cache(project, "", {"CACHE_REDIS_PASSWORD": ""}).redis.password is None
