"""Routing: which provider, server and keys answer a model name asked for.

A name is an alias from `llm.aliases`, `provider:model`, or a model of the main provider;
`llm.fallbacks` lists who answers, in order, when it fails. The settings reader checks
aliases and fallbacks with the same `parse_target` the client uses at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trinity.llm.ratelimit import NO_LIMITS, ApiKey, KeyLimits
from trinity.urls import shown_url

if TYPE_CHECKING:
    from trinity.llm.settings import LLMSettings

PROVIDERS = ("local", "ollama", "openai", "anthropic")
# Providers reached over HTTP; `local` runs the model in a worker process of its own.
HTTP_PROVIDERS = ("ollama", "openai", "anthropic")

DEFAULT_API_URLS = {
    "local": "",
    "ollama": "http://localhost:11434",
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
}


@dataclass(frozen=True)
class Target:
    """A model to ask: which provider, and the model's own name there."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Endpoint:
    """Where one provider is reached: its server and the keys to use there."""

    provider: str
    api_url: str
    keys: tuple[ApiKey, ...] = ()
    limits: KeyLimits = NO_LIMITS  # for a server without keys

    @property
    def name(self) -> str:
        return f"{self.provider} {shown_url(self.api_url)}".strip()


def parse_target(name: str, provider: str) -> Target:
    """'provider:model' for a known provider, else a model of `provider` (the main one).

    The model is empty for 'openai:', which the settings reader refuses.
    """
    prefix, sep, model = name.partition(":")
    if sep and prefix in PROVIDERS:
        return Target(prefix, model)
    return Target(provider, name)


class Router:
    """Model names to targets, and providers to endpoints, as the LLM settings say."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings

    def target(self, name: str) -> Target:
        """What a model name asked for means: an alias, 'provider:model', or a model here."""
        if name in self.settings.aliases:
            return self.settings.aliases[name]
        return parse_target(name, self.settings.provider)

    def chain(self, name: str) -> list[Target]:
        """The model asked for, then its fallbacks, in order, without repeats."""
        targets: list[Target] = []
        for candidate in (name, *self.settings.fallbacks.get(name, ())):
            target = self.target(candidate)
            if target not in targets:
                targets.append(target)
        return targets

    def endpoint(self, provider: str) -> Endpoint:
        """The server and keys for a provider: the main one, or from `llm.endpoints`."""
        s = self.settings
        if provider == s.provider:
            keys = s.keys or ((ApiKey("LLM_API_KEY", s.api_key, s.limits),) if s.api_key else ())
            return Endpoint(provider, s.api_url, keys, s.limits)
        if provider in s.endpoints:
            return s.endpoints[provider]
        return Endpoint(provider, DEFAULT_API_URLS[provider])


__all__ = [
    "DEFAULT_API_URLS",
    "HTTP_PROVIDERS",
    "PROVIDERS",
    "Endpoint",
    "Router",
    "Target",
    "parse_target",
]
