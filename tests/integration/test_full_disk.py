"""A real small tmpfs, full or read-only, under the staged output, its writer thread and
the log files: one ResourceError line for the output, one warning for the logs."""

from __future__ import annotations

import errno
import io
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from tests.tmpfs import FILLER, SmallDisk, mounted_tmpfs
from trinity.errors import ResourceError
from trinity.lock import output_lock
from trinity.logs import LogProfile, get_logger, install_logging
from trinity.staging import MARKER_DIR, BackgroundWriter, StagedOutput


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with mounted_tmpfs(tmp_path / "disk") as disk:
        yield disk


def previous_site(folder: Path) -> Path:
    """An output folder a previous build wrote."""
    (folder / MARKER_DIR).mkdir(parents=True)
    (folder / "index.html").write_text("old home")
    return folder


def test_a_read_only_disk_refuses_the_staging_folder_in_one_line(small_disk: SmallDisk) -> None:
    output = previous_site(small_disk.path / "out")
    small_disk.make_read_only()

    with pytest.raises(ResourceError) as raised:
        StagedOutput(output)

    assert str(raised.value).endswith(
        "out/: read-only file system while making the staging folder beside it; choose "
        "another output folder (--output) on a writable file system and build again; the "
        "previous site was left as it was"
    )
    assert raised.value.errno == errno.EROFS
    assert raised.value.path.endswith("out/")
    assert (output / "index.html").read_text() == "old home"


def test_the_writer_thread_hands_over_a_full_disk_as_one_line(small_disk: SmallDisk) -> None:
    output = previous_site(small_disk.path / "out")
    with StagedOutput(output) as staged:
        small_disk.fill()
        with BackgroundWriter(staged) as writer, pytest.raises(ResourceError) as raised:
            for number in range(200):  # the first page fails; the next write, or close, says so
                writer.write_text(f"page-{number}/index.html", "<p>a page</p>\n" * 100)
            writer.close()

    assert raised.value.errno == errno.ENOSPC
    assert "out/: no space left on device while writing page-0/index.html; " in str(raised.value)
    assert "Traceback" not in str(raised.value) and "\n" not in str(raised.value)
    assert sorted(p.name for p in small_disk.path.iterdir()) == [".filler", "out"]
    assert (output / "index.html").read_text() == "old home"


def test_a_full_disk_costs_the_lock_its_pid_not_the_lock(small_disk: SmallDisk) -> None:
    small_disk.fill()
    lock = output_lock(small_disk.path / "out")

    with lock.held(wait=False):
        assert (small_disk.path / ".out.lock").read_bytes() == b""  # no room for the pid
        assert not output_lock(small_disk.path / "out").try_acquire()  # but held all the same


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """The root logger's handlers and levels, put back after the test."""
    root = logging.getLogger()
    handlers, levels = list(root.handlers), (root.level, logging.getLogger("trinity").level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    logging.getLogger("trinity").setLevel(levels[1])


PROFILE = LogProfile("test", level="DEBUG", format="text", color=False)


@pytest.mark.usefixtures("root_handlers")
@pytest.mark.parametrize("console", [True, False], ids=["console", "no-console"])
def test_log_files_on_a_full_disk_stop_after_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], console: bool
) -> None:
    out = io.StringIO()
    with mounted_tmpfs(tmp_path / "logs") as disk:
        disk.fill()
        installed = install_logging(
            replace(PROFILE, console=console),
            console=Console(file=out, width=300, color_system=None),
            base_dir=tmp_path,
        )
        log = get_logger("trinity.tests.full_disk")
        for number in range(20):  # errors: both trinity.log and errors.log take them
            log.error("record %d", number)
        (disk.path / FILLER).unlink()
        log.error("once there is room again")  # off is off: no file takes it
        installed.remove()  # closing flushes: it must not raise on the full disk either
        assert not any("room again" in p.read_text() for p in disk.path.iterdir())

    stderr = capsys.readouterr().err
    assert "Logging error" not in stderr and "Traceback" not in stderr
    shown = out.getvalue() if console else stderr
    warnings = [line for line in shown.splitlines() if "cannot write" in line]
    assert len(warnings) == 1, shown
    assert warnings[0].endswith(
        "logs/trinity.log (no space left on device); log files are off for the rest of this run"
    )
    if console:
        assert out.getvalue().count("record ") == 20  # the console kept logging
        assert "room again" in out.getvalue()
    else:
        assert warnings[0].startswith("Warning: ")
