"""What blocks answered by a model produced, kept with the project's cache for estimates.

After each build (not a dry run), every block a model answered is recorded: the model,
the block's name, format and max_tokens, and its input tokens (and how many of them the
provider's prompt cache read or wrote), output tokens and prompt characters. Blocks alike
(same model, name, format and max_tokens) are summed into one entry per build, and a
build's entry replaces the one an earlier build left for the same kind of block: the
history follows the site as it is now, and holds one entry per kind of block, at most
MAX_ENTRIES of them (the least recently seen go first).

The file (`usage-history.json` in the cache folder) is untrusted when read back (a CI
cache may come from anywhere): its size is bounded, and an entry that is not exactly what
this module writes is skipped. A missing, unreadable or broken history is an empty one.
It is written whole into a temporary file and renamed over the old one, under a lock, so
two builds finishing at once each merge into what the other wrote and neither can leave
half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.errors import ResourceError
from trinity.llm.pricing import input_parts
from trinity.llm.types import Usage
from trinity.lock import FolderLock
from trinity.logs import get_logger
from trinity.messages import shown_path

if TYPE_CHECKING:
    from trinity.llm.types import LLMRequest
    from trinity.plan import Job
    from trinity.report import BlockResult

log = get_logger(__name__)

HISTORY_FILE = "usage-history.json"
_LOCK_FILE = ".usage-history.lock"
VERSION = 1
# One entry per kind of block: a site has a few dozen; a thousand leaves room for many.
MAX_ENTRIES = 1000
# A history of MAX_ENTRIES entries is about 200 KB; anything much larger is not ours.
MAX_BYTES = 2 * 1024 * 1024
_MAX_NAME = 200
# How long a build waits at its end for another one recording its usage.
LOCK_WAIT = 2.0
_LOCK_POLL = 0.02
_MAX_COUNT = 10**12


@dataclass(frozen=True)
class UsageEntry:
    """What `calls` blocks of one kind (model, block name, format, max_tokens) used."""

    model: str
    block: str
    format: str
    max_tokens: int
    calls: int
    input_tokens: int
    output_tokens: int
    prompt_chars: int
    # Of the input tokens, those the provider read from its prompt cache, and wrote there.
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def kind(self) -> tuple[str, str, str, int]:
        return (self.model, self.block, self.format, self.max_tokens)

    def plus(self, other: UsageEntry) -> UsageEntry:
        return replace(
            self,
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            prompt_chars=self.prompt_chars + other.prompt_chars,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


_TEXT_FIELDS = ("model", "block", "format")
_COUNT_FIELDS = tuple(f.name for f in fields(UsageEntry) if f.name not in _TEXT_FIELDS)


def entry_from_data(value: Any) -> UsageEntry | None:
    """An entry back from the file; None for anything this module would not have written."""
    if not isinstance(value, dict) or set(value) != {f.name for f in fields(UsageEntry)}:
        return None
    texts = [value[name] for name in _TEXT_FIELDS]
    counts = [value[name] for name in _COUNT_FIELDS]
    if not all(isinstance(t, str) and 0 < len(t) <= _MAX_NAME for t in texts):
        return None
    # bool is an int to Python, and not a count.
    if not all(type(n) is int and 0 <= n <= _MAX_COUNT for n in counts):
        return None
    entry = UsageEntry(**value)
    cached = entry.cached_input_tokens + entry.cache_write_tokens
    return entry if entry.calls > 0 and cached <= entry.input_tokens else None


class UsageHistory:
    """The entries of the history, newest first."""

    def __init__(self, entries: Iterable[UsageEntry] = ()) -> None:
        self.entries: list[UsageEntry] = list(entries)[:MAX_ENTRIES]

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[UsageEntry]:
        return iter(self.entries)

    def merged(self, newer: Iterable[UsageEntry]) -> UsageHistory:
        """This history with `newer` in front, each replacing the entry of its kind."""
        fresh = list(newer)
        kinds = {entry.kind for entry in fresh}
        return UsageHistory([*fresh, *(e for e in self.entries if e.kind not in kinds)])

    def to_data(self) -> dict[str, Any]:
        return {"version": VERSION, "entries": [vars(entry) for entry in self.entries]}

    @classmethod
    def from_data(cls, data: Any) -> UsageHistory:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return cls()
        raw = data.get("entries")
        if not isinstance(raw, list):
            return cls()
        entries: list[UsageEntry] = []
        seen: set[tuple[str, str, str, int]] = set()
        for value in raw[:MAX_ENTRIES]:
            entry = entry_from_data(value)
            if entry is not None and entry.kind not in seen:
                seen.add(entry.kind)
                entries.append(entry)
        return cls(entries)


class UsageRecorder:
    """A build's usage, summed by kind of block as its blocks are answered."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str, int], UsageEntry] = {}

    def add_block(self, job: Job, result: BlockResult) -> None:
        """A block's result, when a model answered it (a cache hit used nothing)."""
        if result.source != "llm" or result.input_tokens <= 0:
            return
        read, written, _ = input_parts(
            Usage(result.input_tokens, 0, result.cached_input_tokens, result.cache_write_tokens)
        )
        # Under the name the block asks for, as the dry run looks it up: a block's re-asks
        # and escalations are part of what the block costs.
        self.add(
            UsageEntry(
                model=job.request.model[:_MAX_NAME],
                block=job.block.name[:_MAX_NAME],
                format=job.block.format,
                max_tokens=job.request.max_tokens,
                calls=1,
                input_tokens=result.input_tokens,
                output_tokens=max(0, result.output_tokens),
                prompt_chars=prompt_chars(job.request),
                cached_input_tokens=read,
                cache_write_tokens=written,
            )
        )

    def add(self, entry: UsageEntry) -> None:
        known = self._entries.get(entry.kind)
        self._entries[entry.kind] = entry if known is None else known.plus(entry)

    def entries(self) -> list[UsageEntry]:
        return list(self._entries.values())


