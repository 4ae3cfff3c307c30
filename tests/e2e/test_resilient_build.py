"""`trinity build` when models fail, cost money or need keys: stale answers, --keep-going,
--max-cost, the Anthropic protocol, and API keys that must never be written anywhere."""

from __future__ import annotations

import json
import logging
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest

import trinity.llm.answercache
from tests.e2e.sitekit import BLOCKS, MODEL, RunResult, SiteProject, snapshot
from tests.fakellm import ANTHROPIC_CHAT_PATH

PLACEHOLDER = "not available yet"


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def assert_answered(project: SiteProject, *, except_pages: tuple[str, ...] = ()) -> None:
    for page, digests in project.expected_digests().items():
        html = project.html(page)
        for digest in digests:
            assert f"Generated answer {digest}." in html, page
        if page not in except_pages:
            assert PLACEHOLDER not in html, page


def html_pages(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in snapshot(folder).items() if name.endswith(".html")}


# --------------------------------------------------------------------------- stale answers


def test_expired_answers_are_served_when_the_model_fails(
    site_project: SiteProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = site_project.server
    site_project.update_settings("cache", ttl=1)
    assert_ok(site_project.build())
    pages = html_pages(site_project.output)
    # An hour later (for the client's freshness check only), the server fails every request.
    later = types.SimpleNamespace(
        time=lambda: time.time() + 3600, monotonic=time.monotonic, perf_counter=time.perf_counter
    )
    monkeypatch.setattr(trinity.llm.answercache, "time", later)
    server.fail_rate(1.0, statuses=(500,))
    asked = server.chat_count

    result = site_project.build()

    assert_ok(result)
    assert server.chat_count > asked, "expired answers are not used before asking the model"
    assert server.answered_count == BLOCKS
    totals = site_project.report()["totals"]
    assert (totals["stale"], totals["llm_calls"], totals["cache_hits"], totals["failed"]) == (
        BLOCKS,
        0,
        0,
        0,
    )
    stale_lines = [line for line in result.stderr.splitlines() if line.startswith("Stale: ")]
    assert len(stale_lines) == BLOCKS, result.describe()
    assert all("served the last good answer" in line for line in stale_lines)
    assert "stale answers 15" in result.flat
    assert html_pages(site_project.output) == pages


def test_fresh_answers_are_not_stale(site_project: SiteProject) -> None:
    site_project.update_settings("cache", ttl=3600)
    assert_ok(site_project.build())
    site_project.server.fail_rate(1.0, statuses=(500,))

    result = site_project.build()

    assert_ok(result)
    assert "Stale" not in result.output
    totals = site_project.report()["totals"]
    assert (totals["stale"], totals["cache_hits"]) == (0, BLOCKS)
    assert site_project.server.chat_count == BLOCKS


# --------------------------------------------------------------------------- --keep-going


def test_keep_going_writes_the_site_with_a_placeholder(site_project: SiteProject) -> None:
    server = site_project.server
    site_project.rescript_highlights({"Lumen": "These are not the highlights you want."})

    result = site_project.build("--keep-going")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "projects/lumen: highlights" in result.stderr
    assert "written with placeholders" in result.flat
    assert f"1 of {BLOCKS} blocks could not be generated" in result.flat
    lumen = "projects/lumen/index.html"
    assert PLACEHOLDER in site_project.html(lumen)
    assert_answered(site_project, except_pages=(lumen,))  # Lumen's text blocks are there
    totals = site_project.report()["totals"]
    assert (totals["failed"], totals["llm_calls"]) == (1, BLOCKS - 1)
    (failed,) = [b for b in site_project.report()["blocks"] if b["source"] == "failed"]
    assert (failed["page"], failed["block"]) == ("projects/lumen", "highlights")
    assert "not valid JSON" in failed["error"]
    assert site_project.leftovers() == []

    site_project.rescript_highlights()

    fixed = site_project.build()

    assert_ok(fixed)
    assert server.chat_count == BLOCKS + 1, "only the failed block is asked again"
    assert_answered(site_project)


def test_without_keep_going_a_failed_block_writes_nothing(site_project: SiteProject) -> None:
    site_project.server.fail_next(1, 400)

    result = site_project.build()

    assert result.exit_code == 1, result.describe()
    assert not site_project.output.exists()


# --------------------------------------------------------------------------- --max-cost

PRICES = {MODEL: {"input": 1.0, "output": 2.0}}  # USD per million tokens


@pytest.fixture
def priced(openai_site_project: SiteProject) -> SiteProject:
    openai_site_project.update_settings("llm", prices=PRICES)
    return openai_site_project


def test_max_cost_refuses_calls_over_the_budget(priced: SiteProject) -> None:
    result = priced.build("--max-cost", "0.000001")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "cost budget of $0.0000 would be exceeded" in result.flat
    assert f"{BLOCKS} of {BLOCKS} blocks could not be generated" in result.flat
    assert priced.server.chat_count == 0, "a request is priced before it is sent"
    assert not priced.output.exists()


def test_a_generous_max_cost_builds_and_counts_the_cost(priced: SiteProject) -> None:
    result = priced.build("--max-cost", "5")

    assert_ok(result)
    totals = priced.report()["totals"]
    expected = (totals["input_tokens"] * 1.0 + totals["output_tokens"] * 2.0) / 1_000_000
    assert totals["cost_usd"] > 0
    assert totals["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert totals["saved_usd"] == 0
    assert f"cost ${totals['cost_usd']:.4f}" in result.flat

    again = priced.build("--max-cost", "0.000001")  # cache hits cost nothing

    assert_ok(again)
    rebuilt = priced.report()["totals"]
    assert (rebuilt["cache_hits"], rebuilt["cost_usd"]) == (BLOCKS, 0)
    assert rebuilt["saved_usd"] == pytest.approx(totals["cost_usd"], abs=1e-6)
    assert rebuilt["saved_usd"] > 0
    assert priced.server.chat_count == BLOCKS


def test_max_cost_in_settings(priced: SiteProject) -> None:
    priced.update_settings("llm", max_cost=0.000001)

    refused = priced.build()
    allowed = priced.build("--max-cost", "5")  # the command line wins

    assert refused.exit_code == 1, refused.describe()
    assert "cost budget" in refused.flat
    assert_ok(allowed)


# --------------------------------------------------------------------------- anthropic


def test_anthropic_messages_api_end_to_end(make_site_project: Callable[..., SiteProject]) -> None:
    project = make_site_project(provider="anthropic")
    key = "sk-ant-test-0123456789"

    result = project.build(env={"ANTHROPIC_API_KEY": key})

    assert_ok(result)
    requests = project.server.chat_requests
    assert len(requests) == BLOCKS
    for request in requests:
        assert request.path == ANTHROPIC_CHAT_PATH
        assert request.headers["x-api-key"] == key
        assert request.headers["anthropic-version"]
        assert "authorization" not in request.headers
        assert request.body["model"] == MODEL
        assert isinstance(request.body["max_tokens"], int)
        assert {m["role"] for m in request.body["messages"]} == {"user"}
    assert_answered(project)
    tidewater = project.html("projects/tidewater/index.html")
    assert "Tidewater highlight two" in tidewater  # the json block, through the instruction
    assert project.report()["provider"] == "anthropic"

    assert_ok(project.build(env={"ANTHROPIC_API_KEY": key}))
    assert project.server.chat_count == BLOCKS


# --------------------------------------------------------------------------- secrets

SECRETS = {
    "LLM_API_KEY": "sk-live-LLMKEY-5f1d0c9e7b",
    "SECRET_KEY_ONE": "sk-live-POOLONE-8a2b3c4d5e",
    "SECRET_KEY_TWO": "sk-live-POOLTWO-9f8e7d6c5b",
}


def echo(secret: str) -> dict[str, object]:
    """An error body that repeats the key, as some servers do."""
    return {"error": {"message": f"Incorrect API key provided: {secret}.", "code": "bad_key"}}


def files_containing(folder: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [name for name, data in snapshot(folder).items() if needle in data]


@pytest.mark.parametrize("source", ["LLM_API_KEY", "api_keys"])
def test_api_keys_are_never_written_or_shown(
    openai_site_project: SiteProject, caplog: pytest.LogCaptureFixture, source: str
) -> None:
    project = openai_site_project
    server = project.server
    if source == "api_keys":
        project.update_settings(
            "llm", api_keys=[{"env": "SECRET_KEY_ONE"}, {"env": "SECRET_KEY_TWO"}]
        )
        first, second = SECRETS["SECRET_KEY_ONE"], SECRETS["SECRET_KEY_TWO"]
    else:
        first = second = SECRETS["LLM_API_KEY"]
    # One request at a time, keys taken in turn: the first request goes with `first` and
    # is refused (401, not retried); the second goes with `second`, fails with 500 and is
    # retried (and logged). Both error bodies echo the key they came with.
    server.fail_next(1, 401, body=echo(first))
    server.fail_next(1, 500, body=echo(second))
    caplog.set_level(logging.DEBUG)

    result = project.build("--keep-going", "--concurrency", "1", env=SECRETS)

    assert result.exit_code == 1, result.describe()
    assert "HTTP 401" in result.flat
    assert "Incorrect API key provided: ***" in result.flat, "the server's words, redacted"
    sent = {r.headers["authorization"] for r in server.chat_requests}
    assert {f"Bearer {first}", f"Bearer {second}"} <= sent, "the keys were really used"
    assert any("retrying" in r.getMessage() for r in caplog.records)
    report = (project.output / ".trinity" / "report.json").read_text("utf-8")
    assert "***" in report
    for secret in SECRETS.values():
        assert secret not in result.output
        assert secret not in report
        assert files_containing(project.output, secret) == []
        assert files_containing(project.root / ".cache", secret) == []
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in record.getMessage()
            assert secret not in repr(record.args)
    assert json.loads(report)["totals"]["failed"] == 1
