"""A full, read-only or forbidden disk under output/, logs/ or .cache/, through the real
CLI in a subprocess: one line naming the folder and what to do, never a traceback; the
previous site intact; and logs or cache that cannot be written never fail a build."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.sitekit import RunResult, SiteProject, run_trinity, snapshot
from tests.tmpfs import SmallDisk, mounted_tmpfs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 1 MB tmpfs at tmp_path/disk: room for the example site, and little more."""
    with mounted_tmpfs(tmp_path / "disk") as disk:
        yield disk


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_one_error_line(result: RunResult, pattern: str) -> str:
    """Exit 1, and stderr is one line: `Error: ` and then `pattern` (a regex)."""
    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert lines(result.stderr) == [lines(result.stderr)[0]], result.describe()
    line = lines(result.stderr)[0]
    assert re.fullmatch(f"Error: {pattern}", line), line
    return line


def assert_built(result: RunResult, project: SiteProject, theme: str) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert project.report()["theme"] == theme
    for page in project.page_files():
        assert (project.output / page).is_file()


def built_on(site_project: SiteProject, small_disk: SmallDisk) -> tuple[Path, dict[str, bytes]]:
    """A site built into the small disk's `out/`, and what it holds."""
    output = small_disk.path / "out"
    first = site_project.run("build", "-p", site_project.root, "-o", output)
    assert first.exit_code == 0, first.describe()
    return output, snapshot(output)


def rebuild_brutalist(site_project: SiteProject, output: Path) -> RunResult:
    return site_project.run("build", "-p", site_project.root, "-o", output, "--theme", "brutalist")


def test_output_on_a_full_disk_is_one_line_and_the_site_is_kept(
    site_project: SiteProject, small_disk: SmallDisk
) -> None:
    output, before = built_on(site_project, small_disk)
    small_disk.fill()

    result = rebuild_brutalist(site_project, output)

    assert_one_error_line(
        result,
        r"disk/out/: no space left on device while writing \S+; free some space and build "
        r"again; the previous site was left as it was",
    )
    assert snapshot(output) == before
    assert not [p.name for p in small_disk.path.iterdir() if ".staging-" in p.name]


def test_output_on_a_read_only_disk_is_one_line_and_the_site_is_kept(
    site_project: SiteProject, small_disk: SmallDisk
) -> None:
    output, before = built_on(site_project, small_disk)
    small_disk.make_read_only()

    result = rebuild_brutalist(site_project, output)

    # The lock beside the output folder is the first thing a build writes.
    assert_one_error_line(
        result, r"disk/: read-only file system while taking the lock \.out\.lock; .+"
    )
    assert snapshot(output) == before


@pytest.fixture
def forbidden() -> Path:
    """/sys, which refuses new files and folders even to root: a real EACCES or EPERM
    where chmod cannot make one (these tests run as root, whom permissions do not stop)."""
    probe = Path("/sys/.trinity-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM):
            pytest.skip(f"/sys does not refuse new files here: {exc}")
    else:
        probe.unlink()
        pytest.skip("/sys takes new files here")
    return Path("/sys")


def test_an_output_folder_the_system_forbids_is_one_line(
    site_project: SiteProject, forbidden: Path
) -> None:
    result = site_project.run("build", "-p", site_project.root, "-o", forbidden / "trinity-output")

    assert_one_error_line(
        result,
        r"/sys/: (permission denied|operation not permitted) while taking the lock "
        r"\.trinity-output\.lock; let this user write to it .+",
    )


def test_init_into_a_folder_the_system_forbids_is_one_line(tmp_path: Path, forbidden: Path) -> None:
    result = run_trinity(["init", forbidden / "trinity-project"], cwd=tmp_path)

    assert_one_error_line(
        result,
        r"/sys/trinity-project/: (permission denied|operation not permitted) while writing "
        r"\S+; let this user write to it .+",
    )


def test_a_report_the_full_disk_refuses_is_one_line_after_the_site_is_written(
    site_project: SiteProject, small_disk: SmallDisk
) -> None:
    small_disk.fill()

    result = site_project.run(
        "build", "-p", site_project.root, "--report", small_disk.path / "report.json"
    )

    assert_one_error_line(
        result,
        r"disk/report\.json: no space left on device while writing the build report; free "
        r"some space and try again; the site was written",
    )
    assert site_project.report()["theme"] == "minimal"
    assert sorted(p.name for p in small_disk.path.iterdir()) == [".filler"]  # no half report


def test_logs_on_a_full_disk_cost_one_warning_and_never_the_build(
    site_project: SiteProject, tmp_path: Path
) -> None:
    with mounted_tmpfs(site_project.root / "logs") as logs:
        logs.fill()
        result = site_project.run("build", "-p", site_project.root)

    assert_built(result, site_project, "minimal")
    assert "Logging error" not in result.output, result.describe()
    warnings = [line for line in lines(result.stderr) if "trinity.log" in line]
    assert len(warnings) == 1, result.describe()
    assert re.search(
        r"WARNING .*cannot write site/logs/trinity\.log \(no space left on device\); log "
        r"files are off for the rest of this run",
        warnings[0],
    ), warnings[0]


def test_a_cache_on_a_full_disk_is_a_warning_and_the_site_is_built(
    site_project: SiteProject,
) -> None:
    with mounted_tmpfs(site_project.root / ".cache") as cache:
        first = site_project.run("build", "-p", site_project.root)
        assert_built(first, site_project, "minimal")
        cache.fill()
        # A new theme re-voices every block: new answers, which the full disk refuses.
        result = site_project.run("build", "-p", site_project.root, "--theme", "brutalist")

    assert_built(result, site_project, "brutalist")
    warnings = [line for line in lines(result.stderr) if "WARNING" in line]
    assert warnings, result.describe()
    assert all(".cache" in line for line in warnings), result.describe()
