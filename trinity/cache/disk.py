"""The disk tier: diskcache under .cache/, storing JSON bytes only.

diskcache pickles values by default, and unpickles whatever it finds (CVE-2025-69872):
anyone who can write the cache folder could run code. This tier stores UTF-8 JSON bytes,
and its `SafeDisk` refuses to unpickle: a pickled or corrupt entry reads as a miss, and is
deleted so the next answer replaces it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import diskcache

from trinity.cache.codec import decode, encode
from trinity.cache.tier import Keep, OwnThread, TierUsage

FOLDER_MODE = 0o700

_UNREADABLE = (OSError, sqlite3.DatabaseError)


class UnsafeEntryError(Exception):
    """An entry that would need unpickling to read."""


class StoredKey:
    """A key exactly as a row of the Cache table holds it, so a row whose key cannot be
    read (a pickled one, say) can still be deleted through diskcache's own bookkeeping."""

    def __init__(self, stored: Any, raw: bool) -> None:
        self.stored = stored
        self.raw = raw


class SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that never unpickles keys or values."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if isinstance(key, StoredKey):
            return key.stored, key.raw
        return super().put(key)  # type: ignore[no-any-return]

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeEntryError("pickled key")
        return super().get(key, raw)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise UnsafeEntryError("pickled value")
        return super().fetch(mode, filename, value, read)


class DiskTier:
    """Entries in SQLite (large ones in files), bounded by `max_size_mb`.

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
        self._cache = diskcache.Cache(
            str(directory),
            disk=SafeDisk,
            size_limit=max_size_mb * 1024 * 1024,
            # diskcache opens one SQLite connection per thread, and each would map up to
            # 64 MB of the file: with anyio's 40 worker threads that counted 2 GB of RSS
            # at 100,000 pages (benchmarks/site_scale.py). Reads through the page cache
            # instead cost little.
            sqlite_mmap_size=0,
        )
        # diskcache connects once per thread: one writer thread means one connection for
        # writes, where anyio's pool of worker threads opened one each (with a page cache
        # of up to 32 MB apiece: 1.3 GB of RSS at 100,000 pages).
        self._writer = OwnThread("trinity-disk-writer")

    @property
    def location(self) -> str:
        return str(self.directory)

    def get(self, key: str) -> Any | None:
        try:
            raw = self._cache.get(key)
        except (UnsafeEntryError, UnicodeDecodeError, *_UNREADABLE):
            self._forget(key)
            return None
        if raw is None:
            return None
        value = decode(raw)
        if value is None:
            self._forget(key)
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._cache.set(key, encode(value), expire=self.ttl if ttl is None else ttl)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def clear(self) -> int:
        return int(self._cache.clear())

    def prune(self, keep: Keep) -> int:
        removed = int(self._cache.expire())
        for stored, raw in self._stored_keys():
            if not (raw and isinstance(stored, str)):
                # No lookup can reach an entry under a foreign key: drop it unread.
                self._forget(StoredKey(stored, bool(raw)))
                removed += 1
                continue
            value = self.get(stored)
            if value is None or not keep(stored, value):
                self.delete(stored)
                removed += 1
        return removed

    def _stored_keys(self) -> list[tuple[Any, int]]:
        # Read from SQLite itself: diskcache's iterkeys() would unpickle a planted key.
        database = self.directory / diskcache.core.DBNAME
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT key, raw FROM Cache").fetchall()

    def usage(self) -> TierUsage:
        # diskcache keeps a running total of stored sizes; volume() adds SQLite's pages.
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
        # Writes may wait on SQLite's lock, evict, or write a large value's file: off the loop.
        await self._writer.run(self.set, key, value, ttl)

    async def delete_async(self, key: str) -> None:
        await self._writer.run(self.delete, key)

    async def aclose(self) -> None:
        await self._writer.astop(self._cache.close)
        self._cache.close()

    def _forget(self, key: Any) -> None:
        # A corrupt entry must not fail the build, and deleting it may fail the same way.
        with suppress(*_UNREADABLE):
            self._cache.delete(key)

    def __len__(self) -> int:
        return len(self._cache)
