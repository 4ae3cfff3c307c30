"""`trinity cache stats | clear | prune`: look at and tidy the cache a project uses.

Each works on the tiers the project's settings enable (Redis when CACHE_REDIS_HOST is
set, too). The memory tier lives only as long as a build, so these find it empty; its hit
rate, like the others', comes from the last build's report.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trinity.cache.generation import forget_generation
from trinity.cache.manager import open_tier
from trinity.cache.settings import CACHE_TIERS, TIER_ALIASES
from trinity.cache.tier import CacheTier, Keep
from trinity.cache.vectors import clear_disk_vectors
from trinity.config import Settings, load_settings
from trinity.errors import ConfigError
from trinity.llm.entries import is_current_key, read_entry
from trinity.lock import cache_lock
from trinity.messages import did_you_mean, one_line, shown_path
from trinity.report import REPORT_FILE


@dataclass(frozen=True)
class TierStatus:
    name: str
    location: str
    entries: int | None = None
    bytes: int | None = None
    # From the last build's report: lookups that reached this tier, and hits in it.
    reached: int | None = None
    hits: int | None = None
    error: str | None = None

    @property
    def hit_rate(self) -> float | None:
        """Hits per lookup that reached this tier in the last build; None when not known."""
        if not self.reached or self.hits is None:
            return None
        return self.hits / self.reached


def cache_stats(
    project_dir: Path | str = ".",
    config: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[TierStatus]:
    """Entries, bytes and last-build hit rate of every enabled tier; never raises for a tier."""
    settings = load_settings(project_dir, config, environ)
    counts = _last_build_counts(settings)
    statuses = []
    lookups = counts.get("lookups")
    reached = lookups if isinstance(lookups, int) else None
    hits_by_tier = counts.get("hits", {})
    for name in settings.cache.tiers:
        hits = hits_by_tier.get(name) if isinstance(hits_by_tier, dict) else None
        statuses.append(_tier_status(settings, name, reached, hits))
        if reached is not None and isinstance(hits, int):
            reached -= hits  # what this tier answered never reached the next one
    return statuses


@dataclass(frozen=True)
class TierOutcome:
    """What a clear or prune did to one tier: entries removed, or why it could not."""

    name: str
    removed: int = 0
    error: str | None = None


def clear_cache(
    project_dir: Path | str = ".",
    config: Path | str | None = None,
    tier: str | None = None,
    environ: Mapping[str, str] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> list[TierOutcome]:
    """Empty one tier or every enabled one (waiting for the disk tier's lock; `on_wait`
    hears why, once)."""
    settings = load_settings(project_dir, config, environ)
    names = _chosen(settings, tier)
    with _disk_locked(settings, names, on_wait):
        # First: a clear cut short must not leave builds keeping pages as still cached.
        forget_generation(settings.cache.disk.directory)
        if "disk" in names:
            # The semantic cache's prompts would point at answers no longer there.
            clear_disk_vectors(settings.cache.disk.directory)
        return [_with_tier(settings, name, lambda t: t.clear()) for name in names]


def prune_cache(
    project_dir: Path | str = ".",
    config: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    now: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> list[TierOutcome]:
    """Drop what no build will use fresh again: entries past `cache.ttl` or a tier's TTL,
    of an older key version, or unreadable."""
    settings = load_settings(project_dir, config, environ)
    keep = _fresh_entries(settings.cache.ttl, time.time() if now is None else now)
    names = _chosen(settings)
    with _disk_locked(settings, names, on_wait):
        return [_with_tier(settings, name, lambda t: t.prune(keep)) for name in names]


@contextlib.contextmanager
def _disk_locked(
    settings: Settings, names: tuple[str, ...], on_wait: Callable[[str], None] | None
) -> Iterator[None]:
    """The disk tier's folder lock, when that tier is among `names`: two commands tidying
    one folder at once wait for each other, as builds writing one output folder do."""
    if "disk" not in names:
        yield
        return
    with cache_lock(settings.cache.disk.directory).held(on_wait=on_wait):
        yield


def _fresh_entries(ttl: int | None, now: float) -> Keep:
    def keep(key: str, value: Any) -> bool:
        entry = read_entry(value)
        if entry is None or not is_current_key(key):
            return False
        return ttl is None or entry.created is None or now - entry.created <= ttl

    return keep


def _chosen(settings: Settings, tier: str | None = None) -> tuple[str, ...]:
    enabled = settings.cache.tiers
    if tier is None:
        # The memory tier lives and dies with a build: a command never finds it filled.
        return tuple(name for name in enabled if name != "memory")
    name = TIER_ALIASES.get(tier, tier)
    if name not in CACHE_TIERS:
        choices = (*CACHE_TIERS, *TIER_ALIASES)
        raise ConfigError(
            f"'{tier}' is not one of {', '.join(choices)}{did_you_mean(tier, choices)}",
            argument="tier",
        )
    if name not in enabled:
        raise ConfigError(
            f"the {name} tier is not enabled: add it to cache.tiers in "
            f"{shown_path(settings.config_path)}"
            + (" or set CACHE_REDIS_HOST" if name == "redis" else ""),
            argument="tier",
        )
    return (name,)


def _with_tier(settings: Settings, name: str, action: Callable[[CacheTier], int]) -> TierOutcome:
    """Run `action` on one tier; a tier that fails is reported, and the others still run."""
    tier = open_tier(settings.cache, name)
    if tier is None:
        return TierOutcome(name, error=f"{settings.cache.disk.directory} is unusable")
    try:
        return TierOutcome(name, action(tier))
    except Exception as exc:  # whatever a broken tier raises, say which tier and why
        return TierOutcome(name, error=one_line(exc))
    finally:
        tier.close()


def _tier_status(settings: Settings, name: str, reached: int | None, hits: Any) -> TierStatus:
    shown_hits = hits if isinstance(hits, int) else None
    tier = open_tier(settings.cache, name)
    if tier is None:
        location = str(settings.cache.disk.directory)
        return TierStatus(name, location, reached=reached, hits=shown_hits, error="unusable")
    try:
        usage = tier.usage()
    except Exception as exc:  # a tier that cannot be read is a row that says so
        return TierStatus(
            name, tier.location, reached=reached, hits=shown_hits, error=one_line(exc)
        )
    finally:
        tier.close()
    return TierStatus(name, tier.location, usage.entries, usage.bytes, reached, shown_hits)


def _last_build_counts(settings: Settings) -> dict[str, Any]:
    path = settings.build.output_dir / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    counts = report.get("cache") if isinstance(report, dict) else None
    return counts if isinstance(counts, dict) else {}
