"""Provider adapters: each translates requests, responses and usage for one wire format."""

from __future__ import annotations

from trinity.llm.providers.anthropic import AnthropicAdapter
from trinity.llm.providers.base import ProviderAdapter
from trinity.llm.providers.ollama import OllamaAdapter
from trinity.llm.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    "anthropic": AnthropicAdapter,
    "ollama": OllamaAdapter,
    "openai": OpenAIAdapter,
}


def get_adapter(provider: str) -> ProviderAdapter:
    """The adapter for a provider name that settings have already validated."""
    return ADAPTERS[provider]()


__all__ = [
    "ADAPTERS",
    "AnthropicAdapter",
    "OllamaAdapter",
    "OpenAIAdapter",
    "ProviderAdapter",
    "get_adapter",
]
