"""`python -m trinity build` against a hostile server: bounded in time, memory and leaks.

Each build runs in a fresh child of a small measuring process, which reads the build's
peak RSS from getrusage(RUSAGE_CHILDREN) once it has exited; so earlier tests, and the
fake server in this process, never count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import SiteProject, subprocess_env
from tests.redisserver import free_port

# Peak memory a build may reach against a hostile answer (issue 13: 1.45 GB before).
PEAK_BOUND_MIB = 400
# Far longer than any of these builds takes: only a hang would reach it.
HANG_BOUND = 120

_MEASURE = """
import json, resource, subprocess, sys
child = subprocess.run(sys.argv[1:], capture_output=True, text=True, encoding="utf-8")
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
print(json.dumps({"rc": child.returncode, "out": child.stdout + child.stderr, "kib": peak_kib}))
"""


def measured_build(site: SiteProject, *args: str, env: dict[str, str] | None = None) -> Any:
    """{"rc", "out" (stdout and stderr), "kib" (peak RSS)} of one build in a subprocess."""
    import subprocess

    command = [sys.executable, "-m", "trinity", "build", "--project", str(site.root), *args]
    measurer = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        cwd=site.root.parent,
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=HANG_BOUND,
        check=True,
    )
    return json.loads(measurer.stdout)


def assert_failed_cleanly(result: Any, message: str) -> None:
    assert result["rc"] == 1, result["out"]
    assert message in result["out"], result["out"]
    assert "Traceback" not in result["out"], result["out"]
    assert "MemoryError" not in result["out"], result["out"]
    assert result["kib"] < PEAK_BOUND_MIB * 1024, f"peak RSS {result['kib'] // 1024} MiB"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("huge", "more than 4,194,304 bytes; the answer was refused (llm.max_response_bytes"),
        ("endless", "more than 4,194,304 bytes; the answer was refused (llm.max_response_bytes"),
        ("gzip_bomb", "answered with a gzip-encoded body although Trinity asked for none"),
    ],
)
def test_an_unbounded_answer_fails_the_build_in_bounded_memory(
    site_project: SiteProject, kind: str, message: str
) -> None:
    site_project.use_collection(2)
    site_project.server.fail_rate(1.0, kinds=(kind,))  # type: ignore[arg-type]

    result = measured_build(site_project)

    assert_failed_cleanly(result, message)
    assert not (site_project.output / "projects").exists()


@pytest.mark.slow
def test_a_trickling_server_fails_the_build_at_the_deadline(site_project: SiteProject) -> None:
    site_project.use_collection(2)
    site_project.update_settings("llm", timeout=1)
    # A byte every 0.2 s: no read waits long enough for a per-read timeout of 1 s.
    site_project.server.fail_rate(1.0, kinds=("trickle",), hang=0.2)

    result = measured_build(site_project)

    assert_failed_cleanly(result, "within 1 s (llm.timeout bounds the whole request")


def test_credentials_in_the_server_url_appear_nowhere(
    site_project: SiteProject, tmp_path: Path
) -> None:
    site_project.use_collection(1)
    url = f"http://user:secret@127.0.0.1:{free_port()}/api?token=hidden"
    report = tmp_path / "report.json"

    # The production profile writes both logs/trinity.log and logs/errors.log.
    env = {"LLM_API_URL": url, "LOG_PROFILE": "production"}

    result = measured_build(site_project, "--report", str(report), env=env)

    assert result["rc"] == 1, result["out"]
    assert "http://***@127.0.0.1:" in result["out"], result["out"]
    logs = site_project.root / "logs"
    # errors.log is opened by its first ERROR record: a failed block is a warning.
    written = [logs / "trinity.log", report, *logs.glob("errors.log")]
    for text in [result["out"], *(path.read_text(encoding="utf-8") for path in written)]:
        assert "secret" not in text
        assert "hidden" not in text
    assert "***@127.0.0.1" in (logs / "trinity.log").read_text(encoding="utf-8")

    doctor = site_project.run("doctor", "--project", site_project.root, env=env)
    assert "http://***@127.0.0.1:" in doctor.stdout, doctor.stdout
    assert "secret" not in doctor.stdout + doctor.stderr
    assert "hidden" not in doctor.stdout + doctor.stderr
