"""`trinity build --dry-run`'s cost estimate, against the fake server's usage numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.sitekit import BLOCKS, MODEL, SiteProject
from trinity.usagehistory import HISTORY_FILE, read_history

# USD per million tokens for the fake server's model (which no price table knows).
PRICES = {MODEL: {"input": 2.0, "output": 8.0}}
# What every prompt shares: changing it leaves every block to generate again.
NEW_SYSTEM = "Write plainly, for engineers who skim."


def dry_run(project: SiteProject, *args: str) -> dict[str, Any]:
    result = project.build("--dry-run", "--json", *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def built_once_then_changed(project: SiteProject, system: str = NEW_SYSTEM) -> None:
    """Priced, built once (so the history knows the site), then every prompt changed."""
    project.update_settings("llm", prices=PRICES)
    assert project.build().exit_code == 0
    project.update_settings("llm", system=system)


def test_the_estimate_is_within_a_fifth_of_what_the_same_build_costs(
    openai_site_project: SiteProject,
) -> None:
    project = openai_site_project
    built_once_then_changed(project)

    estimate = dry_run(project)["estimate"]
    assert project.build().exit_code == 0
    real = project.report()["totals"]

    assert len(estimate["blocks"]) == BLOCKS
    assert {b["input_basis"] for b in estimate["blocks"]} == {"history"}
    assert {b["output_basis"] for b in estimate["blocks"]} == {"history: block"}
    assert real["llm_calls"] == BLOCKS
    assert abs(estimate["cost_usd"] - real["cost_usd"]) <= 0.2 * real["cost_usd"]
    assert abs(estimate["input_tokens"] - real["input_tokens"]) <= 0.2 * real["input_tokens"]
    assert abs(estimate["output_tokens"] - real["output_tokens"]) <= 0.2 * real["output_tokens"]
    (model,) = estimate["models"]
    assert (model["model"], model["blocks"], model["priced"]) == (MODEL, BLOCKS, True)
    assert model["cost_usd"] == estimate["cost_usd"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_estimate_expects_the_prompt_cache_to_serve_what_it_did_before(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = make_site_project(provider=provider)
    project.server.prompt_cache = True
    # A long system prompt, so that the prompt cache's share of the cost is worth having.
    project.update_settings("llm", system="Keep to the facts. " * 60)
    built_once_then_changed(project, system="Keep to the facts given. " * 60)
    project.update_settings("llm", prices={MODEL: {**PRICES[MODEL], "cached_input": 0.2}})

    estimate = dry_run(project)["estimate"]
    assert project.build().exit_code == 0
    real = project.report()["totals"]

    assert real["cached_input_tokens"] > real["input_tokens"] / 2
    assert abs(estimate["cost_usd"] - real["cost_usd"]) <= 0.2 * real["cost_usd"]
    # Priced as if nothing were cached, it would be far off.
    uncached = (estimate["input_tokens"] * 2.0 + estimate["output_tokens"] * 8.0) / 1e6
    assert uncached > 1.5 * real["cost_usd"]


def test_the_max_cost_verdict_foretells_the_blocks_a_build_refuses(
    openai_site_project: SiteProject,
) -> None:
    project = openai_site_project
    built_once_then_changed(project)
    full = dry_run(project)["estimate"]["cost_usd"]
    cap = f"{full / 2:.6f}"

    verdict = dry_run(project, "--max-cost", cap)["estimate"]["max_cost"]
    # One call at a time, so that the real build holds one ceiling at a time, as the
    # replay does.
    result = project.build("--max-cost", cap, "--concurrency", "1", "--keep-going", "--json")
    refused = [b for b in json.loads(result.stdout)["blocks"] if b["source"] == "failed"]

    assert verdict["stops"] is True
    assert 0 < verdict["blocks_before_stop"] < BLOCKS
    assert refused, result.output
    assert all("cost budget" in (b["error"] or "") for b in refused)
    assert abs(len(refused) - verdict["blocks_refused"]) <= 2


def test_a_cap_above_the_estimate_does_not_stop_the_build(
    openai_site_project: SiteProject,
) -> None:
    project = openai_site_project
    built_once_then_changed(project)

    verdict = dry_run(project, "--max-cost", "100")["estimate"]["max_cost"]

    assert verdict == {
        "max_cost_usd": 100.0,
        "stops": False,
        "blocks_before_stop": None,
        "blocks_refused": 0,
    }


def test_the_dry_run_draws_the_estimate_and_the_verdict(openai_site_project: SiteProject) -> None:
    project = openai_site_project
    project.update_settings("llm", prices=PRICES)

    result = project.build("--dry-run", "--max-cost", "0.001")

    assert result.exit_code == 0, result.output
    text = result.flat
    assert "Estimated cost of the blocks to generate" in text
    assert f"openai:{MODEL}" in text
    # No history yet: characters over the default ratio, and max_tokens as a ceiling.
    assert "(estimated)" in text
    assert "(max)" in text
    assert "--max-cost $0.0010 would stop the build after about" in text
    assert f"0 cached, {BLOCKS} to generate" in text


def test_a_free_model_costs_nothing_and_its_tokens_are_still_counted(
    site_project: SiteProject,
) -> None:
    # Ollama runs on the user's machine: no price, and no need of one.
    estimate = dry_run(site_project)["estimate"]

    assert estimate["cost_usd"] == 0
    assert estimate["priced"] is True
    assert all(b["input_tokens"] > 0 and b["output_tokens"] > 0 for b in estimate["blocks"])
    assert estimate["max_cost"]["stops"] is False


def test_a_cached_site_has_nothing_to_estimate(openai_site_project: SiteProject) -> None:
    project = openai_site_project
    project.update_settings("llm", prices=PRICES)
    assert project.build().exit_code == 0

    estimate = dry_run(project)["estimate"]

    assert (estimate["blocks"], estimate["cost_usd"]) == ([], 0)


def test_a_hostile_history_is_ignored(openai_site_project: SiteProject) -> None:
    project = openai_site_project
    built_once_then_changed(project)
    history = project.root / ".cache" / HISTORY_FILE
    assert history.is_file()
    lies = [
        {
            "model": MODEL,
            "block": "intro",
            "format": "markdown",
            "max_tokens": 10,
            "calls": True,
            "input_tokens": -5,
            "output_tokens": "many",
            "prompt_chars": 10**30,
        },
        "not an entry",
    ]
    history.write_text(json.dumps({"version": 1, "entries": lies}), "utf-8")

    estimate = dry_run(project)["estimate"]

    assert {b["input_basis"] for b in estimate["blocks"]} == {"default"}
    assert {b["output_basis"] for b in estimate["blocks"]} == {"max_tokens"}
    # ... and the next build writes a good one over it.
    assert project.build().exit_code == 0
    assert {entry.block for entry in read_history(history.parent)} == {
        "intro",
        "about",
        "now",
        "summary",
        "lessons",
        "highlights",
    }
