"""Cache tiers: the memory LRU, the JSON-only disk tier, and the manager in front of them."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import Any

import diskcache
import pytest

from trinity.cache.disk import FOLDER_MODE, DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier

# ---------------------------------------------------------------------------- helpers

UNPICKLED: list[str] = []


def record_unpickling(marker: str) -> str:
    """Called by pickle when an Exploit is loaded: proof that something was unpickled."""
    UNPICKLED.append(marker)
    return marker


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return record_unpickling, (self.marker,)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BrokenTier:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: Any) -> Any:
        self.calls += 1
        raise OSError("disk on fire")

    get = set = delete = clear = _fail


class RecordingTier(MemoryTier):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.gets = 0

    def get(self, key: str) -> Any | None:
        self.gets += 1
        return super().get(key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def disk(tmp_path: Path) -> Any:
    tier = DiskTier(tmp_path / "cache")
    yield tier
    tier.close()


# ---------------------------------------------------------------------------- memory


def test_memory_round_trip_and_miss() -> None:
    tier = MemoryTier()
    tier.set("k", {"text": "v"})
    assert tier.get("k") == {"text": "v"}
    assert tier.get("other") is None
    tier.delete("k")
    assert tier.get("k") is None


def test_memory_is_bounded_and_evicts_the_least_recently_used() -> None:
    tier = MemoryTier(max_entries=2)
    tier.set("a", 1)
    tier.set("b", 2)
    assert tier.get("a") == 1  # a is now the most recently used
    tier.set("c", 3)
    assert len(tier) == 2
    assert tier.get("b") is None
    assert (tier.get("a"), tier.get("c")) == (1, 3)


def test_memory_overwrite_refreshes_recency() -> None:
    tier = MemoryTier(max_entries=2)
    tier.set("a", 1)
    tier.set("b", 2)
    tier.set("a", 10)
    tier.set("c", 3)
    assert (tier.get("a"), tier.get("b"), tier.get("c")) == (10, None, 3)


@pytest.mark.parametrize("count", [1, 5, 50])
def test_memory_never_holds_more_than_its_bound(count: int) -> None:
    tier = MemoryTier(max_entries=3)
    for n in range(count):
        tier.set(str(n), n)
    assert len(tier) == min(count, 3)
    assert tier.get(str(count - 1)) == count - 1


def test_memory_ttl_with_a_fake_clock(clock: FakeClock) -> None:
    tier = MemoryTier(ttl=10, clock=clock)
    tier.set("k", "v")
    clock.now += 9.9
    assert tier.get("k") == "v"
    clock.now += 0.1
    assert tier.get("k") is None
    assert len(tier) == 0  # expired entries are dropped, not kept


def test_memory_per_entry_ttl_overrides_the_default(clock: FakeClock) -> None:
    tier = MemoryTier(ttl=100, clock=clock)
    tier.set("short", 1, ttl=1)
    tier.set("default", 2)
    clock.now += 50
    assert tier.get("short") is None
    assert tier.get("default") == 2


def test_memory_without_ttl_keeps_entries(clock: FakeClock) -> None:
    tier = MemoryTier(clock=clock)
    tier.set("k", "v")
    clock.now += 10**9
    assert tier.get("k") == "v"


def test_memory_clear() -> None:
    tier = MemoryTier()
    tier.set("a", 1)
    tier.clear()
    assert len(tier) == 0


# ---------------------------------------------------------------------------- disk


def test_disk_round_trip(disk: DiskTier) -> None:
    value = {"text": "Grüße ✓", "n": 3, "list": [1, None, True]}
    disk.set("k", value)
    assert disk.get("k") == value
    assert disk.get("missing") is None
    assert len(disk) == 1


def test_disk_survives_reopening(tmp_path: Path) -> None:
    first = DiskTier(tmp_path / "c")
    first.set("k", {"text": "v"})
    first.close()
    second = DiskTier(tmp_path / "c")
    try:
        assert second.get("k") == {"text": "v"}
    finally:
        second.close()


def test_disk_stores_json_bytes(disk: DiskTier) -> None:
    disk.set("k", {"a": "é"})
    raw = diskcache.Cache(str(disk.directory))
    try:
        assert raw.get("k") == '{"a":"é"}'.encode()
    finally:
        raw.close()


@pytest.mark.parametrize("existing_mode", [None, 0o755, 0o777])
def test_disk_folder_is_private(tmp_path: Path, existing_mode: int | None) -> None:
    folder = tmp_path / "cache"
    if existing_mode is not None:
        folder.mkdir()
        folder.chmod(existing_mode)
    tier = DiskTier(folder)
    tier.close()
    assert stat.S_IMODE(folder.stat().st_mode) == FOLDER_MODE == 0o700


def test_disk_ttl_expires_entries(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    try:
        tier.set("k", "v", ttl=-1)
        assert tier.get("k") is None
    finally:
        tier.close()


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(b"not json {", id="corrupt-bytes"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param("a plain string", id="str"),
        pytest.param(42, id="int"),
        pytest.param(1.5, id="float"),
    ],
)
def test_disk_reads_foreign_values_as_a_miss(disk: DiskTier, planted: Any) -> None:
    raw = diskcache.Cache(str(disk.directory))
    try:
        raw.set("k", planted)
    finally:
        raw.close()
    assert disk.get("k") is None


def test_disk_deletes_a_corrupt_entry(disk: DiskTier) -> None:
    raw = diskcache.Cache(str(disk.directory))
    try:
        raw.set("k", b"{broken")
    finally:
        raw.close()
    assert disk.get("k") is None
    assert len(disk) == 0


@pytest.mark.parametrize(
    "make_value",
    [
        pytest.param(lambda m: Exploit(m), id="object"),
        pytest.param(lambda m: {"text": Exploit(m)}, id="nested"),
        pytest.param(lambda m: {"pad": "x" * 100_000, "e": Exploit(m)}, id="large-file"),
    ],
)
def test_disk_never_unpickles_a_planted_entry(
    disk: DiskTier, make_value: Any, request: pytest.FixtureRequest
) -> None:
    marker = request.node.name
    raw = diskcache.Cache(str(disk.directory))
    try:
        raw.set("key", make_value(marker))
    finally:
        raw.close()
    UNPICKLED.clear()

    assert disk.get("key") is None
    assert UNPICKLED == []
    # And the entry is gone, so a second look does not even find it.
    assert disk.get("key") is None
    assert UNPICKLED == []
    assert len(disk) == 0


def test_the_planted_entry_would_run_code_with_plain_diskcache(tmp_path: Path) -> None:
    # The control for the test above: the exploit is real when diskcache unpickles.
    raw = diskcache.Cache(str(tmp_path / "c"))
    try:
        raw.set("key", Exploit("control"))
        UNPICKLED.clear()
        assert raw.get("key") == "control"
        assert UNPICKLED == ["control"]
    finally:
        raw.close()
        UNPICKLED.clear()


def test_disk_clear(disk: DiskTier) -> None:
    disk.set("a", 1)
    disk.set("b", 2)
    disk.clear()
    assert len(disk) == 0


# ---------------------------------------------------------------------------- manager


def test_manager_defaults_to_a_memory_tier() -> None:
    manager = CacheManager()
    assert [tier.name for tier in manager.tiers] == ["memory"]


def test_manager_promotes_a_disk_hit_into_memory(tmp_path: Path) -> None:
    memory = MemoryTier()
    disk = DiskTier(tmp_path / "c")
    try:
        disk.set("k", {"text": "v"})
        manager = CacheManager([memory, disk])
        assert memory.get("k") is None

        assert manager.lookup("k") == ({"text": "v"}, "disk")
        assert memory.get("k") == {"text": "v"}
        assert manager.lookup("k") == ({"text": "v"}, "memory")
        assert manager.hits == {"memory": 1, "disk": 1}
        assert manager.misses == 0
    finally:
        disk.close()


def test_manager_counts_misses_and_writes_every_tier() -> None:
    upper, lower = RecordingTier("upper"), RecordingTier("lower")
    manager = CacheManager([upper, lower])
    assert manager.get("k") is None
    assert manager.misses == 1
    assert (upper.gets, lower.gets) == (1, 1)
    manager.set("k", 5)
    assert (MemoryTier.get(upper, "k"), MemoryTier.get(lower, "k")) == (5, 5)
    manager.delete("k")
    assert manager.get("k") is None


def test_a_memory_hit_does_not_touch_lower_tiers() -> None:
    upper, lower = RecordingTier("upper"), RecordingTier("lower")
    manager = CacheManager([upper, lower])
    manager.set("k", 1)
    assert manager.get("k") == 1
    assert (upper.gets, lower.gets) == (1, 0)


def test_manager_clear_all() -> None:
    upper, lower = MemoryTier(), MemoryTier()
    manager = CacheManager([upper, lower])
    manager.set("k", 1)
    manager.clear_all()
    assert (len(upper), len(lower)) == (0, 0)


@pytest.mark.parametrize("position", [0, 1])
def test_a_broken_tier_is_dropped_with_one_warning(
    caplog: pytest.LogCaptureFixture, position: int
) -> None:
    broken, memory = BrokenTier(), MemoryTier()
    tiers: list[Any] = [memory]
    tiers.insert(position, broken)
    manager = CacheManager(tiers)
    memory.set("k", "v")

    with caplog.at_level(logging.WARNING, logger="trinity"):
        assert manager.get("k") == "v"
        manager.set("k2", "v2")
        assert manager.get("k2") == "v2"

    assert manager.tiers == [memory]
    assert broken.calls == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken cache failed" in warnings[0].getMessage()
    assert "disk on fire" in warnings[0].getMessage()


def test_for_directory_falls_back_to_memory_when_disk_is_unusable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="trinity"):
        manager = CacheManager.for_directory(blocker / "cache")
    assert [tier.name for tier in manager.tiers] == ["memory"]
    assert "unusable" in caplog.text
    manager.set("k", 1)
    assert manager.get("k") == 1


def test_for_directory_has_memory_then_disk(tmp_path: Path) -> None:
    manager = CacheManager.for_directory(tmp_path / "c", ttl=5)
    try:
        assert [tier.name for tier in manager.tiers] == ["memory", "disk"]
        manager.set("k", {"a": 1})
    finally:
        manager.close()
    reopened = CacheManager.for_directory(tmp_path / "c")
    try:
        assert reopened.lookup("k") == ({"a": 1}, "disk")
    finally:
        reopened.close()


# ---------------------------------------------------------------------------- async twins


@pytest.mark.anyio
async def test_async_twins(tmp_path: Path) -> None:
    memory, disk = MemoryTier(), DiskTier(tmp_path / "c")
    manager = CacheManager([memory, disk])
    try:
        assert await manager.lookup_async("k") is None
        await manager.set_async("k", {"text": "v"})
        assert await manager.get_async("k") == {"text": "v"}
        memory.clear()
        assert await manager.lookup_async("k") == ({"text": "v"}, "disk")
        assert memory.get("k") == {"text": "v"}
        await manager.delete_async("k")
        assert await manager.get_async("k") is None
        await manager.set_async("k2", 1)
        await manager.clear_all_async()
        assert (len(memory), len(disk)) == (0, 0)
    finally:
        manager.close()


@pytest.mark.anyio
async def test_async_lookup_survives_a_broken_tier(caplog: pytest.LogCaptureFixture) -> None:
    memory = MemoryTier()
    manager = CacheManager([BrokenTier(), memory])
    await manager.set_async("k", 1)
    assert await manager.get_async("k") == 1
    assert [tier.name for tier in manager.tiers] == ["memory"]
