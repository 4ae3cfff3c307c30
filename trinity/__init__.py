"""Trinity: build static sites whose content is written by an LLM, cached and themed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trinity.version import __version__

if TYPE_CHECKING:
    from trinity.build import build_site
    from trinity.cache.manager import CacheManager
    from trinity.errors import CircuitBreakerOpen
    from trinity.llm.breaker import CircuitBreaker
    from trinity.llm.client import AsyncLLMClient
    from trinity.logs import get_logger

# Imported on first use, so `trinity --version` does not pay for httpx, jinja2 and friends.
_LAZY = {
    "AsyncLLMClient": "trinity.llm.client",
    "CacheManager": "trinity.cache.manager",
    "CircuitBreaker": "trinity.llm.breaker",
    "CircuitBreakerOpen": "trinity.errors",
    "build_site": "trinity.build",
    "get_logger": "trinity.logs",
}

__all__ = [
    "AsyncLLMClient",
    "CacheManager",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "__version__",
    "build_site",
    "get_logger",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trinity' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
