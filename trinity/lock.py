"""One writer at a time: an OS file lock on a folder, as cargo takes on its target folder.

The lock is `flock` on a small file, so the kernel releases it when its holder exits, by
any means (SIGKILL included): a lock left behind never blocks anyone. The holder writes
its pid into the file, so whoever waits can say for whom. Waiting polls (a tenth of a
second apart) rather than blocking in `flock`, so an async caller keeps its event loop,
and Ctrl-C, alive while it waits.

Nothing here prints: a caller that wants to tell the user it is waiting passes `on_wait`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio

from trinity.errors import LockBusy
from trinity.messages import shown_path
from trinity.oserrors import resource_error

try:
    import fcntl
except ImportError:  # Windows: no flock; msvcrt.locking could stand in, unlocked for now
    fcntl = None  # type: ignore[assignment]

POLL_SECONDS = 0.1


class FolderLock:
    """An exclusive lock held in the file `path`, described for messages as `holder` (pid)
    `doing`: "another build (pid 42) writing output/"."""

    def __init__(self, path: Path, *, holder: str, doing: str) -> None:
        self.path = path
        self.holder = holder
        self.doing = doing
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when held (always, where there is no flock)."""
        if fcntl is None:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        # Ours now: say whose it is, for whoever comes next. Only messages read it, so a
        # full disk that refuses these few bytes costs the pid in them, not the lock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return True

    def _open(self) -> int:
        """The lock file, opened (and made, with its folder, if need be)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            folder = shown_path(self.path.parent) + os.sep
            raise resource_error(exc, folder, f"taking the lock {self.path.name}") from exc

    def release(self) -> None:
        if self._fd is not None:
            # Closing releases the flock; the file stays (removing it would race a waiter
            # that has it open, which would then lock a file nobody else can see).
            os.close(self._fd)
            self._fd = None

    def busy_message(self) -> str:
        """Who holds the lock, as far as its file says: "another build (pid 42) writing
        output/"; the pid is left out when the file does not name one."""
        try:
            text = self.path.read_text("ascii").strip()
        except (OSError, ValueError):
            text = ""
        pid = f" (pid {text})" if text.isdigit() else ""
        return f"{self.holder}{pid} {self.doing}"

    def _waits(self, wait: bool, on_wait: Callable[[str], None] | None) -> Iterator[None]:
        """Yield once per poll until the lock is ours; LockBusy at once if not `wait`."""
        told = False
        while not self.try_acquire():
            if not wait:
                raise LockBusy(f"{self.busy_message()}; not waiting (--no-wait)")
            if not told and on_wait is not None:
                on_wait(f"waiting for {self.busy_message()} ...")
                told = True
            yield

    @contextlib.contextmanager
    def held(
        self, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock for the block; waits for it (telling `on_wait` once), or raises
        LockBusy when `wait` is False and someone else has it."""
        for _ in self._waits(wait, on_wait):
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            self.release()

    @contextlib.asynccontextmanager
    async def held_async(
        self, *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> AsyncIterator[None]:
        """`held` for async code: the event loop (and cancellation) runs while it waits."""
        for _ in self._waits(wait, on_wait):
            await anyio.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            self.release()


def output_lock(output_dir: Path) -> FolderLock:
    """The lock of builds writing `output_dir`.

    Its file is beside the folder (`.output.lock` for `output/`), not in it: a build
    swaps a staging folder in the same parent for the output folder, and a lock file
    inside would move away with the old folder while the next build locked a new one.
    """
    output_dir = output_dir.resolve()
    path = output_dir.parent / f".{output_dir.name}.lock"
    return FolderLock(path, holder="another build", doing=f"writing {shown_path(output_dir)}/")


def cache_lock(directory: Path) -> FolderLock:
    """The lock `trinity cache clear` and `prune` take on the disk tier's folder (its file
    inside the folder, which is created 0700 like the tier makes it)."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise resource_error(exc, f"{shown_path(directory)}/", "making the cache folder") from exc
    return FolderLock(
        directory / ".lock",
        holder="another trinity command",
        doing=f"tidying {shown_path(directory)}/",
    )


__all__ = ["FolderLock", "cache_lock", "output_lock"]
