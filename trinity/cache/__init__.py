"""The answer cache: memory, then Redis, then disk, keyed by everything that matters."""

from trinity.cache.manager import CacheManager

__all__ = ["CacheManager"]
