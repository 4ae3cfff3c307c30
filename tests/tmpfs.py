"""A real small file system for the tests of full and read-only disks: a mounted tmpfs.

Mounting needs root (or CAP_SYS_ADMIN in a user namespace). Where the machine refuses
it, the tests that need one skip with the reason, never pass without having run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"


class SmallDisk:
    """A tmpfs mounted at `path`, which a test can fill up or make read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Take every free byte, so that the next file written here fails with ENOSPC.

        Folders still fit (tmpfs counts file pages only), as they often do on a full
        disk: what fails is the first page written.
        """
        fd = os.open(self.path / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * 65536
            while True:
                os.write(fd, chunk)  # a short write near the end, then ENOSPC
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def make_read_only(self) -> None:
        _mount("-o", "remount,ro", str(self.path))


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str = "1m") -> Iterator[SmallDisk]:
    """A tmpfs of `size` at `path` (made if missing) for the block; skips where the
    machine does not allow mounting."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount and umount commands to make a small tmpfs with")
    path.mkdir(parents=True, exist_ok=True)
    refused = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if refused:
        pytest.skip(f"cannot mount a tmpfs here (it needs root): {refused}")
    try:
        yield SmallDisk(path)
    finally:
        # Lazy: a file a child process still holds open must not fail the teardown.
        subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


def _mount(*args: str) -> str:
    """Run `mount ARGS`; its complaint when it fails, "" when it worked."""
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else result.stderr.strip() or f"exit {result.returncode}"
