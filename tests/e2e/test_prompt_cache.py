"""Prompt caching end to end: every block's request starts with what all blocks share (the
theme's voice), the fake server's prompt cache serves that start in OpenAI's and
Anthropic's usage formats, and the build report prices it at its own rates and shows the
saving."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.sitekit import MODEL, SiteProject

# USD per million tokens: reading the cache costs a tenth, writing it a quarter more.
PRICES = {MODEL: {"input": 1.0, "output": 2.0, "cached_input": 0.1, "cache_write": 1.25}}
KEYS = {"OPENAI_API_KEY": "sk-test-prompt-cache", "ANTHROPIC_API_KEY": "sk-ant-prompt-cache"}


def built(
    make_site_project: Callable[..., SiteProject], provider: str, **llm: Any
) -> tuple[SiteProject, str]:
    """A project built once against a fake server with a prompt cache; what it printed."""
    project = make_site_project(provider=provider)
    project.server.prompt_cache = True
    project.update_settings("llm", prices=PRICES, **llm)
    result = project.build("--metrics-file", project.root / "build.prom", env=KEYS)
    assert result.exit_code == 0, result.describe()
    return project, result.output


def expected_cost(totals: dict[str, Any]) -> float:
    read, written = totals["cached_input_tokens"], totals["cache_write_tokens"]
    plain = totals["input_tokens"] - read - written
    return (plain * 1.0 + read * 0.1 + written * 1.25 + totals["output_tokens"] * 2.0) / 1e6


def voice_words(project: SiteProject) -> int:
    """Words (the fake's tokens) of the voice every request starts with."""
    voices = {_system_text(r.body).split("\n\n")[0] for r in project.server.chat_requests}
    (voice,) = voices
    return len(voice.split())


def tokens_metric(text: str, direction: str) -> float:
    """trinity_llm_tokens_total of one direction, from a metrics file."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "trinity_llm_tokens_total" and sample.labels["direction"] == direction
    )


def _system_text(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, list):
        return "".join(block["text"] for block in system)
    if isinstance(system, str):
        return system
    return str(body["messages"][0]["content"])


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_the_shared_start_is_read_from_the_prompt_cache_and_priced_at_its_rate(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project, printed = built(make_site_project, provider)
    totals = project.report()["totals"]
    calls, words = project.server.chat_count, voice_words(project)

    # The first request wrote the voice to the cache (OpenAI charges nothing for it and
    # says nothing), every later one read it.
    assert totals["cached_input_tokens"] == words * (calls - 1)
    assert totals["cache_write_tokens"] == (words if provider == "anthropic" else 0)
    assert totals["cost_usd"] == pytest.approx(expected_cost(totals), abs=1e-6)
    saving = (totals["cached_input_tokens"] * 0.9 - totals["cache_write_tokens"] * 0.25) / 1e6
    assert totals["prompt_cache_saved_usd"] == pytest.approx(saving, abs=1e-6)
    assert totals["prompt_cache_saved_usd"] > 0
    assert f"prompt cache saved ${totals['prompt_cache_saved_usd']:.4f}" in printed
    assert f"({totals['cached_input_tokens']} in from the prompt cache)" in printed
    metrics = (project.root / "build.prom").read_text(encoding="utf-8")
    for direction in ("cached_input", "cache_write"):
        assert tokens_metric(metrics, direction) == totals[f"{direction}_tokens"]


def test_anthropic_requests_mark_the_voice_for_the_cache(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project, _ = built(make_site_project, "anthropic")

    for request in project.server.chat_requests:
        head = request.body["system"][0]
        assert head["cache_control"] == {"type": "ephemeral"}
        assert head["text"] == _system_text(request.body).split("\n\n")[0]


def test_with_prompt_caching_off_nothing_is_marked_or_cached(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project, printed = built(make_site_project, "anthropic", prompt_cache=False)
    totals = project.report()["totals"]

    assert all(isinstance(r.body["system"], str) for r in project.server.chat_requests)
    assert totals["cached_input_tokens"] == totals["cache_write_tokens"] == 0
    assert totals["prompt_cache_saved_usd"] == 0
    assert "prompt cache" not in printed


def test_a_rebuild_from_trinitys_cache_counts_no_prompt_cache(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project, _ = built(make_site_project, "openai")
    assert project.build(env=KEYS).exit_code == 0

    totals = project.report()["totals"]
    assert totals["llm_calls"] == 0
    assert totals["cached_input_tokens"] == totals["prompt_cache_saved_usd"] == 0
