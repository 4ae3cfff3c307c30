"""The cache settings (`cache:` in config/settings.yaml): which tiers, and each tier's own.

Data only: `trinity.config` reads and checks them, `trinity.cache.manager` builds the tiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The tiers in lookup order. "filesystem" is accepted for "disk" (Trinity's first docs).
CACHE_TIERS = ("memory", "redis", "disk")
TIER_ALIASES = {"filesystem": "disk"}
REDIS_RETENTION = 30 * 24 * 3600  # a shared Redis should not fill up with old answers


@dataclass(frozen=True)
class MemoryTierSettings:
    max_entries: int = 10_000
    ttl: int | None = None


@dataclass(frozen=True)
class RedisTierSettings:
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = field(default=None, repr=False)
    prefix: str = "trinity:"
    # Seconds a call may take before Redis counts as gone for the rest of the run: long
    # enough that a busy machine's stalled moment does not end the rate limits builds
    # share there (a Redis that answers takes a millisecond), short enough that a frozen
    # one costs a build half a second, once.
    timeout: float = 0.5
    ttl: int | None = REDIS_RETENTION


@dataclass(frozen=True)
class DiskTierSettings:
    directory: Path = Path(".cache")
    max_size_mb: int = 1024
    ttl: int | None = None


@dataclass(frozen=True)
class CacheSettings:
    """`ttl` is how long an answer stays fresh (judged by the client, so an older answer
    can still be served when the model fails); a tier's own `ttl` is how long it keeps
    an entry at all."""

    enabled: bool = True
    ttl: int | None = None
    tiers: tuple[str, ...] = ("memory", "disk")
    memory: MemoryTierSettings = MemoryTierSettings()
    redis: RedisTierSettings = RedisTierSettings()
    disk: DiskTierSettings = DiskTierSettings()

    @property
    def directory(self) -> Path:
        return self.disk.directory


__all__ = [
    "CACHE_TIERS",
    "REDIS_RETENTION",
    "TIER_ALIASES",
    "CacheSettings",
    "DiskTierSettings",
    "MemoryTierSettings",
    "RedisTierSettings",
]
