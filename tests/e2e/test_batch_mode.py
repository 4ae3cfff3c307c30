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


# --------------------------------------------------------------------------- resuming

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], proc: object | None = None) -> None:
    """Until `condition` holds (a generous bound only against a hung test)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_build_interrupted_while_its_batch_is_pending_resumes_it_without_paying_again(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = batch_site(make_site_project, provider)
    server = project.server
    server.batches.delay = 3600  # pending until the test says otherwise

    proc = project.popen("build", "--project", project.root, "--batch", env={"PYTHONPATH": str(REPO)})
    try:
        wait_for(lambda: server.batches.polls >= 1 or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert server.batches.created == 1
    assert not (project.output / "index.html").exists()

    server.batches.delay = 0  # the batch has ended meanwhile
    result = project.build("--batch")

    assert_ok(result)
    assert server.batches.created == 1, "the re-run polled the same batch, sent none"
    assert server.chat_count == 0
    assert_site_complete(project)
    report = project.report()
    assert len(report["batch"]["batches_resumed"]) == 1 and report["batch"]["batches_sent"] == []
    assert report["totals"]["batched"] == BLOCKS
    assert not list(project.root.rglob("batches/pending.json")) or _ledger(project) == []


def _ledger(project: SiteProject) -> list[object]:
    (path,) = project.root.rglob("batches/pending.json")
    data = json.loads(path.read_text("utf-8"))
    batches = data["batches"]
    assert isinstance(batches, list)
    return batches


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("provider", "kind"), [("openai", "errored"), ("anthropic", "expired"), ("anthropic", "errored")]
)
def test_requests_a_batch_failed_are_asked_again_in_the_next_batch(
    make_site_project: Callable[..., SiteProject], provider: str, kind: str
) -> None:
    project = batch_site(make_site_project, provider, 20)
    project.server.batches.fail_next(3, kind)  # type: ignore[arg-type]

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [20, 3]
    assert project.server.chat_count == 0
    assert_site_complete(project, 20)
    report = project.report()
    assert report["totals"]["batched"] == 20
    assert report["batch"]["failed"] == 3 and report["batch"]["answered"] == 20


def test_with_then_live_the_failed_requests_are_asked_live(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 20)
    project.server.batches.fail_next(3)

    result = project.build("--batch=then-live")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [20]
    assert project.server.chat_count == 3
    assert_site_complete(project, 20)
    totals = project.report()["totals"]
    assert (totals["batched"], totals["llm_calls"]) == (17, 20)
    assert "3 blocks are asked live: --batch=then-live" in result.flat


def test_what_the_last_round_failed_is_asked_live_with_a_warning(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "anthropic", 10)
    project.update_settings("llm", batch={"poll_interval": 0.02, "rounds": 2})
    project.server.batches.fail_next(20)  # all of the first batch, and of the second

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [10, 10]
    assert project.server.chat_count == 10
    assert "llm.batch.rounds (2) batches failed them" in result.flat
    assert_site_complete(project, 10)
