"""Cache tiers: the memory LRU, the JSON-only disk tier, and the manager in front of them."""

from __future__ import annotations

import logging
import pickle
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import diskcache
import pytest

from tests.fakeclock import FakeClock
from trinity.cache.disk import FOLDER_MODE, DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.settings import CacheSettings, DiskTierSettings, MemoryTierSettings
from trinity.cache.tier import TierUsage

# ---------------------------------------------------------------------------- helpers

UNPICKLED: list[str] = []
MEGABYTE = 1024 * 1024


def record_unpickling(marker: str) -> str:
    """Called by pickle when an Exploit is loaded: proof that something was unpickled."""
    UNPICKLED.append(marker)
    return marker


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return record_unpickling, (self.marker,)


class BrokenTier:
    """A tier whose every call fails, as a full disk or a vanished folder would."""

    name = "broken"
    location = "nowhere"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self, *args: Any) -> Any:
        self.calls += 1
        raise OSError("disk on fire")

    async def _fail_async(self, *args: Any) -> Any:
        self._fail()

    get = set = delete = clear = prune = usage = close = _fail
    get_async = set_async = delete_async = aclose = _fail_async


class RecordingTier(MemoryTier):
    """A memory tier under another name that counts the gets and sets it is asked for.

    Its async twins run through `get` and `set`, so both paths are counted.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.gets = 0
        self.sets = 0

    def get(self, key: str) -> Any | None:
        self.gets += 1
        return super().get(key)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.sets += 1
        super().set(key, value, ttl)

    def plant(self, key: str, value: Any) -> None:
        """Store a value without counting it as the manager's write."""
        MemoryTier.set(self, key, value)

    def holds(self, key: str) -> Any | None:
        """Look a value up without counting it as the manager's read."""
        return MemoryTier.get(self, key)


def keep_all(key: str, value: Any) -> bool:
    return True


def plant(directory: Path, key: Any, value: Any) -> None:
    """Write an entry with plain diskcache, which pickles whatever is not bytes or str."""
    raw = diskcache.Cache(str(directory))
    try:
        raw.set(key, value)
    finally:
        raw.close()


def plant_row(
    directory: Path, key: str, *, mode: int, value: Any, filename: str | None = None
) -> None:
    """Put a row into the Cache table with the sqlite3 module, as a hostile hand would."""
    with closing(sqlite3.connect(directory / diskcache.core.DBNAME)) as database, database:
        database.execute(
            "INSERT OR REPLACE INTO Cache(key, raw, store_time, access_time, size, mode,"
            " filename, value) VALUES (?, 1, 0, 0, 0, ?, ?, ?)",
            (key, mode, filename, value),
        )


def rows(directory: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(directory / diskcache.core.DBNAME)) as database:
        query = "SELECT key, raw, mode, filename FROM Cache ORDER BY rowid"
        return database.execute(query).fetchall()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def disk_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock diskcache reads store and expiry times from, under the test's control."""
    fake = FakeClock()
    monkeypatch.setattr(diskcache.core, "time", SimpleNamespace(time=fake, sleep=time.sleep))
    return fake


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskTier]:
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


def test_memory_clear_returns_how_many_it_held() -> None:
    tier = MemoryTier()
    tier.set("a", 1)
    tier.set("b", 2)
    assert tier.clear() == 2
    assert len(tier) == 0
    assert tier.clear() == 0


def test_memory_prune_drops_expired_and_refused_entries(clock: FakeClock) -> None:
    tier = MemoryTier(clock=clock)
    tier.set("old", 1, ttl=5)
    tier.set("refused", {"stale": True})
    tier.set("kept", {"stale": False})
    tier.set("fresh", 2, ttl=50)
    clock.now += 10
    judged: list[tuple[str, Any]] = []

    def keep(key: str, value: Any) -> bool:
        judged.append((key, value))
        return not (isinstance(value, dict) and value["stale"])

    assert tier.prune(keep) == 2
    assert len(tier) == 2
    assert (tier.get("kept"), tier.get("fresh")) == ({"stale": False}, 2)
    assert ("refused", {"stale": True}) in judged
    assert tier.prune(keep_all) == 0


