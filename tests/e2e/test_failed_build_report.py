"""A failed build still gives its report, where the user asked for it (issue 13, item 10):
`--json` on stdout and `--report PATH`, each failed block with its reason, and a status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.sitekit import ITEM_BLOCKS, SiteProject, snapshot


def failed_blocks(report: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (b["page"], b["block"]): b["error"] for b in report["blocks"] if b["source"] == "failed"
    }


@pytest.mark.parametrize("keep_going", [False, True], ids=["stop", "keep-going"])
def test_a_failed_build_reports_its_failed_blocks(
    site_project: SiteProject, keep_going: bool
) -> None:
    assert site_project.build().exit_code == 0
    before = snapshot(site_project.output)
    site_project.add_item("Newcomer", "A project added after the first build.")
    site_project.rescript_highlights()
    # Not worth retrying: each of the new project's blocks fails at its only request.
    site_project.server.fail_next(len(ITEM_BLOCKS), 400)
    report_path = site_project.root.parent / "reports" / "build.json"

    result = site_project.build(
        "--json", "--report", report_path, *(["--keep-going"] if keep_going else [])
    )

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    printed = json.loads(result.stdout)
    assert printed["status"] == "failed"
    failed = failed_blocks(printed)
    assert set(failed) == {("projects/newcomer", block) for block in ITEM_BLOCKS}
    assert all("HTTP 400" in reason for reason in failed.values()), failed
    assert printed["totals"]["failed"] == len(ITEM_BLOCKS)
    assert json.loads(report_path.read_text("utf-8")) == printed
    if not keep_going:
        assert snapshot(site_project.output) == before
    assert site_project.leftovers() == []


def test_a_successful_build_says_built(site_project: SiteProject) -> None:
    result = site_project.build("--json")

    assert result.exit_code == 0, result.describe()
    assert json.loads(result.stdout)["status"] == "built"
    assert site_project.report()["status"] == "built"
