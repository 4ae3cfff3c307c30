"""Routing: which provider, server and keys answer a model name asked for.

A name is an alias from `llm.aliases`, `provider:model`, or a model of the main provider;
`llm.fallbacks` lists who answers, in order, when it fails. The settings reader checks
aliases and fallbacks with the same `parse_target` the client uses at run time.
"""

from __future__ import annotations

from trinity.llm.ratelimit import ApiKey
from trinity.llm.settings import DEFAULT_API_URLS, PROVIDERS, Endpoint, LLMSettings, Target


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


__all__ = ["Router", "parse_target"]