def test_memory_usage_counts_entries_and_json_bytes() -> None:
    tier = MemoryTier()
    assert tier.usage() == TierUsage("memory", 0, 0)
    tier.set("a", "é")  # '"é"': two quotes and two UTF-8 bytes
    tier.set("b", {"n": 1})  # '{"n": 1}'
    assert tier.usage() == TierUsage("memory", 2, 4 + 8)


@pytest.mark.anyio
async def test_memory_async_twins_run_inline() -> None:
    threads: list[int] = []

    class Watched(MemoryTier):
        def get(self, key: str) -> Any | None:
            threads.append(threading.get_ident())
            return super().get(key)

    tier = Watched()
    await tier.set_async("k", [1, 2])
    assert await tier.get_async("k") == [1, 2]
    await tier.delete_async("k")
    assert await tier.get_async("k") is None
    assert threads == [threading.get_ident()] * 2
    await tier.aclose()


# ---------------------------------------------------------------------------- disk


def test_disk_round_trip(disk: DiskTier) -> None:
    value = {"text": "Grüße ✓", "n": 3, "list": [1, None, True]}
    disk.set("k", value)
    assert disk.get("k") == value
    assert disk.get("missing") is None
    assert len(disk) == 1
    disk.delete("k")
    assert disk.get("k") is None


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
    assert tier.location == str(folder)


def test_disk_ttl_expires_entries(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    try:
        tier.set("k", "v", ttl=-1)
        assert tier.get("k") is None
    finally:
        tier.close()


def test_disk_ttl_with_a_fake_clock(tmp_path: Path, disk_clock: FakeClock) -> None:
    tier = DiskTier(tmp_path / "c", ttl=10)
    try:
        tier.set("default", 1)
        tier.set("longer", 2, ttl=100)
        disk_clock.now += 9
        assert (tier.get("default"), tier.get("longer")) == (1, 2)
        disk_clock.now += 2
        assert (tier.get("default"), tier.get("longer")) == (None, 2)
    finally:
        tier.close()


def test_disk_without_ttl_keeps_entries(disk: DiskTier, disk_clock: FakeClock) -> None:
    disk.set("k", "v")
    disk_clock.now += 10**9
    assert disk.get("k") == "v"


def test_disk_is_bounded_by_max_size_and_evicts_the_oldest(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c", max_size_mb=1)
    payload = "x" * 50_000  # large enough that plain diskcache would keep it in a file
    try:
        for n in range(40):  # about twice the limit
            tier.set(f"k{n:02}", payload)
            assert tier.usage().bytes <= MEGABYTE
        assert 0 < len(tier) < 40
        assert tier.get("k00") is None
        assert tier.get("k39") == payload
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
    plant(disk.directory, "k", planted)
    assert disk.get("k") is None


def test_disk_deletes_a_corrupt_entry_and_the_next_set_replaces_it(disk: DiskTier) -> None:
    plant(disk.directory, "k", b"{broken")
    assert disk.get("k") is None
    assert len(disk) == 0
    disk.set("k", {"fresh": True})
    assert disk.get("k") == {"fresh": True}


def test_disk_keeps_large_values_inline_and_writes_no_file(disk: DiskTier) -> None:
    # Past diskcache's 32 KB `disk_min_file_size`, where it would write a side file.
    value = {"text": "y" * 1_000_000}
    disk.set("k", value)
    disk.set("k", value)  # and over an existing entry

    assert disk.get("k") == value
    assert rows(disk.directory) == [("k", 1, diskcache.core.MODE_RAW, None)]
    assert [p for p in disk.directory.rglob("*") if not p.name.startswith("cache.db")] == []


@pytest.mark.parametrize(
    "make_value",
    [
        pytest.param(lambda m: Exploit(m), id="object"),
        pytest.param(lambda m: {"text": Exploit(m)}, id="nested"),
        pytest.param(lambda m: {"pad": "x" * 100_000, "e": Exploit(m)}, id="large-file"),
    ],
)
def test_disk_never_unpickles_a_planted_entry(
    disk: DiskTier, make_value: Callable[[str], Any], request: pytest.FixtureRequest
) -> None:
    marker = request.node.name
    plant(disk.directory, "key", make_value(marker))
    UNPICKLED.clear()

    assert disk.get("key") is None
    assert UNPICKLED == []
    # And the entry is gone, so a second look does not even find it.
    assert disk.get("key") is None
    assert UNPICKLED == []
    assert len(disk) == 0


def test_the_planted_entry_would_run_code_with_plain_diskcache(tmp_path: Path) -> None:
    # The control for the tests above and below: the exploit is real when diskcache unpickles.
    raw = diskcache.Cache(str(tmp_path / "c"))
    try:
        raw.set("key", Exploit("control"))
        UNPICKLED.clear()
        assert raw.get("key") == "control"
        assert UNPICKLED == ["control"]
    finally:
        raw.close()
        UNPICKLED.clear()


def test_disk_clear_returns_how_many_it_held(disk: DiskTier) -> None:
    disk.set("a", 1)
    disk.set("b", 2)
    assert disk.clear() == 2
    assert len(disk) == 0


def test_disk_usage_counts_entries_and_stored_bytes(disk: DiskTier) -> None:
    empty = disk.usage()
    assert (empty.name, empty.entries) == ("disk", 0)
    disk.set("a", "x" * 100_000)
    disk.set("b", "y" * 10)
    grown = disk.usage()
    assert grown.entries == 2
    # Inline values count as SQLite's pages, some of which the empty database had free.
    assert grown.bytes >= 100_000 > empty.bytes


def test_disk_prune_drops_expired_refused_and_corrupt_entries(
    disk: DiskTier, disk_clock: FakeClock
) -> None:
    disk.set("expired", {"v": 1}, ttl=5)
    disk.set("refused", {"v": 2})
    disk.set("kept", {"v": 3})
    disk.set("fresh", {"v": 4}, ttl=50)
    plant(disk.directory, "corrupt", b"{broken")
    disk_clock.now += 10
    judged: list[tuple[str, Any]] = []

    def keep(key: str, value: Any) -> bool:
        judged.append((key, value))
        return key != "refused"

    assert disk.prune(keep) == 3
    assert sorted(key for key, _ in judged) == ["fresh", "kept", "refused"]
    assert len(disk) == 2
    assert (disk.get("kept"), disk.get("fresh")) == ({"v": 3}, {"v": 4})
    assert disk.prune(keep) == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("planted", Exploit("prune-value"), id="value"),
        pytest.param("large", {"pad": "x" * 100_000, "e": Exploit("prune-file")}, id="large-file"),
        pytest.param(Exploit("prune-key"), b"{}", id="key"),
    ],
)
def test_disk_prune_never_unpickles_a_planted_entry(disk: DiskTier, key: Any, value: Any) -> None:
    plant(disk.directory, key, value)
    disk.set("kept", 1)
    UNPICKLED.clear()

    disk.prune(keep_all)
    assert UNPICKLED == []
    assert disk.get("kept") == 1


