"""`trinity build --batch` (issue 19): the uncached blocks asked through OpenAI's Batch API
or Anthropic's Message Batches API on the fake server, at half price, resumable.

Every test builds against the loopback fake server (tests/fakebatch.py), with a short
`llm.batch.poll_interval`; none waits on a clock to assert anything.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.sitekit import MODEL, RunResult, SiteProject

BLOCKS = 200
PRICES = {MODEL: {"input": 2.0, "output": 8.0}}


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def batch_site(make: Callable[..., SiteProject], provider: str, pages: int = BLOCKS) -> SiteProject:
    """`pages` one-block pages on `provider`, priced, polling the fake server often."""
    project = make(provider=provider)
    project.use_collection(pages)
    project.update_settings("llm", prices=PRICES, batch={"poll_interval": 0.02})
    return project


def assert_site_complete(project: SiteProject, pages: int = BLOCKS) -> None:
    for slug in project.item_slugs:
        assert "Generated answer " in project.html(f"projects/{slug}/index.html")
    assert len(project.item_slugs) == pages


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_200_block_site_builds_in_one_batch_at_half_the_live_cost(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = batch_site(make_site_project, provider)
    server = project.server

    assert_ok(project.build("--batch"))

    assert server.batches.requests_per_batch == [BLOCKS]
    assert server.chat_count == 0, "no block was asked live"
    assert_site_complete(project)
    report = project.report()
    totals = report["totals"]
    assert totals["llm_calls"] == BLOCKS and totals["cache_hits"] == 0
    assert totals["batched"] == BLOCKS
    assert all(block["batch"] for block in report["blocks"])
    assert report["batch"]["answered"] == BLOCKS
    batch_cost = totals["cost_usd"]

    # The same site built live, every block asked again: the same usage numbers (the fake
    # server's), twice the cost.
    assert_ok(project.build("--no-cache"))
    live_totals = project.report()["totals"]
    assert live_totals["batched"] == 0 and live_totals["llm_calls"] == BLOCKS
    assert batch_cost > 0
    assert batch_cost == pytest.approx(live_totals["cost_usd"] / 2, rel=1e-9)
