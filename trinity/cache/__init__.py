"""The answer cache: memory, then Redis, then disk, keyed by everything that matters.

Nothing is imported here: settings are read (trinity.cache.settings) by every command,
the tiers (trinity.cache.manager) only by those that open the cache.
"""
