"""`cache.semantic` in settings.yaml: its defaults (the site's own provider as embedder),
its bounds, its key from the environment only, and `--no-semantic` over it all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trinity.config import load_build_settings, load_settings
from trinity.errors import ConfigError
from trinity.llm.settings import SEMANTIC_THRESHOLD, EmbedderSettings

WriteSettings = Callable[[str], Path]
SECRET = "sk-embed-0123456789-SECRET"


def settings_text(llm: str, semantic: str = "") -> str:
    cache = f"cache:\n  semantic:\n{semantic}" if semantic else ""
    return f"site: {{title: T}}\nllm:\n{llm}\n{cache}"


def test_off_by_default_with_the_sites_provider_as_embedder(
    write_settings: WriteSettings,
) -> None:
    project = write_settings(settings_text("  provider: ollama\n  api_url: http://h:1"))
    semantic = load_settings(project, environ={}).llm.semantic
    assert not semantic.enabled and not semantic.off
    assert semantic.threshold == SEMANTIC_THRESHOLD
    assert semantic.embedder == EmbedderSettings(
        provider="ollama", model="nomic-embed-text", api_url="http://h:1"
    )


def test_the_embedder_named_and_its_key_from_the_environment(
    write_settings: WriteSettings,
) -> None:
    project = write_settings(
        settings_text(
            "  provider: ollama",
            "    enabled: true\n    threshold: 0.97\n"
            "    embedder: {provider: openai, model: e-3, api_url: 'http://e:2/'}",
        )
    )
    settings = load_settings(project, environ={"EMBEDDINGS_API_KEY": SECRET})
    embedder = settings.llm.semantic.embedder
    assert embedder is not None
    assert (embedder.provider, embedder.model, embedder.api_url) == ("openai", "e-3", "http://e:2")
    assert embedder.api_key == SECRET
    assert SECRET in settings.secrets()  # masked in logs
    assert SECRET not in repr(settings)
    assert settings.llm.semantic.threshold == 0.97


def test_the_llms_key_serves_its_own_providers_embeddings(write_settings: WriteSettings) -> None:
    project = write_settings(settings_text("  provider: openai"))
    embedder = load_settings(project, environ={"LLM_API_KEY": SECRET}).llm.semantic.embedder
    assert embedder is not None and embedder.api_key == SECRET
    assert embedder.model == "text-embedding-3-small"


def test_a_local_embedder_has_no_server(write_settings: WriteSettings) -> None:
    project = write_settings(
        settings_text("  provider: openai", "    embedder: {provider: local, api_url: 'http://x'}")
    )
    embedder = load_settings(project, environ={}).llm.semantic.embedder
    assert embedder is not None and (embedder.provider, embedder.api_url) == ("local", "")


@pytest.mark.parametrize(
    ("semantic", "key", "words"),
    [
        ("    threshold: 0.79", "cache.semantic.threshold", "at least 0.8"),
        ("    threshold: 1.5", "cache.semantic.threshold", "at most 1"),
        ("    enabled: yes please", "cache.semantic.enabled", "true or false"),
        ("    embedder: {provider: cohere}", "cache.semantic.embedder.provider", "one of"),
        ("    embedder: {model: ''}", "cache.semantic.embedder.model", "empty"),
        ("    embedder: {api_url: 'localhost'}", "cache.semantic.embedder.api_url", "http"),
        ("    embedder: {timeout: 0}", "cache.semantic.embedder.timeout", "at least"),
        ("    embedder: {modle: x}", "cache.semantic.embedder.modle", "did you mean"),
        (f"    embedder: {{api_key: {SECRET}}}", "cache.semantic.embedder.api_key", "environment"),
    ],
)
def test_bad_semantic_settings_name_the_key(
    write_settings: WriteSettings, semantic: str, key: str, words: str
) -> None:
    project = write_settings(settings_text("  provider: openai", semantic))
    with pytest.raises(ConfigError) as caught:
        load_settings(project, environ={})
    message = str(caught.value)
    assert key in message and "settings.yaml" in message and words in message
    assert SECRET not in message


def test_an_anthropic_site_has_no_default_embedder(write_settings: WriteSettings) -> None:
    project = write_settings(settings_text("  provider: anthropic"))
    assert load_settings(project, environ={}).llm.semantic.embedder is None
    enabled = write_settings(settings_text("  provider: anthropic", "    enabled: true"))
    with pytest.raises(ConfigError, match=r"cache\.semantic\.enabled"):
        load_settings(enabled, environ={})


def test_no_semantic_turns_it_off_for_the_run(write_settings: WriteSettings) -> None:
    project = write_settings(settings_text("  provider: openai", "    enabled: true"))
    assert not load_build_settings(project, environ={}).llm.semantic.off
    assert load_build_settings(project, semantic=False, environ={}).llm.semantic.off
