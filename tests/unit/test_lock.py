"""trinity.lock: an OS lock on a folder, waited for or refused; killed holders are
covered end to end in tests/e2e/test_build_lock.py."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from trinity.errors import LockBusy, ResourceError
from trinity.lock import FolderLock, cache_lock, output_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the lock is flock (POSIX)")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[FolderLock]:
    """The output lock of tmp_path/output, taken (flock conflicts between two open files
    even within one process, so a second FolderLock here stands for another build)."""
    lock = output_lock(tmp_path / "output")
    assert lock.try_acquire()
    yield lock
    lock.release()


def test_the_lock_file_is_beside_the_output_folder(tmp_path: Path) -> None:
    assert output_lock(tmp_path / "output").path == tmp_path / ".output.lock"


def test_a_held_lock_is_refused_and_names_its_holder(held: FolderLock, tmp_path: Path) -> None:
    other = output_lock(tmp_path / "output")

    assert not other.try_acquire()
    assert f"another build (pid {os.getpid()}) writing " in other.busy_message()
    with pytest.raises(LockBusy, match=r"--no-wait"), other.held(wait=False):
        pass


def test_a_released_lock_is_free(held: FolderLock, tmp_path: Path) -> None:
    held.release()

    other = output_lock(tmp_path / "output")
    with other.held(wait=False):
        assert not held.try_acquire()
    assert held.try_acquire()


def test_a_waiter_says_why_once_and_gets_the_lock(held: FolderLock, tmp_path: Path) -> None:
    told: list[str] = []
    releaser = threading.Timer(0.3, held.release)
    releaser.start()
    try:
        with output_lock(tmp_path / "output").held(on_wait=told.append):
            assert not held.try_acquire()
    finally:
        releaser.cancel()

    assert len(told) == 1
    assert told[0].startswith(f"waiting for another build (pid {os.getpid()}) writing ")


def test_an_async_waiter_can_be_cancelled(held: FolderLock, tmp_path: Path) -> None:
    """Waiting polls in the event loop: a cancellation (Ctrl-C) ends the wait."""
    got_it = False

    async def wait() -> None:
        nonlocal got_it
        with anyio.move_on_after(0.3):
            async with output_lock(tmp_path / "output").held_async():
                got_it = True

    anyio.run(wait)

    assert not got_it


def test_a_cache_folder_that_cannot_be_made_is_one_resource_error(tmp_path: Path) -> None:
    """A file where the cache folder must go: mkdir fails even for root."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder", "utf-8")
    with pytest.raises(ResourceError, match=r"blocker/\.cache/: .* while making the cache"):
        cache_lock(blocker / ".cache")
