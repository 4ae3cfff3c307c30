"""`trinity build` end to end: the example project against the fake LLM server."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html import escape
from pathlib import Path

import pytest
import yaml

from tests.e2e.sitekit import (
    BLOCKS,
    BUILTIN_THEMES,
    PAGES,
    RunResult,
    SiteProject,
    check_links,
    highlights_for,
    snapshot,
)
from tests.fakellm import OLLAMA_CHAT_PATH, OPENAI_CHAT_PATH
from trinity.manifest import MANIFEST_FILE

REPORT = ".trinity/report.json"


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def assert_site_built(
    project: SiteProject, output: Path | None = None, theme: str = "minimal"
) -> None:
    """The whole tree is there, every page holds its generated text, every link resolves."""
    out = output or project.output
    for page_file in project.page_files():
        assert (out / page_file).is_file(), page_file
    assert (out / "static" / "style.css").is_file()
    assert (out / REPORT).is_file()
    html_files = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    assert html_files == set(project.page_files())

    expected = project.expected_digests(theme)
    assert sorted(expected) == sorted(project.page_files())
    for page_file, digests in expected.items():
        html = project.html(page_file, out)
        for digest in digests:
            assert f"Generated answer {digest}." in html, (page_file, digest)
    for item, slug in zip(project.items, project.item_slugs, strict=True):
        html = project.html(f"projects/{slug}/index.html", out)
        assert f"<h1>{escape(item['name'])}</h1>" in html
        for highlight in highlights_for(item["name"]):
            assert escape(highlight) in html, (slug, highlight)

    links = check_links(out)
    assert links.broken == []
    # Every page links at least to the home page, the stylesheet and the nav pages.
    assert links.checked >= PAGES * 4


def site_without_report(folder: Path) -> dict[str, bytes]:
    files = snapshot(folder)
    del files[REPORT]
    return files


def test_build_writes_the_whole_site_and_rebuilds_from_cache(site_project: SiteProject) -> None:
    server = site_project.server

    first = site_project.build()

    assert_ok(first)
    assert f"Built {PAGES} pages into {site_project.output} ({BLOCKS} model calls)" in first.flat
    assert server.chat_count == BLOCKS
    assert {r.path for r in server.chat_requests} == {OLLAMA_CHAT_PATH}
    assert_site_built(site_project)
    assert not (site_project.output / "sitemap.xml").exists()
    assert not (site_project.output / "robots.txt").exists()
    report = site_project.report()
    assert report["pages"] == PAGES
    assert report["theme"] == "minimal"
    assert report["provider"] == "ollama"
    assert report["totals"] == {
        "blocks": BLOCKS,
        "llm_calls": BLOCKS,
        "cache_hits": 0,
        "cache_hits_by_tier": {},
        "semantic_hits": 0,
        "failed": 0,
        "stale": 0,
        "batched": 0,
        "attempts": BLOCKS,
        "input_tokens": report["totals"]["input_tokens"],
        "output_tokens": report["totals"]["output_tokens"],
        # Ollama reports no prompt cache.
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": 0.0,  # Ollama is free
        "saved_usd": 0.0,
        "prompt_cache_saved_usd": 0.0,
        "embedding_cost_usd": 0.0,  # no semantic cache
        # The example's answers pass its checks as they come.
        "checks_failed": 0,
        "repaired": 0,
        "reasked": 0,
        "escalated": 0,
        "judged": 0,
    }
    assert report["totals"]["input_tokens"] > 0
    assert report["totals"]["output_tokens"] > 0
    built_once = site_without_report(site_project.output)

    second = site_project.build()

    assert_ok(second)
    assert server.chat_count == BLOCKS, "the second build must not call the model"
    assert (
        f"Nothing changed: {PAGES} pages in {site_project.output} up to date, no model call made"
    ) in second.flat
    assert "Built" not in second.output
    report = site_project.report()
    assert report["totals"]["llm_calls"] == 0
    # Nothing changed: the site is kept as it is, its pages and the cache unread.
    assert report["totals"]["cache_hits_by_tier"] == {"kept": BLOCKS}
    assert report["cache"] == {}
    assert site_without_report(site_project.output) == built_once

    # Without the record of the last build, every page is made again from the cache.
    (site_project.output / MANIFEST_FILE).unlink()
    third = site_project.build()

    assert_ok(third)
    assert server.chat_count == BLOCKS, "the third build must not call the model"
    report = site_project.report()
    assert report["totals"]["llm_calls"] == 0
    assert report["totals"]["cache_hits"] == BLOCKS
    assert report["totals"]["cache_hits_by_tier"] == {"disk": BLOCKS}
    assert report["cache"] == {
        "lookups": BLOCKS,
        "misses": 0,
        "hits": {"memory": 0, "disk": BLOCKS},
    }
    assert {b["source"] for b in report["blocks"]} == {"cache"}
    assert site_without_report(site_project.output) == built_once
    assert site_project.leftovers() == []


def test_build_as_a_subprocess(site_project: SiteProject) -> None:
    server = site_project.server

    first = site_project.run("build", "--project", site_project.root)

    assert_ok(first)
    assert server.chat_count == BLOCKS
    assert_site_built(site_project)

    (site_project.output / MANIFEST_FILE).unlink()  # so that every page is made again
    second = site_project.run("build", "--project", site_project.root)

    assert_ok(second)
    assert server.chat_count == BLOCKS
    report = site_project.report()
    assert report["totals"]["cache_hits"] == BLOCKS
    # A new process starts with an empty memory tier: every hit comes from disk.
    assert {b["cache_tier"] for b in report["blocks"]} == {"disk"}
    assert site_project.leftovers() == []


def test_build_over_the_openai_protocol(openai_site_project: SiteProject) -> None:
    project = openai_site_project
    secret = "sk-e2e-not-a-real-key-0123456789"

    result = project.build(env={"OPENAI_API_KEY": secret})

    assert_ok(result)
    requests = project.server.chat_requests
    assert len(requests) == BLOCKS
    assert {r.path for r in requests} == {OPENAI_CHAT_PATH}
    assert {r.headers.get("authorization") for r in requests} == {f"Bearer {secret}"}
    formats = [r.body.get("response_format") for r in requests]
    json_formats = [f for f in formats if f is not None]
    assert len(json_formats) == len(project.items)
    assert {f["type"] for f in json_formats} == {"json_schema"}
    assert_site_built(project)
    assert project.report()["provider"] == "openai"
    # The key reaches the server and nothing else: not the site, not the cache.
    for folder in (project.output, project.root / ".cache"):
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.output


def _system_messages(project: SiteProject, start: int = 0) -> set[str]:
    systems = set()
    for request in project.server.chat_requests[start:]:
        for message in request.body["messages"]:
            if message["role"] == "system":
                systems.add(message["content"])
    return systems


def _voice(theme: str) -> str:
    meta = yaml.safe_load((BUILTIN_THEMES / theme / "theme.yaml").read_text("utf-8"))
    voice = meta["voice"]
    assert isinstance(voice, str)
    return voice.strip()


def test_theme_switch_changes_html_css_and_prompts(site_project: SiteProject) -> None:
    server = site_project.server
    assert_ok(site_project.build())
    assert _system_messages(site_project) == {_voice("minimal")}
    minimal = site_without_report(site_project.output)

    brutal = site_project.build("--theme", "brutalist")

    assert_ok(brutal)
    assert server.chat_count == 2 * BLOCKS, "a theme's voice makes new prompts"
    assert _system_messages(site_project, start=BLOCKS) == {_voice("brutalist")}
    assert site_project.report()["theme"] == "brutalist"
    assert_site_built(site_project, theme="brutalist")
    brutalist = site_without_report(site_project.output)
    assert brutalist.keys() == minimal.keys()
    assert brutalist["static/style.css"] != minimal["static/style.css"]
    for page_file in site_project.page_files():
        assert brutalist[page_file] != minimal[page_file], page_file

    back = site_project.build()

    assert_ok(back)
    assert server.chat_count == 2 * BLOCKS, "minimal's answers are still cached"
    assert site_without_report(site_project.output) == minimal

    again = site_project.build("-t", "brutalist")

    assert_ok(again)
    assert server.chat_count == 2 * BLOCKS, "brutalist's answers are cached separately"
    assert site_without_report(site_project.output) == brutalist


def test_theme_from_settings(site_project: SiteProject) -> None:
    site_project.update_settings("build", theme="brutalist")

    assert_ok(site_project.build())

    assert site_project.report()["theme"] == "brutalist"
    assert _system_messages(site_project) == {_voice("brutalist")}
    assert_site_built(site_project, theme="brutalist")


@pytest.mark.parametrize("base_url", ["https://example.com/", "https://example.com/mara"])
def test_sitemap_and_robots_only_with_a_base_url(site_project: SiteProject, base_url: str) -> None:
    site_project.update_settings("site", base_url=base_url)
    root = base_url.rstrip("/") + "/"

    assert_ok(site_project.build())

    sitemap = ET.fromstring((site_project.output / "sitemap.xml").read_bytes())
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    listed = [loc.text or "" for loc in sitemap.findall("s:url/s:loc", namespace)]
    expected = [root, f"{root}about/", *(f"{root}projects/{s}/" for s in site_project.item_slugs)]
    assert sorted(listed) == sorted(expected)
    robots = (site_project.output / "robots.txt").read_text("utf-8")
    assert f"Sitemap: {root}sitemap.xml" in robots.splitlines()
    about = site_project.html("about/index.html")
    assert f'<link rel="canonical" href="{root}about/">' in about
    assert check_links(site_project.output).broken == []

    # Without the base URL the next build drops both files (and makes no requests).
    site_project.update_settings("site", base_url=None)
    assert_ok(site_project.build())
    assert not (site_project.output / "sitemap.xml").exists()
    assert not (site_project.output / "robots.txt").exists()
    assert site_project.server.chat_count == BLOCKS
