"""`trinity eval` end to end: two aliases (two models on the fake server) or a build report
compared on the example site's blocks, the regressions listed, the exit codes a CI gate
reads, and a second run answered from the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import BLOCKS, RunResult, SiteProject, highlights_prompt_marker

ALIASES = {"old": "ollama:old-model", "new": "ollama:new-model", "twin": "ollama:twin-model"}
BROKEN = "Tidewater"  # the project whose highlights the new model gets wrong
BROKEN_PAGE = "projects/tidewater"


@pytest.fixture
def site(site_project: SiteProject) -> SiteProject:
    """The example site with three aliases; `new-model` answers Tidewater's json block with
    prose (the others answer as the fake always does, the same for every model)."""
    site_project.update_settings("llm", aliases=ALIASES)
    server = site_project.server
    server.clear_scripts()  # first come, first served: the broken answer goes first
    server.script(
        highlights_prompt_marker(BROKEN), "Tidewater has many highlights.", model="new-model"
    )
    for item in site_project.items:
        site_project.script_highlights(item["name"])
    return site_project


def run_eval(site: SiteProject, *args: str | Path) -> RunResult:
    return site.cli("eval", "--project", site.root, *args)


def eval_json(site: SiteProject, *args: str | Path) -> tuple[int, dict[str, Any]]:
    result = run_eval(site, *args, "--json")
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def test_a_regression_between_two_aliases_fails_the_gate(site: SiteProject) -> None:
    result = run_eval(site, "--base", "old", "--candidate", "new")

    assert result.exit_code == 1, result.describe()
    assert f"Regression: {BROKEN_PAGE}: highlights: passed on base, fails on candidate: json" in (
        result.flat
    )
    assert f"Failed: 1 of {BLOCKS} blocks regressed" in result.flat
    assert f"passed {BLOCKS} of {BLOCKS} {BLOCKS - 1} of {BLOCKS}" in result.flat
    assert "Judge: none" in result.flat
    models = {request.body["model"] for request in site.server.chat_requests}
    assert models == {"old-model", "new-model"}


def test_a_second_eval_is_answered_from_the_cache(site: SiteProject) -> None:
    first = run_eval(site, "--base", "old", "--candidate", "new")
    sent = site.server.chat_count
    assert sent == 2 * BLOCKS  # each block once per side: no re-asks

    again = run_eval(site, "--base", "old", "--candidate", "new")

    assert site.server.chat_count == sent
    assert (again.exit_code, again.stdout) == (first.exit_code, first.stdout)


def test_the_gate_allows_a_share_of_regressions(site: SiteProject) -> None:
    allowed = f"{1 / BLOCKS:.3f}"

    result = run_eval(site, "--base", "old", "--candidate", "new", "--max-regressions", allowed)

    assert result.exit_code == 0, result.describe()
    assert "Passed: 1 of" in result.flat


def test_no_regression_passes(site: SiteProject) -> None:
    code, data = eval_json(site, "--base", "old", "--candidate", "twin")

    assert code == 0
    assert data["regressions"] == []
    assert {block["verdict"] for block in data["blocks"]} == {"same"}
    assert data["summary"]["gate"] == "passed"


def test_json_output_has_every_block_both_sides_and_a_summary(site: SiteProject) -> None:
    code, data = eval_json(site, "--base", "old", "--candidate", "new")

    assert code == 1
    assert set(data) == {
        "base",
        "candidate",
        "judge",
        "margin",
        "max_regressions",
        "blocks",
        "regressions",
        "summary",
    }
    assert (data["base"]["name"], data["base"]["kind"]) == ("old", "model")
    assert (data["judge"], data["margin"], data["max_regressions"]) == (None, 0.1, 0.0)
    assert len(data["blocks"]) == BLOCKS
    (broken,) = [
        b for b in data["blocks"] if (b["page"], b["block"]) == (BROKEN_PAGE, "highlights")
    ]
    assert broken["verdict"] == "regression"
    assert broken["base"]["passed"] is True
    assert broken["candidate"]["passed"] is False
    assert broken["candidate"]["failed_checks"][0].startswith("json: the answer is not valid JSON")
    assert set(broken["base"]) == {
        "passed",
        "score",
        "failed_checks",
        "repairs",
        "error",
        "answered",
    }
    assert data["regressions"] == [
        {"page": BROKEN_PAGE, "block": "highlights", "reason": broken["reason"]}
    ]
    summary = data["summary"]
    assert summary["blocks"] == BLOCKS
    assert summary["regressions"] == 1
    assert summary["regression_rate"] == pytest.approx(1 / BLOCKS)
    assert summary["passed"]["base"] == summary["passed"]["candidate"] + 1
    assert summary["mean_score"] == {"base": None, "candidate": None}  # no judge set
    assert summary["gate"] == "failed"


# What a build report says of a block's checks; a report written before Trinity ran checks
# has none of it.
CHECK_FIELDS = ("checks", "failed_checks", "repairs", "reasks", "escalations", "judge_score")


def built_report(site: SiteProject) -> Path:
    """The report of a build of `site`, the server's record of that build cleared."""
    built = site.build()
    assert built.exit_code == 0, built.describe()
    site.server.reset()
    return site.output / ".trinity" / "report.json"