def test_disk_prune_drops_planted_pickles(disk: DiskTier) -> None:
    plant(disk.directory, "planted", Exploit("prune-value"))
    plant(disk.directory, "large", {"pad": "x" * 100_000, "e": Exploit("prune-file")})
    disk.set("kept", 1)
    (side_file,) = disk.directory.rglob("*.val")  # plain diskcache put the large one there
    assert disk.prune(keep_all) == 2
    assert len(disk) == 1
    assert side_file.exists()  # a row's filename is never followed, not even to tidy up


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(Exploit("prune-key"), id="pickled-key"),
        pytest.param(b"bytes-key", id="bytes-key"),
    ],
)
def test_disk_prune_drops_entries_under_foreign_keys(disk: DiskTier, key: Any) -> None:
    # No lookup can ever reach these (Trinity's keys are strings), so they only take space.
    plant(disk.directory, key, b'{"json": "but unreachable"}')
    disk.set("kept", 1)

    assert disk.prune(keep_all) == 1
    assert len(disk) == 1


# ---------------------------------------------------------------------------- hostile rows

PLANTED = "planted"
MODE_BINARY, MODE_TEXT, MODE_PICKLE = (
    diskcache.core.MODE_BINARY,
    diskcache.core.MODE_TEXT,
    diskcache.core.MODE_PICKLE,
)


