"""Staging the output folder: files written beside it, swapped into place only on success.

A failed or interrupted build therefore leaves the previous site exactly as it was. The
swap refuses to replace a folder Trinity did not write (one without `.trinity/`), so a
mistyped `--output` can never wipe someone's files. A file system that refuses a write
(full, over quota, read-only, not permitted) is a `ResourceError`: one line naming the
output folder, what was being written, and what to do.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import stat as statmodule
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from trinity.errors import ConfigError, ResourceError
from trinity.messages import shown_path
from trinity.oserrors import resource_error

# The folder inside every output Trinity writes: what says a folder may be replaced.
MARKER_DIR = ".trinity"
STATIC_DIR = "static"

_LEFT_AS_IT_WAS = "the previous site was left as it was"
# Files are moved over the old ones one by one when pages are kept: cut short, the merge
# leaves a mixed site, but without its manifest, so the next build rewrites every page.
_PARTLY_MERGED = "the folder may hold part of the new site until a build completes"


class StagedOutput:
    """Files for the next version of `output_dir`, committed only when the build succeeds.

    A build that takes nothing from the current output swaps the staging folder in whole.
    One that keeps unchanged pages where they are (`keep`) moves its new files over the
    old ones at commit, and removes the files the new site no longer has: a rebuild then
    touches only what changed. `manifest`, the file (relative to the output folder) that
    vouches for the others on disk, goes first and comes back last, so a commit cut short
    never leaves it naming stale files.
    """

    def __init__(self, output_dir: Path, manifest: str | None = None) -> None:
        self.output_dir = output_dir.resolve()
        self.manifest = manifest
        check_output_dir(self.output_dir)
        tag = uuid.uuid4().hex[:8]
        self.staging = self.output_dir.parent / f".{self.output_dir.name}.staging-{tag}"
        self._retired = self.output_dir.parent / f".{self.output_dir.name}.old-{tag}"
        with self._refusals("making the staging folder beside it"):
            self.output_dir.parent.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir()
            try:
                (self.staging / MARKER_DIR).mkdir()
            except OSError:
                self.discard()
                raise
        # Folders already made and checked, by the relative name asked for: resolving and
        # making every page's folder from the root took several system calls for each page.
        self._folders: dict[str, Path] = {"": self.staging}
        self._kept: set[str] = set()

    def path(self, relative: str) -> Path:
        """A path inside the staging folder; anything that would leave it is refused."""
        target = (self.staging / relative).resolve()
        # self.staging is already resolved: it is a new folder beside the resolved output.
        if not target.is_relative_to(self.staging):
            raise ValueError(f"refusing to write outside the output folder: {relative}")
        return target

    def write_text(self, relative: str, text: str) -> None:
        with self._refusals(f"writing {relative}"):
            self._file(relative).write_text(text, encoding="utf-8")

    def replace_text(self, relative: str, text: str) -> None:
        """Write `relative` anew, also when it was kept: the new file is the one committed."""
        self._kept.discard(relative)
        self.write_text(relative, text)

    @contextlib.contextmanager
    def open_text(self, relative: str) -> Iterator[TextIO]:
        """The staging folder's file `relative`, open for writing text in pieces."""
        with (
            self._refusals(f"writing {relative}"),
            self._file(relative).open("w", encoding="utf-8") as stream,
        ):
            yield stream

    @contextlib.contextmanager
    def _refusals(self, doing: str, after: str = _LEFT_AS_IT_WAS) -> Iterator[None]:
        """Raise the file system's refusal of what is done inside as a ResourceError."""
        try:
            yield
        except OSError as exc:
            raise _refused_write(self.output_dir, exc, doing, after) from exc

    def keep(self, relative: str, size: int) -> bool:
        """Keep the current output's `relative` as it is, if it is still there as a regular
        file of `size` bytes; False when it cannot be kept (write it anew then)."""
        check_relative(relative)
        try:
            status = (self.output_dir / relative).lstat()
        except OSError:
            return False
        if not statmodule.S_ISREG(status.st_mode) or status.st_size != size:
            return False  # edited or replaced since it was written
        self._kept.add(relative)
        return True

    def _file(self, relative: str) -> Path:
        """Where the file `relative` goes in the staging folder, its folder made."""
        check_relative(relative)
        folder, _, name = relative.rpartition("/")
        return self._folder(folder) / name

    def _folder(self, relative: str) -> Path:
        """The staging folder at `relative`, made and checked the first time it is asked for.

        A page's folder is usually new: making it under a checked folder is the check, as a
        folder this build has just made cannot lead anywhere else. A name that already
        exists (a link someone put there, say) is resolved and checked instead.
        """
        known = self._folders.get(relative)
        if known is not None:
            return known
        head, _, name = relative.rpartition("/")
        if name in ("", "."):  # "a//b", "./b": no new folder to make at this step
            known = self._checked_folder(relative)
        else:
            known = self._folder(head) / name
            try:
                known.mkdir()
            except FileExistsError:
                known = self._checked_folder(relative)
        self._folders[relative] = known
        return known

    def _checked_folder(self, relative: str) -> Path:
        self.path(relative).mkdir(parents=True, exist_ok=True)  # refuses what leads out
        return self.path(relative)  # and a link, once the folder exists

    def copy_static(self, folders: Iterable[Path]) -> dict[str, int]:
        """Copy theme static folders into static/, later folders overriding; the size of
        each file copied, by its path relative to the output folder."""
        copied: dict[str, int] = {}
        destination = self.path(STATIC_DIR)
        with self._refusals("copying the theme's static files"):
            for folder in folders:
                for source in sorted(folder.rglob("*")):
                    if source.is_file():
                        relative = source.relative_to(folder)
                        target = destination / relative
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(source, target)
                        copied[f"{STATIC_DIR}/{relative.as_posix()}"] = target.stat().st_size
        return copied

    def commit(self) -> None:
        """Put the staged files in place of the output folder's."""
        doing = "putting the new site in place"
        if self._kept and self._mergeable(staged := _files_under(self.staging)):
            with self._refusals(doing, _PARTLY_MERGED):
                self._merge(staged)
            return
        with self._refusals(doing):
            self._take_kept_along()  # nothing to do when no page was kept
            self._swap()

    def _mergeable(self, staged: set[str]) -> bool:
        """True when every staged file's folder in the output is a real folder of its own,
        or not there yet: a link, or a file where a folder goes, must not be written
        through or into, so such an output is swapped whole instead."""
        folders = {relative.rpartition("/")[0] for relative in staged} - {""}
        for prefix in {ancestor for folder in folders for ancestor in _with_parents(folder)}:
            try:
                mode = (self.output_dir / prefix).lstat().st_mode
            except FileNotFoundError:
                continue
            if not statmodule.S_ISDIR(mode):
                return False
        return True

    def _take_kept_along(self) -> None:
        """Put the kept files into the staging folder too (linked, or copied)."""
        for relative in self._kept:
            source, target = self.output_dir / relative, self._file(relative)
            try:
                os.link(source, target, follow_symlinks=False)
            except OSError:  # a file system without hard links
                shutil.copy2(source, target, follow_symlinks=False)
        self._kept.clear()

    def _merge(self, staged: set[str]) -> None:
        manifest = self.manifest
        if manifest is not None:
            (self.output_dir / manifest).unlink(missing_ok=True)
        for relative in sorted(staged - {manifest}):
            target = self.output_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.staging / relative).replace(target)
        _remove_all_but(self.output_dir, staged | self._kept)
        (self.output_dir / MARKER_DIR).mkdir(exist_ok=True)  # emptied above, if only it
        if manifest is not None and manifest in staged:
            (self.staging / manifest).replace(self.output_dir / manifest)
        shutil.rmtree(self.staging, ignore_errors=True)

    def _swap(self) -> None:
        had_output = self.output_dir.exists()
        if had_output:
            self.output_dir.rename(self._retired)
        try:
            self.staging.rename(self.output_dir)
        except OSError:
            if had_output:
                self._retired.rename(self.output_dir)
            raise
        if had_output:
            shutil.rmtree(self._retired, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also on success: after commit() the staging folder is gone and this is a no-op.
        self.discard()


class BackgroundWriter:
    """Writes files into a staging folder on a thread of its own, in the order given.

    Pages are rendered in the event loop, and writing one (making its folder, opening,
    writing, closing) took longer than rendering it on a slow disk: here the loop goes on
    while the file system works. At most `backlog` files wait; past that `write_text`
    waits for room, so memory stays bounded however large the site. The first error
    stops the writing and is raised by the next `write_text`, or by `close`.
    """

    def __init__(self, output: StagedOutput, backlog: int = 64) -> None:
        self.output = output
        self.busy_time = 0.0  # seconds the thread spent writing
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(backlog)
        self._error: BaseException | None = None
        self.abandoned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trinity-writer", daemon=True)
        self._thread.start()

    def write_text(self, relative: str, text: str) -> None:
        self._raise_error()
        self._queue.put((relative, text))

    def close(self) -> None:
        """Wait until every file is written; raise the first error if one failed."""
        self._stop()
        self._raise_error()

    def abandon(self) -> None:
        """Stop without writing what still waits (the build failed or was interrupted)."""
        self.abandoned.set()
        self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None or self.abandoned.is_set():
                continue  # drain, so a producer waiting for room is let go
            started = time.perf_counter()
            try:
                self.output.write_text(*item)
            except BaseException as exc:  # handed to the event loop's side, raised there
                self._error = exc
            self.busy_time += time.perf_counter() - started

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # After close() the thread is gone and this does nothing; otherwise the build
        # is leaving early, and the staging folder is about to be removed.
        self.abandon()


def check_relative(relative: str) -> None:
    folder, _, name = relative.rpartition("/")
    if not name or name in (".", "..") or relative.startswith("/") or ".." in folder.split("/"):
        raise ValueError(f"refusing to write outside the output folder: {relative}")


def _with_parents(folder: str) -> list[str]:
    """ "a/b/c" and the folders above it: "a", "a/b", "a/b/c"."""
    parts = folder.split("/")
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]


