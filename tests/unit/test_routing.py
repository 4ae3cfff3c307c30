"""llm.routing: model names and aliases to targets, fallback chains, providers to endpoints."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from trinity.llm.ratelimit import ApiKey, KeyLimits
from trinity.llm.routing import Router, parse_target
from trinity.llm.settings import DEFAULT_API_URLS, Endpoint, LLMSettings, Target

SECRET = "sk-routing-0123456789-SECRET"


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("openai:gpt-4o", Target("openai", "gpt-4o")),
        ("llama3.2", Target("ollama", "llama3.2")),
        ("unknown:model", Target("ollama", "unknown:model")),  # not a provider: a model name
        ("anthropic:", Target("anthropic", "")),  # the settings reader refuses this one
    ],
)
def test_parse_target(name: str, target: Target) -> None:
    assert parse_target(name, "ollama") == target


def routed() -> Router:
    return Router(
        LLMSettings(
            provider="openai",
            api_url="http://main.test",
            api_key=SECRET,
            limits=KeyLimits(rpm=10),
            aliases=MappingProxyType({"writer": Target("anthropic", "claude")}),
            fallbacks=MappingProxyType({"writer": ("writer", "ollama:llama3.2", "gpt-4o")}),
            endpoints=MappingProxyType({"anthropic": Endpoint("anthropic", "http://a.test")}),
        )
    )


def test_an_alias_wins_and_a_chain_has_no_repeats() -> None:
    router = routed()
    assert router.target("writer") == Target("anthropic", "claude")
    assert router.target("gpt-4o") == Target("openai", "gpt-4o")
    assert [str(t) for t in router.chain("writer")] == [
        "anthropic:claude",
        "ollama:llama3.2",
        "openai:gpt-4o",
    ]
    assert router.chain("gpt-4o") == [Target("openai", "gpt-4o")]


def test_endpoints_of_the_main_provider_the_settings_and_the_defaults() -> None:
    router = routed()
    main = router.endpoint("openai")
    assert (main.api_url, main.limits) == ("http://main.test", KeyLimits(rpm=10))
    assert main.keys == (ApiKey("LLM_API_KEY", SECRET, KeyLimits(rpm=10)),)
    assert SECRET not in repr(main)
    assert router.endpoint("anthropic") == Endpoint("anthropic", "http://a.test")
    assert router.endpoint("ollama") == Endpoint("ollama", DEFAULT_API_URLS["ollama"])
