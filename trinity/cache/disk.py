"""The disk tier: diskcache under .cache/, holding JSON bytes inline in SQLite only.

The folder may come from anywhere (CI restores `.cache/` from caches other branches wrote),
so its database is untrusted data. diskcache pickles values by default, and unpickles
whatever it finds (CVE-2025-69872); it also keeps large values in side files named by a
row's `filename` column, reads them from there and deletes them when the row goes, so a
planted row could delete any file. This tier stores UTF-8 JSON bytes inline, and its
`SafeDisk` writes, reads and deletes no file and never unpickles: a row unlike the ones
this tier writes is a miss, and is deleted by SQL so the next answer replaces it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import diskcache

from trinity.cache.codec import decode, encode
from trinity.cache.tier import Keep, OwnThread, TierUsage
from trinity.logs import get_logger

log = get_logger(__name__)

FOLDER_MODE = 0o700
# The only way this tier stores a value: bytes in the row's value column.
_INLINE = diskcache.core.MODE_RAW

_UNREADABLE = (OSError, sqlite3.DatabaseError)
# Rows judged (and deleted) at a time by `prune`, so memory stays bounded on any cache.
_PRUNE_BATCH = 100


class UnsafeEntryError(Exception):
    """A row this tier did not write: one that would need unpickling or a file to read."""


def _refusal(mode: Any, filename: Any, value: Any) -> str | None:
    """Why a row's value is not one this tier wrote, or None when it is."""
    if filename is not None:
        return "names a file"
    if mode != _INLINE:
        return f"stored in mode {mode!r}"
    if not isinstance(value, bytes):
        return "not bytes"
    return None


class SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that keeps every value inline and trusts no row.

    Every diskcache path that drops a row (set over an old entry, cull at the size limit,
    expire, delete, clear) hands the row's `filename` to `remove`: here it removes nothing.
    """

    def __init__(self, directory: str, **settings: Any) -> None:
        # diskcache passes the database's `disk_*` settings: a planted one must not stop
        # the tier from opening, and none changes how this Disk stores.
        super().__init__(directory)
        self._warned_of_a_file = False

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"disk cache keys are strings, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeEntryError("pickled key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        # Inline whatever the size: diskcache would put values past `disk_min_file_size`
        # (32 KB) in files, and a file is what a planted row could point elsewhere.
        if read or type(value) is not bytes:
            raise TypeError("the disk tier stores bytes only")
        return 0, _INLINE, None, sqlite3.Binary(value)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        reason = _refusal(mode, filename, value)
        if reason is not None:
            raise UnsafeEntryError(reason)
        return value

    def filename(self, key: Any = None, value: Any = None) -> tuple[str, str]:
        raise UnsafeEntryError("the disk tier writes no files")

    def remove(self, file_path: str) -> None:
        # A row named a file; the row itself is gone already. Say so once, touch nothing.
        if not self._warned_of_a_file:
            self._warned_of_a_file = True
            log.warning("disk cache: a dropped entry named the file %r; left it alone", file_path)


class InlineCache(diskcache.Cache):  # type: ignore[misc]
    """diskcache's Cache, measured by what its database holds.

    diskcache sizes the cache as SQLite's pages plus running totals in its Settings table,
    kept by triggers from each row's `size` (its side file's). This tier has no side files,
    and a planted total or row `size` must not make it evict every entry or report lies.
    """

    def volume(self) -> int:
        ((pages,),) = self._sql("PRAGMA page_count").fetchall()
        return int(pages * self._page_size)

    def __len__(self) -> int:
        ((count,),) = self._sql("SELECT COUNT(*) FROM Cache").fetchall()
        return int(count)


def _worth_keeping(row: Sequence[Any], now: float, keep: Keep) -> bool:
    _, key, raw, expire_time, mode, filename, stored = row
    if expire_time is not None and expire_time < now:
        return False
    # No lookup can reach a row under a foreign key, nor read one this tier did not write.
    if not (raw == 1 and isinstance(key, str)) or _refusal(mode, filename, stored) is not None:
        return False
    value = decode(stored)
    return value is not None and keep(key, value)


def _settings(max_size_mb: int) -> dict[str, Any]:
    # Every setting diskcache knows, so that none is taken from the database's Settings table.
    return {
        **diskcache.core.DEFAULT_SETTINGS,
        "size_limit": max_size_mb * 1024 * 1024,
        # diskcache opens one SQLite connection per thread, and each would map up to
        # 64 MB of the file: with anyio's 40 worker threads that counted gigabytes of
        # RSS on a large site (benchmarks/site_scale.py --huge). Reads through the page
        # cache instead cost little.
        "sqlite_mmap_size": 0,
    }


def _refuse_a_linked_database(database: Path) -> None:
    # SQLite follows a symbolic link (it refuses only a linked -wal or -shm file): a
    # planted link would have it write a database into whatever file the link names.
    if database.is_symlink():
        raise OSError(f"{database} is a symbolic link; delete it to use the disk cache")


def _forget_foreign_settings(database: Path) -> None:
    """Delete the Settings rows diskcache did not write, before diskcache reads them.

    diskcache turns each `sqlite_*` row into a PRAGMA on every connection and passes each
    `disk_*` row to the Disk: a planted `sqlite_query_only`, say, would stop every write.
    """
    if not database.exists():
        return
    known = (*diskcache.core.DEFAULT_SETTINGS, *diskcache.core.METADATA)
    marks = ",".join("?" * len(known))
    connection = sqlite3.connect(database, timeout=60, isolation_level=None)
    # No Settings table yet is no foreign setting either.
    with closing(connection), suppress(sqlite3.OperationalError):
        connection.execute(f"DELETE FROM Settings WHERE key NOT IN ({marks})", known)


class DiskTier:
    """Entries inline in SQLite, bounded by `max_size_mb`.

    diskcache evicts the least recently stored entries once the folder passes its size
    limit, and drops entries past their TTL. Its calls block: the async twins read on the
    caller's thread (see `get_async`) and write on one thread of the tier's own, so at most
    two SQLite connections serve a build, each with its own page cache.
    """

    name = "disk"

    def __init__(self, directory: Path, max_size_mb: int = 1024, ttl: float | None = None) -> None:
        self.directory = directory
        self.ttl = ttl
        directory.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        directory.chmod(FOLDER_MODE)
        database = directory / diskcache.core.DBNAME
        _refuse_a_linked_database(database)
        _forget_foreign_settings(database)
        self._cache = InlineCache(str(directory), disk=SafeDisk, **_settings(max_size_mb))
        # diskcache connects once per thread: one writer thread means one connection for
        # writes, where anyio's pool of worker threads opened one each (with a page cache
        # of up to 32 MB apiece: gigabytes of RSS on a large site).
        self._writer = OwnThread("trinity-disk-writer")

    @property
    def location(self) -> str:
        return str(self.directory)

    def get(self, key: str) -> Any | None:
        try:
            raw = self._cache.get(key)
        except (UnsafeEntryError, *_UNREADABLE) as exc:
            self._drop_unusable(key, str(exc))
            return None
        if raw is None:
            return None
        value = decode(raw)
        if value is None:
            self._drop_unusable(key, "not JSON")
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._cache.set(key, encode(value), expire=self.ttl if ttl is None else ttl)

    # Deletes, clear and prune are plain SQL on the rows: diskcache's own would pass each
    # row's filename to its Disk (SafeDisk ignores it, but nothing here relies on that).

    def delete(self, key: str) -> None:
        self._execute("DELETE FROM Cache WHERE key = ? AND raw = 1", (key,))

    def clear(self) -> int:
        return self._execute("DELETE FROM Cache")

    def prune(self, keep: Keep) -> int:
        """Delete every row that is expired, unreadable, not this tier's, or not `keep`-worthy."""
        # diskcache's clock, so that what prune calls expired is what its reads skip.
        now = diskcache.core.time.time()
        removed = after = 0
        while rows := self._execute_query(
            "SELECT rowid, key, raw, expire_time, mode, filename, value FROM Cache"
            " WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (after, _PRUNE_BATCH),
        ):
            after = rows[-1][0]
            doomed = [row[0] for row in rows if not _worth_keeping(row, now, keep)]
            if doomed:
                marks = ",".join("?" * len(doomed))
                removed += self._execute(f"DELETE FROM Cache WHERE rowid IN ({marks})", doomed)
        return removed

    def usage(self) -> TierUsage:
        size = int(self._cache.volume())
        return TierUsage(self.name, len(self._cache), size)

    def close(self) -> None:
        # diskcache's close() closes only the calling thread's connection.
        self._writer.stop(self._cache.close)
        self._cache.close()

    async def get_async(self, key: str) -> Any | None:
        # Read inline, the one deliberate exception to "blocking calls off the event loop":
        # with SQLite's write-ahead log a read never waits for the writer and takes tens of
        # microseconds, where the hop to a worker thread and back cost ten times that (a
        # warm rebuild reads three times per page) and each worker thread opened a
        # connection of its own. Only a corrupt entry makes a read write (its delete), and
        # that is rare enough to run inline too.
        return self.get(key)

    async def set_async(self, key: str, value: Any, ttl: float | None = None) -> None:
        # Writes may wait on SQLite's lock or evict: off the loop.
        await self._writer.run(self.set, key, value, ttl)

    async def delete_async(self, key: str) -> None:
        await self._writer.run(self.delete, key)

    async def aclose(self) -> None:
        await self._writer.astop(self._cache.close)
        self._cache.close()

    def _drop_unusable(self, key: str, reason: str) -> None:
        # One bad row costs one miss and one warning: never the tier, never a failed build,
        # even when deleting it fails the same way reading it did.
        log.warning("disk cache: dropped an unusable entry (%s): %s", reason, key)
        with suppress(*_UNREADABLE):
            self.delete(key)

    def _execute(self, statement: str, parameters: Sequence[Any] = ()) -> int:
        """Run one changing statement; how many rows it changed."""
        return int(self._connection().execute(statement, parameters).rowcount)

    def _execute_query(self, statement: str, parameters: Sequence[Any]) -> list[Any]:
        return self._connection().execute(statement, parameters).fetchall()

    def _connection(self) -> sqlite3.Connection:
        # diskcache's connection for this thread (in autocommit): a statement of ours opens
        # no connection of its own, so the tier's count of connections stays as it was.
        connection: sqlite3.Connection = self._cache._con
        return connection

    def __len__(self) -> int:
        return len(self._cache)
