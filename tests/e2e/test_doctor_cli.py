"""`trinity doctor` from the command line: its table, `--json`, options and exit codes.

Projects here talk to the loopback fake LLM server. The llama.cpp build check is left out
where a test needs every row to pass: its verdict depends on how this machine's
llama-cpp-python was built, which the unit tests cover with fed-in system info.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import RunResult, invoke, run_trinity
from tests.fakellm import FakeLLMServer
from trinity import doctor

SECRET = "sk-doctor-cli-secret-0123456789"


@pytest.fixture
def machine_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    checks = tuple(check for check in doctor.CHECKS if check is not doctor.check_llama_build)
    monkeypatch.setattr(doctor, "CHECKS", checks)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path / "site"


def write_settings(path: Path, provider: str, url: str, model: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "site:\n  title: Doctor's site\n"
        f"llm:\n  provider: {provider}\n  api_url: {url}\n  model: {model}\n",
        encoding="utf-8",
    )
    return path


def ollama_project(project: Path, server: FakeLLMServer, model: str = "llama3.2") -> Path:
    write_settings(project / "config" / "settings.yaml", "ollama", server.url, model)
    return project


def rows(result: RunResult) -> dict[str, dict[str, Any]]:
    """The --json rows by name (the whole of stdout must be the JSON list)."""
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, list)
    for row in parsed:
        assert set(row) == {"name", "status", "detail", "hint"}
        assert row["status"] in ("OK", "WARN", "FAIL")
    return {row["name"]: row for row in parsed}


@pytest.mark.usefixtures("machine_independent")
def test_a_healthy_set_up_exits_0_and_lists_every_check(
    project: Path, fake_llm: FakeLLMServer
) -> None:
    fake_llm.models = ["llama3.2"]
    result = invoke(["doctor", "-p", ollama_project(project, fake_llm), "--json"])
    assert result.exit_code == 0, result.describe()
    found = rows(result)
    assert found["server: ollama"]["status"] == "OK"
    assert found["settings"]["status"] == "OK"
    assert {"python", "trinity", "extra: local", "extra: redis"} <= set(found)
    assert {"folder: output", "folder: cache", "folder: logs"} <= set(found)
    assert all(row["status"] != "FAIL" for row in found.values())


@pytest.mark.usefixtures("machine_independent")
def test_a_missing_model_exits_1_with_a_table_that_says_how_to_fix_it(
    project: Path, fake_llm: FakeLLMServer
) -> None:
    fake_llm.models = ["qwen3:8b"]
    result = invoke(["doctor", "--project", ollama_project(project, fake_llm)])
    assert result.exit_code == 1, result.describe()
    line = next(line for line in result.stdout.splitlines() if "server: ollama" in line)
    assert re.search(
        r"server: ollama\s+FAIL\s+.*does not list llama3\.2.*ollama pull llama3\.2", line
    )
    assert re.search(r"^1 problem, \d+ warnings?$", result.stdout, re.MULTILINE), result.stdout


@pytest.mark.usefixtures("machine_independent")
def test_warnings_alone_exit_0(project: Path, fake_llm: FakeLLMServer) -> None:
    # A server that answers, but not with a models list there: the doctor cannot tell.
    url = f"{fake_llm.url}/not-a-models-list"
    write_settings(project / "config" / "settings.yaml", "ollama", url, "llama3.2")
    result = invoke(["doctor", "-p", project, "--json"])
    assert result.exit_code == 0, result.describe()
    assert rows(result)["server: ollama"]["status"] == "WARN"


def test_broken_settings_exit_1_and_the_other_checks_still_run(project: Path) -> None:
    path = project / "config" / "settings.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("site:\n  title: x\nllm:\n  provider: olama\n", encoding="utf-8")
    result = invoke(["doctor", "-p", project, "--json"])
    assert result.exit_code == 1, result.describe()
    found = rows(result)
    assert found["settings"]["status"] == "FAIL"
    assert "site/config/settings.yaml: llm.provider" in found["settings"]["detail"]
    assert "did you mean 'ollama'" in found["settings"]["detail"]
    assert {"python", "trinity", "extra: local", "extra: redis"} <= set(found)


@pytest.mark.usefixtures("machine_independent")
def test_config_chooses_the_settings_file(project: Path, fake_llm: FakeLLMServer) -> None:
    fake_llm.models = ["llama3.2"]
    project.mkdir()
    elsewhere = write_settings(project / "other.yaml", "ollama", fake_llm.url, "llama3.2")
    result = invoke(["doctor", "-p", project, "-c", elsewhere, "--json"])
    assert result.exit_code == 0, result.describe()
    assert rows(result)["settings"]["detail"].startswith("site/other.yaml:")


@pytest.mark.usefixtures("machine_independent")
def test_an_api_key_is_never_printed(project: Path, fake_llm: FakeLLMServer) -> None:
    fake_llm.models = ["gpt-4o-mini"]
    write_settings(project / "config" / "settings.yaml", "openai", fake_llm.url, "gpt-x")
    env = {"OPENAI_API_KEY": SECRET}
    table = invoke(["doctor", "-p", project], env)
    listing = invoke(["doctor", "-p", project, "--json"], env)
    assert table.exit_code == listing.exit_code == 1
    assert fake_llm.last_request is not None
    assert fake_llm.last_request.headers["authorization"] == f"Bearer {SECRET}"
    for result in (table, listing):
        assert SECRET not in result.output
    assert "does not list gpt-x" in rows(listing)["server: openai"]["detail"]


def test_as_a_process_stdout_is_only_the_json(tmp_path: Path) -> None:
    """No progress, colour or table reaches stdout with --json, through the real consoles."""
    result = run_trinity(["doctor", "--json", "-p", "no-such-project"], cwd=tmp_path)
    assert result.exit_code == 1, result.describe()
    found = rows(RunResult(result.exit_code, result.stdout, ""))
    assert "project folder not found" in found["settings"]["detail"]
    assert "Traceback" not in result.output


def test_doctor_is_listed_in_the_help() -> None:
    result = invoke(["--help"])
    assert re.search(r"doctor\s+Check the set-up", result.stdout), result.stdout