@pytest.fixture(params=["outside", "inside"])
def canary(request: pytest.FixtureRequest, tmp_path: Path, disk: DiskTier) -> tuple[Path, str]:
    """A file and the name a planted row gives it: outside the cache folder (an absolute
    path), or inside it where diskcache keeps its own side files (a relative one)."""
    if request.param == "outside":
        path = tmp_path / "canary.txt"
        name = str(path)
    else:
        path = disk.directory / "ab" / "cd" / "canary.val"
        path.parent.mkdir(parents=True)
        name = str(path.relative_to(disk.directory))
    path.write_text("still here")
    return path, name


def evict_by_filling(disk: DiskTier) -> None:
    for n in range(60):  # three times the 1 MB limit the test sets
        disk.set(f"filler{n}", "x" * 50_000)


HOSTILE_ACTIONS: dict[str, Callable[[DiskTier], object]] = {
    "get": lambda disk: disk.get(PLANTED),
    "set-over": lambda disk: disk.set(PLANTED, {"fresh": True}),
    "delete": lambda disk: disk.delete(PLANTED),
    "clear": lambda disk: disk.clear(),
    "prune": lambda disk: disk.prune(keep_all),
    "evict": evict_by_filling,
}


@pytest.mark.parametrize("mode", [MODE_BINARY, MODE_TEXT, MODE_PICKLE])
@pytest.mark.parametrize("action", HOSTILE_ACTIONS)
def test_disk_never_touches_the_file_a_planted_row_names(
    tmp_path: Path, canary: tuple[Path, str], action: str, mode: int
) -> None:
    path, name = canary
    tier = DiskTier(tmp_path / "cache", max_size_mb=1)
    try:
        plant_row(tier.directory, PLANTED, mode=mode, value=None, filename=name)
        HOSTILE_ACTIONS[action](tier)
        assert path.read_text() == "still here"
        assert tier.get(PLANTED) in (None, {"fresh": True})
        assert (PLANTED, 1, mode, name) not in rows(tier.directory)
    finally:
        tier.close()


def test_disk_drops_an_expired_planted_row_without_touching_its_file(
    disk: DiskTier, canary: tuple[Path, str]
) -> None:
    path, name = canary
    plant_row(disk.directory, PLANTED, mode=MODE_BINARY, value=None, filename=name)
    with closing(sqlite3.connect(disk.directory / diskcache.core.DBNAME)) as database, database:
        database.execute("UPDATE Cache SET expire_time = 1 WHERE key = ?", (PLANTED,))
    disk.set("other", 1)  # diskcache culls expired rows on every set
    assert rows(disk.directory) == [("other", 1, diskcache.core.MODE_RAW, None)]
    assert path.read_text() == "still here"


def test_the_planted_row_would_delete_the_file_with_plain_diskcache(
    disk: DiskTier, canary: tuple[Path, str]
) -> None:
    # The control for the tests above: diskcache follows a row's filename when it drops it.
    path, name = canary
    plant_row(disk.directory, PLANTED, mode=MODE_BINARY, value=None, filename=name)
    raw = diskcache.Cache(str(disk.directory))
    try:
        raw.delete(PLANTED)
    finally:
        raw.close()
    assert not path.exists()


@pytest.mark.parametrize(
    ("mode", "value", "filename"),
    [
        pytest.param(MODE_BINARY, b"\x80", None, id="binary-without-file"),
        pytest.param(MODE_TEXT, None, None, id="text-without-file"),
        pytest.param(MODE_PICKLE, pickle.dumps(Exploit("inline")), None, id="inline-pickle"),
        pytest.param(diskcache.core.MODE_RAW, "text, not bytes", None, id="raw-text"),
        pytest.param(diskcache.core.MODE_RAW, b"{}", "a/b/c.val", id="raw-with-file"),
        pytest.param(diskcache.core.MODE_NONE, None, None, id="mode-none"),
    ],
)
def test_a_corrupt_row_costs_one_miss_and_one_warning(
    disk: DiskTier,
    caplog: pytest.LogCaptureFixture,
    mode: int,
    value: Any,
    filename: str | None,
) -> None:
    plant_row(disk.directory, PLANTED, mode=mode, value=value, filename=filename)
    disk.set("good", {"ok": 1})
    UNPICKLED.clear()
    with caplog.at_level(logging.WARNING, logger="trinity"):
        assert disk.get(PLANTED) is None
        assert disk.get(PLANTED) is None  # gone: the second look is a plain miss
        disk.set(PLANTED, {"fresh": True})
        assert disk.get(PLANTED) == {"fresh": True}
        assert disk.get("good") == {"ok": 1}
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "disk cache" in warning.getMessage()
    assert PLANTED in warning.getMessage()
    assert UNPICKLED == []