def test_a_built_report_is_compared(site: SiteProject) -> None:
    report = built_report(site)

    code, data = eval_json(site, "--base", str(report), "--candidate", "new")

    assert code == 1
    assert data["base"]["notes"] == []
    assert data["base"]["evaluated"] == BLOCKS
    assert [(r["page"], r["block"]) for r in data["regressions"]] == [(BROKEN_PAGE, "highlights")]
    assert site.server.chat_count == BLOCKS  # only the candidate was asked


def test_a_report_without_check_results_is_read_as_not_evaluated(
    site: SiteProject, tmp_path: Path
) -> None:
    data = json.loads(built_report(site).read_text(encoding="utf-8"))
    for entry in data["blocks"]:
        for name in CHECK_FIELDS:
            del entry[name]
    report = tmp_path / "before-checks.json"
    report.write_text(json.dumps(data), encoding="utf-8")

    code, data = eval_json(site, "--base", str(report), "--candidate", "new")

    assert code == 0  # nothing to compare against is no regression
    assert data["base"]["kind"] == "report"
    assert (
        "the report holds no check results: its blocks are not evaluated" in data["base"]["notes"]
    )
    assert data["base"]["evaluated"] == 0
    assert {block["verdict"] for block in data["blocks"]} == {"not compared"}
    assert site.server.chat_count == BLOCKS  # only the candidate was asked
    shown = run_eval(site, "--base", str(report), "--candidate", "new")
    assert "not evaluated" in shown.flat
    assert "Note: " in shown.flat


def test_a_report_with_check_results_is_compared(site: SiteProject, tmp_path: Path) -> None:
    report = tmp_path / "last-release.json"
    blocks = [
        {"page": BROKEN_PAGE, "block": "highlights", "source": "cache", "failed_checks": []},
        {"page": BROKEN_PAGE, "block": "summary", "source": "failed", "failed_checks": ["words"]},
        {
            "page": "index",
            "block": "intro",
            "source": "llm",
            "failed_checks": [],
            "judge_score": 0.8,
        },
    ]
    report.write_text(json.dumps({"status": "built", "blocks": blocks}), encoding="utf-8")

    code, data = eval_json(site, "--base", str(report), "--candidate", "new")

    assert code == 1
    assert [(r["page"], r["block"]) for r in data["regressions"]] == [(BROKEN_PAGE, "highlights")]
    outcome = {(b["page"], b["block"]): b for b in data["blocks"]}
    assert outcome[(BROKEN_PAGE, "summary")]["base"]["failed_checks"] == ["words"]
    assert outcome[("index", "intro")]["base"]["score"] == 0.8
    assert data["base"]["notes"] == [f"{BLOCKS - 3} of the site's blocks are not in it"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "old", "--candidate", "nwe"], "--candidate: 'nwe' is neither a model"),
        (["--base", "old", "--candidate", "nwe"], "(did you mean 'new'?)"),
        (["--base", "openai:", "--candidate", "new"], "--base: 'openai:' is neither"),
        (["--base", "missing.json", "--candidate", "new"], "--base: cannot read the report"),
    ],
)
def test_a_bad_side_is_bad_input(site: SiteProject, args: list[str], message: str) -> None:
    result = run_eval(site, *args)

    assert result.exit_code == 2, result.describe()
    assert message in result.flat
    assert site.server.chat_count == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"blocks": [{"page": "index"}]}', "is not a build report"),
        ("[1, 2]", "is not a build report"),
    ],
)
def test_an_unreadable_report_is_bad_input(
    site: SiteProject, tmp_path: Path, content: str, message: str
) -> None:
    report = tmp_path / "report.json"
    report.write_text(content, encoding="utf-8")

    result = run_eval(site, "--base", "old", "--candidate", str(report))

    assert result.exit_code == 2, result.describe()
    assert "Error: --candidate: " in result.flat
    assert message in result.flat


def test_a_margin_out_of_range_is_bad_input(site: SiteProject) -> None:
    result = run_eval(site, "--base", "old", "--candidate", "new", "--margin", "2")

    assert result.exit_code == 2
    assert site.server.chat_count == 0


def test_blocks_a_model_could_not_answer(site: SiteProject, tmp_path: Path) -> None:
    report = tmp_path / "last-release.json"
    blocks = [{"page": "index", "block": "intro", "source": "llm", "failed_checks": []}]
    report.write_text(json.dumps({"blocks": blocks}), encoding="utf-8")
    site.server.fail_rate(1.0, statuses=(400,))  # refused: not retried

    code, data = eval_json(site, "--base", "old", "--candidate", "new")

    assert code == 0  # a base without answers is no reference: nothing is compared
    assert {block["verdict"] for block in data["blocks"]} == {"not compared"}
    assert data["blocks"][0]["reason"].startswith("no answer on base: ")
    assert data["base"]["notes"][0].startswith(f"{BLOCKS} blocks got no answer, such as: ")

    code, data = eval_json(site, "--base", str(report), "--candidate", "new")

    assert code == 1  # against a good release, a model that answers nothing regresses
    (regression,) = data["regressions"]
    assert regression["reason"].startswith("passed on base, fails on candidate: http://")
    assert "answered HTTP 400" in regression["reason"]
    assert data["blocks"][0]["candidate"]["answered"] is False
