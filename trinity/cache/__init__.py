"""The answer cache: a memory tier in front of a disk tier, keyed by everything that matters."""

from trinity.cache.manager import CacheManager

__all__ = ["CacheManager"]
