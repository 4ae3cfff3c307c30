"""One build at a time per output folder, and per cache folder for `cache clear` and
`prune`: real second processes, a real OS lock (issue 13, item 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.sitekit import RunResult, SiteProject, snapshot, subprocess_env
from trinity.lock import cache_lock, output_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the lock is flock (POSIX)")

PAGES = 40
# The brutalist theme's header has this; the minimal theme's has not.
BRUTALIST_MARK = 'class="brand"'


def wait_for(condition: object, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    """Poll `condition` (a callable) until true; fail after 30 s or if `proc` exits."""
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        if proc is not None:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> RunResult:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return RunResult(proc.returncode, stdout, stderr)


def holder(lock_expr: str, folder: Path) -> subprocess.Popen[str]:
    """A `python -c` that takes `lock_expr`'s lock on `folder`, says so, and sleeps."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from trinity.lock import cache_lock, output_lock\n"
        f"lock = {lock_expr}(Path(sys.argv[1]))\n"
        "assert lock.try_acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), "60"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n", finish(proc).describe()
    return proc


def theme_of_pages(site: Path) -> set[str]:
    return {
        "brutalist" if BRUTALIST_MARK in page.read_text("utf-8") else "minimal"
        for page in site.rglob("*.html")
    }


def test_a_second_build_waits_and_the_site_is_one_theme(site_project: SiteProject) -> None:
    site_project.use_collection(PAGES)
    site_project.server.latency = 0.05
    args = ("build", "--project", site_project.root, "--concurrency", "2")

    first = site_project.popen(*args, "--theme", "minimal")
    wait_for(lambda: site_project.server.chat_count > 0, "the first build to start", first)
    second = site_project.popen(*args, "--theme", "brutalist")
    first_result, second_result = finish(first), finish(second)

    assert first_result.exit_code == 0, first_result.describe()
    assert second_result.exit_code == 0, second_result.describe()
    waiting = f"waiting for another build (pid {first.pid}) writing site/output/"
    assert waiting in second_result.stderr, second_result.describe()
    assert theme_of_pages(site_project.output) == {"brutalist"}
    assert site_project.report()["theme"] == "brutalist"
    assert site_project.leftovers() == []


def test_no_wait_exits_1_at_once(site_project: SiteProject) -> None:
    site_project.use_collection(5)
    assert site_project.build().exit_code == 0
    before = snapshot(site_project.output)
    requests = site_project.server.chat_count
    other = holder("output_lock", site_project.output)
    try:
        result = site_project.build("--no-wait", "--theme", "brutalist")
    finally:
        other.kill()
        other.communicate()

    assert result.exit_code == 1, result.describe()
    assert f"another build (pid {other.pid}) writing site/output/" in result.flat
    assert "--no-wait" in result.stderr
    assert "Traceback" not in result.output
    assert site_project.server.chat_count == requests, "it asked no model"
    assert snapshot(site_project.output) == before


def test_a_killed_holder_never_blocks(site_project: SiteProject) -> None:
    site_project.use_collection(5)
    other = holder("output_lock", site_project.output)
    assert not output_lock(site_project.output).try_acquire()
    other.send_signal(signal.SIGKILL)
    other.communicate()

    result = site_project.build("--no-wait")

    assert result.exit_code == 0, result.describe()
    assert "waiting" not in result.output


@pytest.mark.parametrize("command", [("clear",), ("prune",)])
def test_cache_commands_wait_for_the_cache_lock(
    site_project: SiteProject, command: tuple[str, ...]
) -> None:
    cache_dir = site_project.root / ".cache"
    other = holder("cache_lock", cache_dir)
    proc = site_project.popen("cache", *command, "--project", site_project.root)
    assert proc.stderr is not None
    # Its first word on stderr: that it waits (an exit without it would end the stream).
    said = proc.stderr.readline()
    assert not cache_lock(cache_dir).try_acquire(), "the holder still has it"
    assert proc.poll() is None, "the command finished while the lock was held"
    os.kill(other.pid, signal.SIGTERM)
    other.communicate()
    result = finish(proc)

    assert result.exit_code == 0, result.describe()
    assert f"waiting for another trinity command (pid {other.pid}) tidying" in said
