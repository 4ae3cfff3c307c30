"""An answer cut off at max_tokens, from any chat provider, through a real build: the page
shows it trimmed to where it last made sense (its last complete sentence: the `complete`
check, on by default, repairs what the cut left unfinished), and the cache keeps what the
model said."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.sitekit import SiteProject
from trinity import build_site
from trinity.answers import block_value
from trinity.cache.disk import DiskTier
from trinity.llm.client import AsyncLLMClient
from trinity.plan import plan_jobs
from trinity.project import prepare
from trinity.site import Block

# The example's Harbor Metrics "What I learned" answer as max_tokens left it.
CUT_OFF = (
    "Building Harbor Metrics taught me three things:\n\n"
    "1. Metrics nobody reads are noise.\n"
    "2. Alerts need an owner, and finding one will take\n"
    "3."
)
# Neither the dangling "3." nor the unfinished second item is published.
TRIMMED = "Building Harbor Metrics taught me three things:\n\n1. Metrics nobody reads are noise."
PROMPT = "What did building Harbor Metrics teach you?"


def cut_off_site(
    make_site_project: Callable[..., SiteProject], provider: str, block_format: str
) -> SiteProject:
    """A one-page site whose one block the fake server answers with CUT_OFF, cut off."""
    site = make_site_project(provider=provider)
    data = site.pages()
    block = {"format": block_format, "prompt": PROMPT}
    data["pages"] = [{"slug": "about", "title": "About", "blocks": {"lessons": block}}]
    site.write_pages(data)
    # A "truncated" fault answers the first half of the scripted text, finish reason "length".
    site.server.script("Harbor Metrics", CUT_OFF + "x" * len(CUT_OFF))
    site.server.fail_next(1, kind="truncated")
    return site


def cached_entry(site: SiteProject, environ: dict[str, str]) -> dict[str, object]:
    project = prepare(site.root, environ=environ)
    (job,) = plan_jobs(project, AsyncLLMClient(project.settings.llm))
    disk = DiskTier(project.settings.cache.disk.directory)
    try:
        entry = disk.get(job.key)
    finally:
        disk.close()
    assert isinstance(entry, dict)
    return entry


@pytest.mark.parametrize("block_format", ["markdown", "text"])
@pytest.mark.parametrize("provider", ["ollama", "openai", "anthropic"])
def test_a_cut_off_answer_is_published_trimmed_and_cached_as_it_came(
    make_site_project: Callable[..., SiteProject], provider: str, block_format: str
) -> None:
    site = cut_off_site(make_site_project, provider, block_format)
    environ = {"ANTHROPIC_API_KEY": "sk-ant-test"} if provider == "anthropic" else {}
    shown = Block(name="lessons", prompt=PROMPT, format=block_format)

    report = build_site(site.root, environ=environ)

    page = site.html("about/index.html")
    assert str(block_value(shown, TRIMMED)) in page
    assert "finding one will take" not in page
    (lessons,) = report.blocks
    assert (lessons.repairs, lessons.reasks, lessons.failed_checks) == (["trim"], 0, [])
    assert str(block_value(shown, CUT_OFF)) not in page
    entry = cached_entry(site, environ)
    assert (entry["text"], entry["finish_reason"]) == (CUT_OFF, "length")

    again = build_site(site.root, environ=environ)

    assert (again.llm_calls, again.cache_hits) == (0, 1)
    assert site.html("about/index.html") == page