def prompt_chars(request: LLMRequest) -> int:
    """The characters of a request's messages: what a model's input tokens are learned
    against (a base model reads a document made from them; the ratio is per model)."""
    return sum(len(message.content) for message in request.messages)


def history_path(cache_dir: Path) -> Path:
    return cache_dir / HISTORY_FILE


def read_history(cache_dir: Path) -> UsageHistory:
    """The history kept in `cache_dir`; empty when there is none or it cannot be used."""
    path = history_path(cache_dir)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return UsageHistory()
    except OSError as exc:
        log.info("cannot read the usage history %s: %s", shown_path(path), exc.strerror)
        return UsageHistory()
    if len(raw) > MAX_BYTES:
        log.warning("ignoring the usage history %s: too large", shown_path(path))
        return UsageHistory()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        log.warning("ignoring the usage history %s: not JSON", shown_path(path))
        return UsageHistory()
    return UsageHistory.from_data(data)


def record_usage(cache_dir: Path, entries: Iterable[UsageEntry]) -> None:
    """Merge a build's entries into the history in `cache_dir`. A history that cannot be
    written is a warning: it only makes the next estimate rougher."""
    fresh = list(entries)
    if not fresh:
        return
    try:
        _merge_into(cache_dir, fresh)
    except (OSError, ResourceError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(
            "could not record the usage history in %s: %s",
            shown_path(cache_dir),
            reason,
            extra={"event": "usage_history_unwritten"},
        )


def _merge_into(cache_dir: Path, fresh: list[UsageEntry]) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = FolderLock(cache_dir / _LOCK_FILE, holder="another build", doing="recording usage")
    if not _acquired(lock):
        # Another build merges in a few milliseconds; one holding it this long is stuck,
        # and must not hold this build at its end. Its next build records again.
        log.warning(
            "did not record the usage history in %s: %s",
            shown_path(cache_dir),
            lock.busy_message(),
            extra={"event": "usage_history_unwritten"},
        )
        return
    try:
        history = read_history(cache_dir).merged(fresh)
        _write_atomically(history_path(cache_dir), history.to_data())
    finally:
        lock.release()


def _acquired(lock: FolderLock) -> bool:
    """The history's lock, waited for at most LOCK_WAIT seconds."""
    deadline = time.monotonic() + LOCK_WAIT
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_LOCK_POLL)
    return True


def _write_atomically(path: Path, data: Mapping[str, Any]) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    partial = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(data, stream, separators=(",", ":"))
        partial.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


__all__ = [
    "HISTORY_FILE",
    "MAX_ENTRIES",
    "UsageEntry",
    "UsageHistory",
    "UsageRecorder",
    "prompt_chars",
    "read_history",
    "record_usage",
]