def _files_under(folder: Path) -> set[str]:
    """Every file under `folder`, as a relative path with forward slashes."""
    found: set[str] = set()
    for directory, _, names in os.walk(folder):
        found.update(_relative(folder, directory, name) for name in names)
    return found


def _remove_all_but(folder: Path, keep: set[str]) -> None:
    """Delete every file (or link) under `folder` not in `keep`, then emptied folders."""
    for directory, subfolders, names in os.walk(folder, topdown=False):
        base = Path(directory)
        for name in names:
            if _relative(folder, directory, name) not in keep:
                (base / name).unlink()
        for name in subfolders:
            path = base / name
            if path.is_symlink():  # never one of ours: os.walk lists it, does not enter
                path.unlink()
            else:
                with contextlib.suppress(OSError):  # not empty: something in it is kept
                    path.rmdir()


def _relative(root: Path, directory: str, name: str) -> str:
    prefix = Path(directory).relative_to(root).as_posix()
    return name if prefix == "." else f"{prefix}/{name}"


def _refused_write(
    folder: Path, exc: OSError, doing: str, after: str = _LEFT_AS_IT_WAS
) -> ResourceError:
    """`exc`, met while `doing` something to the output `folder`, as one line."""
    instead = "another output folder (--output)"
    where = shown_path(folder) + os.sep
    return resource_error(exc, where, doing, instead=instead, again="build again", after=after)


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output folder that a build could not safely replace."""
    shown = shown_path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"{shown} exists and is not a folder", key="build.output_dir")
    written_by_us = (output_dir / MARKER_DIR).is_dir()
    if output_dir.is_dir() and not written_by_us and any(output_dir.iterdir()):
        raise ConfigError(
            f"{shown} is not empty and was not written by Trinity (no {MARKER_DIR}/ "
            "inside); choose another output folder or empty it",
            key="build.output_dir",
        )
