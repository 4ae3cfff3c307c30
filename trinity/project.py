"""Loading a project and checking everything a build needs (settings, theme, templates,
content, output folder) before any model is called; and opening the cache it asks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from trinity.cache.manager import CacheManager
from trinity.checks.guards import guard_input
from trinity.checks.spec import GuardFinding, GuardSpec
from trinity.config import Settings, load_build_settings
from trinity.errors import ContentError, ThemeError
from trinity.logs import get_logger
from trinity.messages import shown_path
from trinity.projectfiles import PAGES_FILE
from trinity.render.themes import Theme, ThemeRenderer, load_theme
from trinity.site import Site, load_site
from trinity.staging import check_output_dir

if TYPE_CHECKING:
    import httpx

    from trinity.cache.redislink import RedisLink
    from trinity.llm.client import AsyncLLMClient
    from trinity.llm.events import ClientEvents
    from trinity.llm.settings import LLMSettings

log = get_logger(__name__)


@dataclass(frozen=True)
class Project:
    """A project that passed every check: settings, theme, templates and content."""

    settings: Settings
    theme: Theme
    renderer: ThemeRenderer
    site: Site


def prepare(
    project_dir: Path | str = ".",
    *,
    config: Path | str | None = None,
    theme: str | None = None,
    output: Path | str | None = None,
    concurrency: int | None = None,
    use_cache: bool = True,
    max_cost: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Project:
    """Load and validate everything a build needs, without calling any model.

    `use_cache=False` turns the cache off (nothing is read or written); to ask the
    models again and keep their answers, refresh it instead (`build_project`).
    """
    settings = load_build_settings(
        project_dir,
        config=config,
        theme=theme,
        output=output,
        concurrency=concurrency,
        use_cache=use_cache,
        max_cost=max_cost,
        environ=environ,
    )
    return prepare_settings(settings, theme_chosen=theme is not None)


def prepare_settings(settings: Settings, *, theme_chosen: bool = False) -> Project:
    """`prepare` for settings already loaded; `theme_chosen` when the theme came from the
    caller (the command line), not from the settings file."""
    try:
        chosen = load_theme(settings.build.theme, settings.project_dir)
    except ThemeError as exc:
        if theme_chosen or exc.argument != "theme":
            raise
        # The name came from the settings file, not from the caller: point there.
        raise ThemeError(
            exc.detail,
            path=shown_path(settings.config_path),
            key="build.theme",
        ) from None
    renderer = ThemeRenderer(
        chosen,
        settings.project_dir,
        settings.build.theme_options,
        settings_path=shown_path(settings.config_path),
    )
    if settings.llm.provider == "local":
        from trinity.llm.providers.local import check_available

        check_available(settings.llm, shown_path(settings.config_path))
    site = load_site(settings)
    pages_path = shown_path(settings.project_dir / PAGES_FILE)
    guard_prompts(site, settings.guards, pages_path)
    used_by: dict[str, str] = {}
    for page in site.pages:
        used_by.setdefault(page.template, page.source)  # the first page to ask names it
    renderer.require(used_by, pages_path=pages_path)
    check_output_dir(settings.build.output_dir)
    return Project(settings, chosen, renderer, site)


def guard_prompts(site: Site, guards: GuardSpec, pages_path: str) -> None:
    """The input guards on every rendered prompt, and on the page's facts framed into it
    (data that may have come from outside the site): what `guards:` blocks is bad input
    naming where it is, before any model is asked; what it warns about is logged.

    Personal data is looked for once a page: in its facts, or in its prompts when it has
    none. A collection page's prompts are the site's own words around those facts, and
    looking again in each of them cost a large site seconds of phone-number parsing.
    """
    injection_only = replace(guards, pii="off")
    for page in site.pages:
        facts = "\n".join(f"{name}: {value}" for name, value in page.facts.items())
        if facts:
            for finding in guard_input(facts, replace(guards, injection="off")):
                _guard_said(finding, pages_path, page.source, f"the data{page.origin}")
        for block in page.blocks:
            for finding in guard_input(block.prompt, injection_only if facts else guards):
                key = f"{page.source}.blocks.{block.name}.prompt"
                _guard_said(finding, pages_path, key, f"the prompt{page.origin}")


def _guard_said(finding: GuardFinding, pages_path: str, key: str, what: str) -> None:
    """A guard's finding: bad input when its action is block, else a warning."""
    found = f"{_GUARD_WORDS[finding.kind]}: {finding.excerpt!r}"
    if finding.action == "block":
        raise ContentError(
            f"{what} holds {found} (guards.{finding.kind}: block)", path=pages_path, key=key
        )
    log.warning(
        "%s: %s: %s holds %s",
        pages_path,
        key,
        what,
        found,
        extra={"event": "input_guard", "guard": finding.kind},
    )


_GUARD_WORDS = {"injection": "what reads as a prompt injection", "pii": "personal data"}


def open_cache(settings: Settings) -> CacheManager | None:
    """The cache the settings ask for, or None when it is off.

    `cache.ttl` is not given to the tiers: the client judges freshness itself, so that
    an expired answer is still there to serve when the model fails.
    """
    if not settings.cache.enabled:
        return None
    return CacheManager.from_settings(settings.cache)


@asynccontextmanager
async def project_client(
    settings: Settings,
    *,
    llm: LLMSettings | None = None,
    refresh_cache: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    events: ClientEvents | None = None,
) -> AsyncIterator[AsyncLLMClient]:
    """A client on the cache the settings ask for, closed with it. `llm` replaces the LLM
    settings (`trinity eval` asks without fallbacks); see AsyncLLMClient for the rest."""
    # Imported here: `trinity check` prepares a project and never asks a model.
    from trinity.llm.client import AsyncLLMClient

    cache = open_cache(settings)
    shared = open_shared(settings, cache)
    try:
        async with AsyncLLMClient(
            llm or settings.llm,
            cache=cache,
            cache_ttl=settings.cache.ttl,
            cache_refresh=refresh_cache,
            transport=transport,
            shared=shared,
            events=events,
        ) as client:
            yield client
    finally:
        if cache is not None:
            await cache.aclose()
        if shared is not None:
            await shared.aclose()


def open_shared(settings: Settings, cache: CacheManager | None = None) -> RedisLink | None:
    """The Redis that processes building at once share their rate limits, budgets and
    in-flight requests through: the cache's Redis tier's server, when it has one.

    With the tier open, it is the tier's own connection: one Redis behind one breaker, so
    that an outage costs one short wait and one warning, which says what goes on without
    it (closing it twice, with the cache, is harmless)."""
    if "redis" not in settings.cache.tiers:
        return None
    # Imported here: redis-py is slow to import, and most builds have no Redis.
    from trinity.cache.redis import RedisTier
    from trinity.cache.redislink import RedisLink

    tier = cache.tier("redis") if cache is not None else None
    link = (
        tier.link if isinstance(tier, RedisTier) else RedisLink.from_settings(settings.cache.redis)
    )
    link.purpose = "Redis"
    link.without = (
        "the cache goes on without it, and rate limits, budgets and requests in flight are "
        "this process's own, for the rest of this run"
    )
    return link
