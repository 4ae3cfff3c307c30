"""`trinity build --dry-run`'s cost estimate, against the fake server's usage numbers."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.sitekit import BLOCKS, MODEL, SiteProject

# USD per million tokens for the fake server's model (which no price table knows).
PRICES = {MODEL: {"input": 2.0, "output": 8.0}}


def dry_run(project: SiteProject, *args: str) -> dict[str, Any]:
    result = project.build("--dry-run", "--json", *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def test_the_estimate_is_within_a_fifth_of_what_the_same_build_costs(
    openai_site_project: SiteProject,
) -> None:
    project = openai_site_project
    project.update_settings("llm", prices=PRICES)
    assert project.build().exit_code == 0
    # What every prompt shares changes: every block is to generate again.
    project.update_settings("llm", system="Write plainly, for engineers who skim.")

    estimate = dry_run(project)["estimate"]
    assert project.build().exit_code == 0
    real = project.report()["totals"]

    assert len(estimate["blocks"]) == BLOCKS
    assert {b["input_basis"] for b in estimate["blocks"]} == {"history"}
    assert {b["output_basis"] for b in estimate["blocks"]} == {"history: block"}
    assert real["llm_calls"] == BLOCKS
    assert abs(estimate["cost_usd"] - real["cost_usd"]) <= 0.2 * real["cost_usd"]
