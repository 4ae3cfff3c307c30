"""The disk tier: diskcache under .cache/, storing JSON bytes only.

diskcache pickles values by default, and unpickles whatever it finds (CVE-2025-69872):
anyone who can write the cache folder could run code. This tier stores UTF-8 JSON bytes,
and its `SafeDisk` refuses to unpickle: a pickled or corrupt entry reads as a miss.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import diskcache

FOLDER_MODE = 0o700


class UnsafeEntryError(Exception):
    """An entry that would need unpickling to read."""


class SafeDisk(diskcache.Disk):  # type: ignore[misc]
    """A diskcache Disk that never unpickles keys or values."""

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeEntryError("pickled key")
        return super().get(key, raw)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise UnsafeEntryError("pickled value")
        return super().fetch(mode, filename, value, read)


class DiskTier:
    name = "disk"

    def __init__(self, directory: Path, max_size_mb: int = 1024, ttl: float | None = None) -> None:
        self.directory = directory
        self.ttl = ttl
        directory.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        directory.chmod(FOLDER_MODE)
        self._cache = diskcache.Cache(
            str(directory), disk=SafeDisk, size_limit=max_size_mb * 1024 * 1024
        )

    def get(self, key: str) -> Any | None:
        try:
            raw = self._cache.get(key)
        except (UnsafeEntryError, OSError, sqlite3.DatabaseError, UnicodeDecodeError):
            self.delete(key)
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            return json.loads(raw)
        except ValueError:
            self.delete(key)
            return None

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        payload = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._cache.set(key, payload, expire=self.ttl if ttl is None else ttl)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        self._cache.close()

    def __len__(self) -> int:
        return len(self._cache)
