"""The batches in flight, kept with the cache (`<cache folder>/batches/pending.json`), so a
re-run, or a run after Ctrl-C, polls the batch it already paid for instead of paying again.

The file is untrusted when read back (a CI cache may come from anywhere): its shape is
checked, an entry that is wrong is dropped with a warning, and what it holds are only ids:
a batch id (checked before it goes into a path on the configured endpoint) and the custom
ids of its requests, which the build matches only to its own jobs. It never names a file
or a host. The API key is never in it.

Several builds may share one cache folder (the shards of a site run at once from one
project): each change re-reads the file and writes it back under a lock, so one build's
batch is never lost to another's write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trinity.llm.batches.api import BATCH_PROVIDERS, valid_id
from trinity.lock import FolderLock
from trinity.logs import get_logger

log = get_logger(__name__)

LEDGER_FILE = "pending.json"
_LOCK_FILE = ".pending.lock"
# Seconds a change waits for another build's (a change takes milliseconds), and how often
# it looks.
LOCK_WAIT = 5.0
_LOCK_POLL = 0.01
LEDGER_VERSION = 1
# A custom id is the hex SHA-256 of the request's cache key: 64 characters, which is
# also the most Anthropic accepts.
_CUSTOM_ID = re.compile(r"[0-9a-f]{64}")
# A larger file is no ledger of ours (50,000 requests a batch is OpenAI's own limit).
MAX_LEDGER_BYTES = 64 * 1024 * 1024
MAX_REQUESTS = 100_000


def custom_id(key: str) -> str:
    """The custom id of a request: a digest of its cache key (which may hold a ':')."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def endpoint_id(provider: str, api_url: str) -> str:
    """Which endpoint a batch was sent to, as a digest: a batch is polled only where it
    was sent (the ledger holds no URL to follow)."""
    return hashlib.sha256(f"{provider} {api_url.rstrip('/')}".encode()).hexdigest()


@dataclass(frozen=True)
class PendingBatch:
    """A batch sent and not yet read: where, its id, and the custom ids it asks for."""

    provider: str
    endpoint: str
    batch_id: str
    custom_ids: frozenset[str]
    round: int = 1

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "endpoint": self.endpoint,
            "id": self.batch_id,
            "custom_ids": sorted(self.custom_ids),
            "round": self.round,
        }


class BatchLedger:
    """The pending batches of a project, in `folder` (None: kept in memory only)."""

    def __init__(self, folder: Path | None) -> None:
        self.path = folder / LEDGER_FILE if folder is not None else None
        self._batches: list[PendingBatch] = self._load()

    @property
    def batches(self) -> list[PendingBatch]:
        return list(self._batches)

    def add(self, batch: PendingBatch) -> None:
        self._update(lambda batches: [*batches, batch])

    def remove(self, batch: PendingBatch) -> None:
        self._update(lambda batches: [b for b in batches if b.batch_id != batch.batch_id])

    def _update(self, change: Callable[[list[PendingBatch]], list[PendingBatch]]) -> None:
        """Apply `change` to the ledger as it is on disk now (another build sharing the
        cache folder may have added or removed batches since it was read), and save it."""
        with self._locked():
            self._batches = change(self._load())
            self._save()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The ledger's lock, waited for a few seconds at most: a build that cannot have
        it changes the file anyway (another build holding it this long is stuck)."""
        if self.path is None:
            yield
            return
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            yield  # _save says why it cannot write there
            return
        lock = FolderLock(self.path.with_name(_LOCK_FILE), holder="another build", doing="")
        deadline = time.monotonic() + LOCK_WAIT
        with contextlib.suppress(OSError):  # a lock file refused: change it unlocked
            while not lock.try_acquire() and time.monotonic() < deadline:
                time.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            lock.release()

    def _load(self) -> list[PendingBatch]:
        if self.path is None:
            return []
        try:
            with self.path.open("rb") as stream:
                raw = stream.read(MAX_LEDGER_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the batch ledger %s: %s", self.path, exc.strerror)
            return []
        return list(_entries(raw, self.path))

    def _save(self) -> None:
        """Written whole or not at all; a refused write is a warning (the batch is then
        not resumable, which is said), never a failed build."""
        if self.path is None:
            return
        data = {"version": LEDGER_VERSION, "batches": [b.as_json() for b in self._batches]}
        partial = self.path.with_name(f".{LEDGER_FILE}.partial")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(data, stream)
            partial.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            log.warning(
                "cannot save the batch ledger %s (%s): a re-run will not find the batches "
                "in flight and will send them again",
                self.path,
                exc.strerror,
            )


def _entries(raw: bytes, path: Path) -> Iterable[PendingBatch]:
    """The well-formed entries of a ledger file; a warning for what is not."""
    if len(raw) > MAX_LEDGER_BYTES:
        log.warning("the batch ledger %s is too large to be ours; ignored", path)
        return
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        log.warning("the batch ledger %s is not JSON; ignored", path)
        return
    entries = data.get("batches") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION:
        log.warning("the batch ledger %s is not of this version; ignored", path)
        return
    if not isinstance(entries, list):
        log.warning("the batch ledger %s has no list of batches; ignored", path)
        return
    for entry in entries:
        batch = _entry(entry)
        if batch is None:
            log.warning("an entry of the batch ledger %s is malformed; dropped", path)
            continue
        yield batch


def _entry(entry: Any) -> PendingBatch | None:
    if not isinstance(entry, dict):
        return None
    provider, endpoint, ids = entry.get("provider"), entry.get("endpoint"), entry.get("custom_ids")
    batch_id, number = valid_id(entry.get("id")), entry.get("round", 1)
    if (
        provider not in BATCH_PROVIDERS
        or not isinstance(endpoint, str)
        or not _CUSTOM_ID.fullmatch(endpoint)
        or batch_id is None
        or not isinstance(ids, list)
        or not 0 < len(ids) <= MAX_REQUESTS
        or not all(isinstance(i, str) and _CUSTOM_ID.fullmatch(i) for i in ids)
        or not isinstance(number, int)
        or isinstance(number, bool)
        or not 1 <= number <= 100
    ):
        return None
    return PendingBatch(str(provider), endpoint, batch_id, frozenset(ids), number)
