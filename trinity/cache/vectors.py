"""Stored prompt vectors (the semantic cache's): records by group, on disk and in Redis.

A record is a cached answer's key, the prompt it answered and the prompt's embedding
(float32, little-endian, base64 in JSON). A group is a hex digest the caller makes; what it
means (which requests may share answers) belongs to trinity.llm.semantic.

On disk, a group is one file of JSON lines, `<cache folder>/semantic/<group>.jsonl`,
appended to; in Redis, one hash, `<prefix>semantic:<group>`, a field per answer key, which
the Redis tier's scans leave alone (cache/namespaces.py) and which expires with the tier's
retention. Both are read back as untrusted data: a record that is not in this shape is
skipped, never an error; nothing is unpickled, and no file is followed through a link.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from trinity.cache.disk import FOLDER_MODE
from trinity.cache.namespaces import SEMANTIC

if TYPE_CHECKING:
    from trinity.cache.redislink import RedisLink

# The most a group may hold, and the longest line or value read back: a planted file or
# hash must not take the build's memory.
MAX_RECORDS = 200_000
MAX_RECORD_BYTES = 256 * 1024
_GROUP = re.compile(r"[0-9a-f]{16,128}")
# The folder of the disk tier's folder that holds the groups.
VECTORS_FOLDER = "semantic"


@dataclass(frozen=True)
class VectorRecord:
    """One stored prompt: the answer's cache key, the prompt, its embedding's bytes."""

    key: str
    prompt: str
    vector: bytes


class VectorStore(Protocol):
    name: str

    async def load(self, group: str) -> list[VectorRecord]: ...
    async def add(self, group: str, record: VectorRecord) -> None: ...


def encode_record(record: VectorRecord) -> str:
    """A record as one line of JSON (a Redis field's value, a line of a group's file)."""
    return json.dumps(
        {
            "key": record.key,
            "prompt": record.prompt,
            "vector": base64.b64encode(record.vector).decode("ascii"),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_record(raw: bytes | str) -> VectorRecord | None:
    """The record in `raw`, or None for anything else (a foreign or damaged line)."""
    if len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    key, prompt, vector = value.get("key"), value.get("prompt"), value.get("vector")
    if not (isinstance(key, str) and isinstance(prompt, str) and isinstance(vector, str)):
        return None
    try:
        data = base64.b64decode(vector, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data or len(data) % 4:
        return None
    return VectorRecord(key, prompt, data)


def check_group(group: str) -> str:
    """`group` if it is a hex digest: it names a file, so nothing else may."""
    if not _GROUP.fullmatch(group):
        raise ValueError(f"not a vector group: {group!r}")
    return group


class DiskVectors:
    """Groups as files of JSON lines in `directory` (the disk tier's `semantic/`)."""

    name = "disk"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def load(self, group: str) -> list[VectorRecord]:
        return await anyio.to_thread.run_sync(self._load, check_group(group))

    async def add(self, group: str, record: VectorRecord) -> None:
        line = (encode_record(record) + "\n").encode("utf-8")
        await anyio.to_thread.run_sync(self._append, check_group(group), line)

    def _path(self, group: str) -> Path:
        return self.directory / f"{group}.jsonl"

    def _load(self, group: str) -> list[VectorRecord]:
        try:
            descriptor = os.open(self._path(group), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        with os.fdopen(descriptor, "rb") as stream:
            return _bounded(decode_record(line) for line in _lines(stream))

    def _append(self, group: str, line: bytes) -> None:
        if self.directory.is_symlink():
            raise OSError(f"{self.directory} is a symbolic link; vectors are not written there")
        self.directory.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        descriptor = os.open(self._path(group), flags, 0o600)
        with os.fdopen(descriptor, "ab") as stream:
            stream.write(line)  # one write of one line: a crash leaves at most a bad last line


def clear_disk_vectors(cache_directory: Path) -> int:
    """Delete the disk tier's stored vectors (`semantic/*.jsonl` in its folder): how many
    groups. A link is removed as a link, never followed."""
    folder = cache_directory / VECTORS_FOLDER
    if folder.is_symlink() or not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob("*.jsonl"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _lines(stream: Any) -> Iterator[bytes]:
    """The file's lines, each read up to MAX_RECORD_BYTES (a longer one is skipped)."""
    while True:
        line = stream.readline(MAX_RECORD_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_RECORD_BYTES:
            while line and not line.endswith(b"\n"):  # the rest of the long line
                line = stream.readline(MAX_RECORD_BYTES + 1)
            continue
        yield line


def _bounded(records: Iterator[VectorRecord | None]) -> list[VectorRecord]:
    kept: list[VectorRecord] = []
    for record in records:
        if record is not None:
            kept.append(record)
            if len(kept) >= MAX_RECORDS:
                break
    return kept


class RedisVectors:
    """Groups as Redis hashes, through the build's one guarded link (an outage is its one
    warning, and then an empty group)."""

    name = "redis"

    def __init__(self, link: RedisLink, ttl: float | None = None) -> None:
        self.link = link
        self.ttl = ttl

    def _name(self, group: str) -> str:
        return f"{self.link.prefix}{SEMANTIC}{check_group(group)}"

    async def load(self, group: str) -> list[VectorRecord]:
        name = self._name(group)
        empty: dict[Any, Any] = {}
        found = await self.link.run_async(lambda client: client.hgetall(name), empty)
        if not isinstance(found, dict):
            return []
        return _bounded(decode_record(raw) for raw in list(found.values())[:MAX_RECORDS])

    async def add(self, group: str, record: VectorRecord) -> None:
        name, value = self._name(group), encode_record(record)

        async def store(client: Any) -> None:
            await client.hset(name, record.key, value)
            if self.ttl is not None:
                await client.expire(name, int(self.ttl))

        await self.link.run_async(store, None)


__all__ = [
    "MAX_RECORDS",
    "VECTORS_FOLDER",
    "DiskVectors",
    "RedisVectors",
    "VectorRecord",
    "VectorStore",
    "check_group",
    "clear_disk_vectors",
    "decode_record",
    "encode_record",
]