def test_prune_deletes_corrupt_rows_and_keeps_good_ones(disk: DiskTier) -> None:
    plant_row(disk.directory, "corrupt", mode=MODE_BINARY, value=b"\x80")
    plant_row(disk.directory, "pickle", mode=MODE_PICKLE, value=pickle.dumps(Exploit("prune")))
    disk.set("good", 1)
    UNPICKLED.clear()
    assert disk.prune(keep_all) == 2
    assert [row[0] for row in rows(disk.directory)] == ["good"]
    assert UNPICKLED == []


@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal", "cache.db-shm"])
def test_disk_writes_through_no_planted_link(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "c"
    DiskTier(folder).close()
    canary = tmp_path / "precious"
    canary.write_bytes(b"")  # SQLite would make an empty file its database
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(canary)

    manager = memory_then_disk(folder)
    try:
        manager.set("k", 1)
    finally:
        manager.close()
    assert canary.read_bytes() == b""
    assert manager.tier("disk") is None  # unusable, said once, and the build goes on


def test_planted_sizes_neither_evict_everything_nor_change_the_counts(disk: DiskTier) -> None:
    huge = 10**15
    plant_row(disk.directory, PLANTED, mode=diskcache.core.MODE_RAW, value=b"{}")
    with closing(sqlite3.connect(disk.directory / diskcache.core.DBNAME)) as database, database:
        database.execute("UPDATE Cache SET size = ?, store_time = ?", (huge, huge))
        database.execute("UPDATE Settings SET value = ? WHERE key IN ('size', 'count')", (huge,))
    for n in range(20):  # would each cull ten entries if the cache looked full
        disk.set(f"k{n}", n)
    assert [disk.get(f"k{n}") for n in range(20)] == list(range(20))
    usage = disk.usage()
    assert (usage.entries, len(disk)) == (21, 21)
    assert usage.bytes < MEGABYTE


def test_disk_ignores_settings_planted_in_the_database(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    DiskTier(folder).close()
    with closing(sqlite3.connect(folder / diskcache.core.DBNAME)) as database, database:
        database.executemany(
            "INSERT OR REPLACE INTO Settings VALUES (?, ?)",
            [
                ("sqlite_query_only", 1),  # would refuse every write
                ("disk_bogus", 1),  # would not open: no Disk takes that argument
                ("eviction_policy", "none"),  # would never evict
                ("cull_limit", 0),
            ],
        )
    tier = DiskTier(folder, max_size_mb=1)
    try:
        evict_by_filling(tier)
        assert tier.get("filler59") == "x" * 50_000
        assert tier.get("filler0") is None
    finally:
        tier.close()


class ThreadWatchedDisk(DiskTier):
    """A disk tier that notes which thread each of its blocking calls ran on."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.threads: dict[str, set[int]] = {"get": set(), "set": set(), "delete": set()}

    def get(self, key: str) -> Any | None:
        self.threads["get"].add(threading.get_ident())
        return super().get(key)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.threads["set"].add(threading.get_ident())
        super().set(key, value, ttl)

    def delete(self, key: str) -> None:
        self.threads["delete"].add(threading.get_ident())
        super().delete(key)


@pytest.fixture
def sqlite_connections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every SQLite connection opened while the test runs."""
    threads: list[int] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.append(threading.get_ident())
        return connect(*args, **kwargs)

    monkeypatch.setattr(diskcache.core.sqlite3, "connect", recording_connect)
    return threads


@pytest.mark.anyio
async def test_disk_async_reads_run_inline_and_writes_on_one_thread_of_its_own(
    tmp_path: Path,
) -> None:
    tier = ThreadWatchedDisk(tmp_path / "c")
    try:
        await tier.set_async("k", {"a": 1})
        assert await tier.get_async("k") == {"a": 1}
        await tier.set_async("other", 2)
        await tier.delete_async("k")
        assert await tier.get_async("k") is None
    finally:
        await tier.aclose()
    (writer,) = tier.threads["set"]
    assert tier.threads["get"] == {threading.get_ident()}
    assert tier.threads["delete"] == {writer}
    assert writer != threading.get_ident()


@pytest.mark.anyio
async def test_disk_async_calls_from_many_tasks_use_at_most_two_sqlite_connections(
    tmp_path: Path, sqlite_connections: list[int]
) -> None:
    tier = ThreadWatchedDisk(tmp_path / "c")
    opened_by_init = len(sqlite_connections)  # diskcache connects on the caller's thread

    async def work(task: int) -> None:
        for n in range(20):
            key = f"{task}:{n}"
            await tier.set_async(key, n)
            assert await tier.get_async(key) == n
            # Other blocking work keeps anyio's worker threads busy and changing meanwhile.
            await anyio.to_thread.run_sync(time.sleep, 0)
            if n % 2:
                await tier.delete_async(key)

    try:
        async with anyio.create_task_group() as group:
            for task in range(50):
                group.start_soon(work, task)
    finally:
        await tier.aclose()
    touched = set().union(*tier.threads.values())
    assert len(touched) == 2
    assert set(sqlite_connections) == touched
    assert len(sqlite_connections) == opened_by_init + 1  # the writer's, once
    assert tier.threads["get"] == {threading.get_ident()}
    assert len(tier) == 50 * 10
    tier.close()


@pytest.mark.anyio
async def test_disk_writes_awaited_before_aclose_are_on_disk_after_it(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    async with anyio.create_task_group() as group:
        for n in range(100):
            group.start_soon(tier.set_async, f"k{n}", {"n": n})
    await tier.aclose()
    reopened = DiskTier(tmp_path / "c")
    try:
        assert [reopened.get(f"k{n}") for n in range(100)] == [{"n": n} for n in range(100)]
    finally:
        reopened.close()


@pytest.mark.anyio
async def test_disk_write_of_a_cancelled_caller_still_lands(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(tier.set_async, f"k{n}", n)
            scope.cancel()
    assert scope.cancelled_caught
    tier.close()
    assert [tier.get(f"k{n}") for n in range(20)] == list(range(20))
    tier.close()


@pytest.mark.anyio
async def test_disk_async_write_failure_reaches_the_caller(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    try:
        with pytest.raises(TypeError, match="not JSON serializable"):
            await tier.set_async("k", object())
        await tier.set_async("k", 1)  # the writer thread lives on
        assert tier.get("k") == 1
    finally:
        await tier.aclose()


@pytest.mark.anyio
async def test_disk_async_writes_work_again_after_close(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c")
    await tier.set_async("before", 1)
    tier.close()
    await tier.set_async("after", 2)
    await tier.aclose()
    await tier.aclose()  # closing twice is harmless
    assert (tier.get("before"), tier.get("after")) == (1, 2)
    tier.close()


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


@pytest.fixture
def three_tiers() -> tuple[RecordingTier, RecordingTier, RecordingTier]:
    return RecordingTier("memory"), RecordingTier("redis"), RecordingTier("disk")


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.anyio
async def test_manager_promotes_through_three_tiers(
    three_tiers: tuple[RecordingTier, RecordingTier, RecordingTier], use_async: bool
) -> None:
    memory, redis, disk = three_tiers
    manager = CacheManager([memory, redis, disk])

    async def lookup(key: str) -> tuple[Any, str] | None:
        return await manager.lookup_async(key) if use_async else manager.lookup(key)

    disk.plant("deep", "from disk")
    assert await lookup("deep") == ("from disk", "disk")
    assert (memory.holds("deep"), redis.holds("deep")) == ("from disk", "from disk")
    assert (memory.sets, redis.sets, disk.sets) == (1, 1, 0)

    redis.plant("middle", "from redis")
    assert await lookup("middle") == ("from redis", "redis")
    assert memory.holds("middle") == "from redis"
    assert disk.holds("middle") is None  # a hit is copied up, never down
    assert (memory.sets, redis.sets, disk.sets) == (2, 1, 0)

    assert await lookup("deep") == ("from disk", "memory")
    assert (redis.gets, disk.gets) == (2, 1)  # the memory hit went no further

    assert await lookup("nowhere") is None
    assert manager.hits == {"memory": 1, "redis": 1, "disk": 1}
    assert (manager.misses, manager.lookups) == (1, 4)


def test_manager_counts_misses_and_writes_every_tier() -> None:
    upper, lower = RecordingTier("upper"), RecordingTier("lower")
    manager = CacheManager([upper, lower])
    assert manager.get("k") is None
    assert manager.misses == 1
    assert (upper.gets, lower.gets) == (1, 1)
    manager.set("k", 5)
    assert (upper.holds("k"), lower.holds("k")) == (5, 5)
    manager.delete("k")
    assert manager.get("k") is None


def test_manager_set_passes_the_ttl_to_every_tier(clock: FakeClock) -> None:
    upper, lower = MemoryTier(clock=clock), MemoryTier(clock=clock)
    manager = CacheManager([upper, lower])
    manager.set("k", 1, ttl=5)
    clock.now += 6
    assert (upper.get("k"), lower.get("k")) == (None, None)


def test_a_memory_hit_does_not_touch_lower_tiers() -> None:
    upper, lower = RecordingTier("upper"), RecordingTier("lower")
    manager = CacheManager([upper, lower])
    manager.set("k", 1)
    assert manager.get("k") == 1
    assert (upper.gets, lower.gets) == (1, 0)


def test_manager_clear_all_counts_per_tier(tmp_path: Path) -> None:
    memory, disk = MemoryTier(), DiskTier(tmp_path / "c")
    manager = CacheManager([memory, disk])
    try:
        manager.set("a", 1)
        manager.set("b", 2)
        disk.set("disk-only", 3)
        assert manager.clear_all() == {"memory": 2, "disk": 3}
        assert (len(memory), len(disk)) == (0, 0)
        assert manager.clear_all() == {"memory": 0, "disk": 0}
    finally:
        manager.close()


def test_manager_prune_counts_per_tier(
    tmp_path: Path, clock: FakeClock, disk_clock: FakeClock
) -> None:
    memory, disk = MemoryTier(clock=clock), DiskTier(tmp_path / "c")
    manager = CacheManager([memory, disk])
    try:
        manager.set("kept", 1)
        manager.set("refused", 2)
        manager.set("expired", 3, ttl=5)
        plant(disk.directory, "corrupt", b"{broken")
        clock.now += 10
        disk_clock.now += 10

        assert manager.prune(lambda key, value: key != "refused") == {"memory": 2, "disk": 3}
        assert manager.get("kept") == 1
        assert (len(memory), len(disk)) == (1, 1)
    finally:
        manager.close()


def test_manager_prune_without_a_judge_drops_only_expired_entries(clock: FakeClock) -> None:
    memory = MemoryTier(clock=clock)
    manager = CacheManager([memory])
    manager.set("short", 1, ttl=5)
    manager.set("long", 2)
    clock.now += 10
    assert manager.prune() == {"memory": 1}
    assert manager.get("long") == 2


def test_manager_usage_lists_every_tier(tmp_path: Path) -> None:
    manager = CacheManager([MemoryTier(), DiskTier(tmp_path / "c")])
    try:
        manager.set("k", "v")
        assert [(u.name, u.entries) for u in manager.usage()] == [("memory", 1), ("disk", 1)]
    finally:
        manager.close()


def test_manager_tier_finds_a_tier_by_name(
    three_tiers: tuple[RecordingTier, RecordingTier, RecordingTier],
) -> None:
    manager = CacheManager(list(three_tiers))
    assert manager.tier("redis") is three_tiers[1]
    assert manager.tier("nope") is None


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
    assert "broken cache failed at nowhere" in warnings[0].getMessage()  # names where
    assert "disk on fire" in warnings[0].getMessage()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.anyio
async def test_a_hit_is_not_written_back_into_its_own_tier_after_a_tier_above_is_dropped(
    use_async: bool,
) -> None:
    memory, disk = RecordingTier("memory"), RecordingTier("disk")
    manager = CacheManager([BrokenTier(), memory, disk])
    disk.plant("k", "v")

    found = await manager.lookup_async("k") if use_async else manager.lookup("k")
    assert found == ("v", "disk")
    assert memory.holds("k") == "v"
    # Writing the hit back would restart its TTL in the tier it came from.
    assert disk.sets == 0


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.anyio
async def test_async_path_drops_a_broken_tier_with_one_warning(
    caplog: pytest.LogCaptureFixture, position: int
) -> None:
    broken, memory, disk = BrokenTier(), RecordingTier("memory"), RecordingTier("disk")
    tiers: list[Any] = [memory, disk]
    tiers.insert(position, broken)
    manager = CacheManager(tiers)

    with caplog.at_level(logging.WARNING, logger="trinity"):
        await manager.set_async("k", 1)
        assert await manager.get_async("k") == 1
        await manager.delete_async("k")
        assert await manager.get_async("k") is None

    assert manager.tiers == [memory, disk]
    assert broken.calls == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken cache failed at nowhere" in warnings[0].getMessage()  # names where
    assert "disk on fire" in warnings[0].getMessage()


@pytest.mark.anyio
async def test_async_lookup_survives_a_broken_tier() -> None:
    memory = MemoryTier()
    manager = CacheManager([BrokenTier(), memory])
    await manager.set_async("k", 1)
    assert await manager.get_async("k") == 1
    assert [tier.name for tier in manager.tiers] == ["memory"]


def test_clear_all_raises_a_broken_tiers_failure() -> None:
    # Clearing is something the user asked for: a failure is reported, not swallowed.
    manager = CacheManager([MemoryTier(), BrokenTier()])
    with pytest.raises(OSError, match="disk on fire"):
        manager.clear_all()


# ---------------------------------------------------------------------------- building


def memory_then_disk(directory: Path, ttl: int | None = None) -> CacheManager:
    """Memory in front of a disk tier in `directory` (the default tiers), both keeping `ttl`."""
    return CacheManager.from_settings(
        CacheSettings(
            memory=MemoryTierSettings(ttl=ttl), disk=DiskTierSettings(directory=directory, ttl=ttl)
        )
    )


def test_falls_back_to_memory_when_the_disk_folder_cannot_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="trinity"):
        manager = memory_then_disk(blocker / "cache")
    assert [tier.name for tier in manager.tiers] == ["memory"]
    assert "unusable" in caplog.text
    manager.set("k", 1)
    assert manager.get("k") == 1


def test_memory_then_disk_and_the_disk_outlives_the_manager(tmp_path: Path) -> None:
    manager = memory_then_disk(tmp_path / "c", ttl=5)
    try:
        assert [tier.name for tier in manager.tiers] == ["memory", "disk"]
        manager.set("k", {"a": 1})
    finally:
        manager.close()
    reopened = memory_then_disk(tmp_path / "c")
    try:
        assert reopened.lookup("k") == ({"a": 1}, "disk")
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "tiers", [("memory",), ("disk",), ("memory", "disk")], ids=["memory", "disk", "both"]
)
def test_from_settings_builds_the_named_tiers(tmp_path: Path, tiers: tuple[str, ...]) -> None:
    settings = CacheSettings(
        tiers=tiers,
        memory=MemoryTierSettings(max_entries=7, ttl=30),
        disk=DiskTierSettings(directory=tmp_path / "c", max_size_mb=3, ttl=60),
    )
    manager = CacheManager.from_settings(settings)
    try:
        assert [tier.name for tier in manager.tiers] == list(tiers)
        memory = manager.tier("memory")
        if memory is not None:
            assert isinstance(memory, MemoryTier)
            assert (memory.max_entries, memory.ttl) == (7, 30)
        disk = manager.tier("disk")
        if disk is not None:
            assert isinstance(disk, DiskTier)
            assert (disk.directory, disk.ttl) == (tmp_path / "c", 60)
            assert disk.location == str(tmp_path / "c")
    finally:
        manager.close()


def test_from_settings_skips_an_unusable_disk_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / diskcache.core.DBNAME).write_bytes(b"this is not a SQLite database" * 100)
    settings = CacheSettings(tiers=("memory", "disk"), disk=DiskTierSettings(directory=folder))
    with caplog.at_level(logging.WARNING, logger="trinity"):
        manager = CacheManager.from_settings(settings)
    assert [tier.name for tier in manager.tiers] == ["memory"]
    assert "unusable" in caplog.text


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
        assert await manager.clear_all_async() == {"memory": 1, "disk": 1}
        assert (len(memory), len(disk)) == (0, 0)
    finally:
        await manager.aclose()
