"""Settings: config/settings.yaml plus environment overrides, validated once, then frozen.

Precedence, lowest first: built-in defaults, settings.yaml, the environment, the command
line. API keys come only from the environment (`LLM_API_KEY`, or the provider's usual
variable such as `OPENAI_API_KEY`), never from a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from trinity.cache.settings import (
    CACHE_TIERS,
    TIER_ALIASES,
    CacheSettings,
    DiskTierSettings,
    MemoryTierSettings,
    RedisTierSettings,
)
from trinity.checks.spec import CheckSpec, GuardSpec, JudgeSpec
from trinity.checksettings import overlay, read_checks, read_guards
from trinity.errors import ConfigError
from trinity.llm.breaker import BreakerPolicy
from trinity.llm.budgets import BudgetSettings
from trinity.llm.ratelimit import ApiKey, KeyLimits
from trinity.llm.retry import RetryPolicy
from trinity.llm.routing import Router, parse_target
from trinity.llm.settings import (
    DEFAULT_API_URLS,
    DEFAULT_EMBEDDING_MODELS,
    DEFAULT_MODELS,
    EMBEDDING_PROVIDERS,
    HTTP_PROVIDERS,
    MAX_SEQUENCES,
    PROMPT_STYLES,
    PROVIDER_KEY_VARIABLES,
    PROVIDERS,
    SEMANTIC_MIN_THRESHOLD,
    BatchSettings,
    EmbedderSettings,
    Endpoint,
    LLMSettings,
    SemanticSettings,
    Target,
)
from trinity.logs import SECRET_SUFFIXES
from trinity.messages import did_you_mean, shown_path
from trinity.schema import Fields, describe
from trinity.urls import shown_url
from trinity.yamlfile import load_data_file

SETTINGS_FILE = Path("config") / "settings.yaml"


@dataclass(frozen=True)
class SiteSettings:
    title: str
    description: str = ""
    author: str = ""
    language: str = "en"
    base_url: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def as_context(self) -> dict[str, Any]:
        """What prompts and templates see as `site`."""
        return {
            "title": self.title,
            "description": self.description,
            "author": self.author,
            "language": self.language,
            "base_url": self.base_url,
            "params": dict(self.params),
        }


@dataclass(frozen=True)
class BuildSettings:
    output_dir: Path = Path("output")
    theme: str = "minimal"
    theme_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    config_path: Path
    site: SiteSettings
    llm: LLMSettings
    cache: CacheSettings
    build: BuildSettings
    # What every block's answer must pass (a block's own `checks:` overlay these).
    checks: CheckSpec = field(default_factory=CheckSpec)
    guards: GuardSpec = field(default_factory=GuardSpec)
    judge: JudgeSpec | None = None

    def with_overrides(
        self,
        *,
        output_dir: Path | None = None,
        concurrency: int | None = None,
        theme: str | None = None,
        cache_enabled: bool | None = None,
        max_cost: float | None = None,
        semantic_off: bool = False,
    ) -> Settings:
        """These settings with choices made for one run (the command line, `build_site`)
        applied on top. The CLI checks its flags itself; a value out of range passed from
        code is refused here, named by its argument."""
        build, llm, cache = self.build, self.llm, self.cache
        if output_dir is not None:
            build = replace(build, output_dir=(Path.cwd() / output_dir).resolve())
        if theme is not None:
            build = replace(build, theme=theme)
        if concurrency is not None:
            if concurrency < 1:
                raise ConfigError("must be at least 1", argument="concurrency")
            llm = replace(llm, concurrency=concurrency)
        if cache_enabled is not None:
            cache = replace(cache, enabled=cache_enabled)
        if max_cost is not None:
            if max_cost < 0:
                raise ConfigError("must be at least 0", argument="max_cost")
            llm = replace(llm, max_cost=max_cost)
        if semantic_off:
            llm = replace(llm, semantic=replace(llm.semantic, off=True))
        return replace(self, build=build, llm=llm, cache=cache)

    def secrets(self) -> list[str]:
        """Every secret these settings hold (API keys, the Redis password): what logs mask.

        Secrets are exactly the fields declared with `repr=False`.
        """
        found: list[str] = []

        def collect(value: Any, public: bool) -> None:
            if not public and isinstance(value, str) and value:
                found.append(value)

        _walk(self, collect)
        return found

    def digest(self) -> str:
        """A SHA-256 of the settings as they apply, secrets left out and paths taken
        relative to the project, so one configuration has one digest on any machine."""
        return hashlib.sha256(
            json.dumps(self._public(), sort_keys=True, default=str).encode("utf-8")
        ).hexdigest()

    def _public(self) -> Any:
        def public(value: Any) -> Any:
            if is_dataclass(value) and not isinstance(value, type):
                return {
                    f.name: public(getattr(value, f.name))
                    for f in fields(value)
                    if f.repr and f.name not in ("project_dir", "config_path", "base_dir")
                }
            if isinstance(value, Mapping):
                return {str(k): public(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [public(v) for v in value]
            if isinstance(value, Path):
                return _relative(value, self.project_dir)
            return value

        return public(self)


def _walk(value: Any, visit: Callable[[Any, bool], None], public: bool = True) -> None:
    """Call `visit(leaf, public)` for every leaf of nested settings; a leaf is public
    unless a field on its way was declared with `repr=False`."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            _walk(getattr(value, f.name), visit, public and f.repr)
    elif isinstance(value, Mapping):
        for item in value.values():
            _walk(item, visit, public)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, visit, public)
    else:
        visit(value, public)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def load_build_settings(
    project_dir: Path | str = ".",
    *,
    config: Path | str | None = None,
    theme: str | None = None,
    output: Path | str | None = None,
    concurrency: int | None = None,
    use_cache: bool = True,
    max_cost: float | None = None,
    semantic: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """A project's settings with the choices of one run applied: what `trinity build`
    and `trinity.project.prepare` take (`use_cache=False` turns the cache off,
    `semantic=False` the semantic cache, whatever the site and its blocks ask)."""
    return load_settings(project_dir, config, environ).with_overrides(
        output_dir=Path(output) if output is not None else None,
        concurrency=concurrency,
        theme=theme,
        cache_enabled=None if use_cache else False,
        max_cost=max_cost,
        semantic_off=not semantic,
    )


def load_settings(
    project_dir: Path | str = ".",
    config_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read, override from the environment and validate a project's settings."""
    project = Path(project_dir).resolve()
    if not project.is_dir():
        raise ConfigError("project folder not found", path=str(project_dir))
    path = Path(config_path) if config_path is not None else project / SETTINGS_FILE
    if not path.is_absolute():
        path = (Path.cwd() / path).resolve()
    env = os.environ if environ is None else environ
    shown = shown_path(path)
    if config_path is None and not path.exists():
        # Most often Trinity was run outside a project: say how to get one.
        raise ConfigError(f"file not found; {_no_project_hint(project)}", path=shown)
    top = Fields(load_data_file(path, ConfigError), path=shown, key="", error=ConfigError)
    site = _read_site(Fields(top.value("site"), path=shown, key="site", error=ConfigError))
    llm = _read_llm(Fields(top.value("llm"), path=shown, key="llm", error=ConfigError), env)
    cache_fields = Fields(top.value("cache"), path=shown, key="cache", error=ConfigError)
    llm = replace(llm, semantic=_read_semantic(cache_fields.child("semantic"), llm, env))
    cache = _read_cache(cache_fields, env)
    build = _read_build(Fields(top.value("build"), path=shown, key="build", error=ConfigError))
    checks = overlay(
        CheckSpec(),
        read_checks(Fields(top.value("checks"), path=shown, key="checks", error=ConfigError)),
    )
    guards = read_guards(Fields(top.value("guards"), path=shown, key="guards", error=ConfigError))
    judge = _read_judge(top, llm)
    top.done()
    output_dir = Path(env["TRINITY_OUTPUT_DIR"]) if env.get("TRINITY_OUTPUT_DIR") else None
    build = replace(build, output_dir=project / (output_dir or build.output_dir))
    llm = replace(llm, base_dir=project)
    if judge is not None:
        llm = _reach(llm, [Router(llm).target(judge.model)], env, shown, "judge.model")
    cache = replace(cache, disk=replace(cache.disk, directory=project / cache.disk.directory))
    llm = replace(llm, budget=_budget_where(llm.budget, site, cache))
    return Settings(project, path, site, llm, cache, build, checks, guards, judge)


def _no_project_hint(project: Path) -> str:
    folder = shown_path(project)
    if folder == ".":
        return "run `trinity init` to create a project here, or pass --project DIR"
    return f"run `trinity init {folder}` to create a project there, or pass --project DIR"


def _read_site(f: Fields) -> SiteSettings:
    base_url = f.string("base_url", None)
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise f.fail(
                f"expected an http(s) URL such as https://example.com/, got '{base_url}'",
                "base_url",
            )
        base_url = base_url.rstrip("/") + "/"
    site = SiteSettings(
        title=f.string("title", nonempty=True),
        description=f.string("description", SiteSettings.description),
        author=f.string("author", SiteSettings.author),
        language=f.string("language", SiteSettings.language, nonempty=True),
        base_url=base_url,
        params=MappingProxyType(f.mapping("params")),
    )
    f.done(also="your own values belong under site.params")
    return site


def _read_llm(f: Fields, env: Mapping[str, str]) -> LLMSettings:
    options = f.raw.get("options")
    option_names = (
        [f"options.{k}" for k in options if isinstance(k, str)]
        if isinstance(options, Mapping)
        else []
    )
    for name in [*f.raw, *option_names]:
        if name.lower().endswith(SECRET_SUFFIXES):  # "api_key" too
            # Read nothing of the value: it must not reach a message or a log.
            raise f.fail(
                "API keys are read from the environment only; remove it from this file and "
                "set LLM_API_KEY instead",
                name,
            )
    # The file is validated even where the environment overrides it, so a typo never hides.
    # The embedded model is the default: it needs no server and no key.
    file_provider = f.string("provider", LLMSettings.provider, choices=PROVIDERS)
    provider = env.get("LLM_PROVIDER") or file_provider
    if provider not in PROVIDERS:
        raise ConfigError(
            f"'{provider}' is not one of {', '.join(PROVIDERS)}{did_you_mean(provider, PROVIDERS)}",
            path="environment",
            key="LLM_PROVIDER",
        )
    file_url = f.string("api_url", None)
    api_url = env.get("LLM_API_URL") or file_url or DEFAULT_API_URLS[provider]
    if provider in HTTP_PROVIDERS:
        _check_api_url(api_url, f, from_environment=bool(env.get("LLM_API_URL")))
    else:
        api_url = ""  # the local model has no server: it must not split the cache by one
    model = f.string("model", DEFAULT_MODELS[provider], nonempty=True)
    key_variable = PROVIDER_KEY_VARIABLES.get(provider)
    api_key = env.get("LLM_API_KEY") or (env.get(key_variable) if key_variable else None)
    settings = LLMSettings(
        provider=provider,
        api_url=api_url.rstrip("/"),
        model=env.get("LLM_MODEL") or model,
        api_key=api_key or None,
        timeout=f.number("timeout", LLMSettings.timeout, minimum=0.1, maximum=3600),
        max_response_bytes=f.integer(
            "max_response_bytes",
            LLMSettings.max_response_bytes,
            minimum=1024,
            maximum=1024 * 1024 * 1024,
        ),
        concurrency=f.integer("concurrency", LLMSettings.concurrency, minimum=1, maximum=1000),
        temperature=f.number("temperature", LLMSettings.temperature, minimum=0, maximum=2),
        max_tokens=f.integer("max_tokens", LLMSettings.max_tokens, minimum=1, maximum=1_000_000),
        top_p=f.number("top_p", LLMSettings.top_p, minimum=0, maximum=1),
        system=f.string("system", LLMSettings.system),
        prompt_cache=f.boolean("prompt_cache", LLMSettings.prompt_cache),
        options=MappingProxyType(f.mapping("options")),
        style=_read_style(f, provider),
        threads=f.integer("threads", LLMSettings.threads, minimum=1, maximum=512),
        context=f.integer("context", LLMSettings.context, minimum=256, maximum=1_048_576),
        sequences=f.integer("sequences", LLMSettings.sequences, minimum=1, maximum=MAX_SEQUENCES),
        keys=_read_keys(f, env),
        limits=_read_limits(f.child("limits")),
        retry=_read_retry(f.child("retry")),
        breaker=_read_breaker(f.child("breaker")),
        prices=MappingProxyType(_read_prices(f.child("prices"))),
        max_cost=f.number("max_cost", LLMSettings.max_cost, minimum=0),
        budget=_read_budget(f.child("budget")),
        repair_attempts=f.integer(
            "repair_attempts", LLMSettings.repair_attempts, minimum=0, maximum=5
        ),
        batch=_read_batch(f.child("batch")),
    )
    aliases = _read_aliases(f.child("aliases"), provider)
    fallbacks = _read_fallbacks(f.child("fallbacks"), aliases, provider)
    settings = replace(
        settings,
        aliases=MappingProxyType(aliases),
        fallbacks=MappingProxyType(fallbacks),
        cascade=_read_cascade(f, aliases, provider),
    )
    settings = _read_endpoints(f.child("endpoints"), env, settings)
    f.done()
    return settings


def _read_keys(f: Fields, env: Mapping[str, str], name: str = "api_keys") -> tuple[ApiKey, ...]:
    """`api_keys`: a pool of keys, each named by the environment variable that holds it."""
    raw = f.value(name, None)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise f.fail(
            f"expected a list of keys like '- env: OPENAI_KEY_1', got {describe(raw)}", name
        )
    keys = []
    for index, entry in enumerate(raw):
        entry_fields = Fields(
            {"env": entry} if isinstance(entry, str) else entry,
            path=f.path,
            key=f.at(name) + f"[{index}]",
            error=ConfigError,
            optional=False,
        )
        variable = entry_fields.string("env", nonempty=True)
        secret = env.get(variable)
        if not secret:
            raise entry_fields.fail(f"the environment variable {variable} is not set", "env")
        keys.append(ApiKey(variable, secret, _read_limit_fields(entry_fields)))
        entry_fields.done()
    return tuple(keys)


def _read_limit_fields(f: Fields) -> KeyLimits:
    return KeyLimits(
        rpm=f.integer("rpm", None, minimum=1),
        input_tpm=f.integer("input_tpm", None, minimum=1),
        output_tpm=f.integer("output_tpm", None, minimum=1),
        daily_tokens=f.integer("daily_tokens", None, minimum=1),
        daily_cost=f.number("daily_cost", None, minimum=0),
    )


def _read_budget(f: Fields) -> BudgetSettings:
    """`budget: {daily_tokens, daily_cost, scope}`: the project's caps per UTC day."""
    budget = BudgetSettings(
        daily_tokens=f.integer("daily_tokens", None, minimum=1),
        daily_cost=f.number("daily_cost", None, minimum=0),
        scope=f.string("scope", BudgetSettings.scope, nonempty=f.has("scope")),
    )
    f.done()
    return budget


def _budget_where(
    budget: BudgetSettings, site: SiteSettings, cache: CacheSettings
) -> BudgetSettings:
    """`budget` with its scope (the site's title unless the file names one) and its ledger
    folder (the disk cache folder's `budget/`, when the cache has a disk tier)."""
    ledger = cache.disk.directory / "budget" if "disk" in cache.tiers else None
    return replace(budget, scope=budget.scope or site.title, ledger=ledger)


def _read_batch(f: Fields) -> BatchSettings:
    """`batch: {poll_interval, rounds}`: how `--batch` polls a batch and asks again."""
    batch = BatchSettings(
        poll_interval=f.number(
            "poll_interval", BatchSettings.poll_interval, minimum=0.01, maximum=3600
        ),
        rounds=f.integer("rounds", BatchSettings.rounds, minimum=1, maximum=10),
    )
    f.done()
    return batch


def _read_limits(f: Fields) -> KeyLimits:
    limits = _read_limit_fields(f)
    f.done()
    return limits


def _read_retry(f: Fields) -> RetryPolicy:
    d = RetryPolicy()
    retry = RetryPolicy(
        attempts=f.integer("attempts", d.attempts, minimum=1, maximum=10),
        base_delay=f.number("base_delay", d.base_delay, minimum=0, maximum=60),
        max_delay=f.number("max_delay", d.max_delay, minimum=0, maximum=600),
        retry_after_cap=f.number("retry_after_cap", d.retry_after_cap, minimum=0, maximum=3600),
        budget=f.number("budget", d.budget, minimum=0, maximum=10),
        rate_limit_wait=f.number("rate_limit_wait", d.rate_limit_wait, minimum=0, maximum=86400),
    )
    f.done()
    return retry


def _read_breaker(f: Fields) -> BreakerPolicy:
    d = BreakerPolicy()
    breaker = BreakerPolicy(
        failure_threshold=f.integer("failure_threshold", d.failure_threshold, minimum=1),
        failure_rate=f.number("failure_rate", d.failure_rate, minimum=0.01, maximum=1),
        window=f.integer("window", d.window, minimum=1, maximum=10000),
        timeout=f.number("timeout", d.timeout, minimum=0.1, maximum=86400),
    )
    f.done()
    return breaker


def _read_prices(f: Fields) -> dict[str, Mapping[str, float]]:
    """`prices: {model: {input: USD per million tokens, output: ..., cached_input: ...,
    cache_write: ...}}`; the prompt cache's two rates are optional."""
    prices: dict[str, Mapping[str, float]] = {}
    for model in f.raw:
        price = f.child(model)
        rates = {
            "input": price.number("input", minimum=0),
            "output": price.number("output", minimum=0),
            "cached_input": price.number("cached_input", None, minimum=0),
            "cache_write": price.number("cache_write", None, minimum=0),
        }
        prices[model] = MappingProxyType({k: v for k, v in rates.items() if v is not None})
        price.done()
    f.done()
    return prices


def _read_aliases(f: Fields, provider: str) -> dict[str, Target]:
    """`aliases: {writer: "openai:gpt-4o-mini"}`: names pages and settings can ask for."""
    aliases = {}
    for name in f.raw:
        value = f.string(name, nonempty=True)
        target = parse_target(value, provider)
        if not target.model:
            raise f.fail(f"expected 'provider:model' or a model name, got '{value}'", name)
        aliases[name] = target
    f.done()
    return aliases


def _read_fallbacks(
    f: Fields, aliases: Mapping[str, Target], provider: str
) -> dict[str, tuple[str, ...]]:
    """`fallbacks: {writer: [backup, "ollama:llama3.2"]}`: who answers when one fails."""
    fallbacks = {}
    for name in f.raw:
        chain = f.value(name)
        if isinstance(chain, str):
            chain = [chain]
        if not isinstance(chain, list) or not all(isinstance(c, str) and c for c in chain):
            raise f.fail(f"expected a list of model names or aliases, got {describe(chain)}", name)
        for entry in chain:
            _check_model_name(f, name, entry, aliases, provider)
        fallbacks[name] = tuple(chain)
    f.done()
    return fallbacks


def _read_cascade(f: Fields, aliases: Mapping[str, Target], provider: str) -> tuple[str, ...]:
    """`cascade: [cheap, strong]`: the models a block goes to in turn, cheapest first."""
    cascade = f.strings("cascade") or ()
    for index, entry in enumerate(cascade):
        _check_model_name(f, f"cascade[{index}]", entry, aliases, provider)
        if entry in cascade[:index]:
            raise f.fail(f"'{entry}' is listed twice", f"cascade[{index}]")
    return cascade


def _check_model_name(
    f: Fields, name: str, entry: str, aliases: Mapping[str, Target], provider: str
) -> None:
    """Refuse `entry` (at key `name`) unless it is an alias, provider:model or a model."""
    if entry not in aliases and not parse_target(entry, provider).model:
        raise f.fail(f"'{entry}' is not an alias or 'provider:model'", name)


def _read_judge(top: Fields, llm: LLMSettings) -> JudgeSpec | None:
    """`judge: {model, criteria, threshold}`, or None when there is no judge."""
    if top.value("judge") is None:
        return None
    f = top.child("judge")
    model = f.string("model", nonempty=True)
    _check_model_name(f, "model", model, llm.aliases, llm.provider)
    judge = JudgeSpec(
        model=model,
        criteria=f.strings("criteria") or JudgeSpec.criteria,
        threshold=f.number("threshold", JudgeSpec.threshold, minimum=0, maximum=1),
    )
    f.done()
    return judge


def _read_endpoints(f: Fields, env: Mapping[str, str], settings: LLMSettings) -> LLMSettings:
    """`settings` with servers and keys for the providers other than the main one that
    aliases, fallbacks and the cascade reach."""
    endpoints: dict[str, Endpoint] = {}
    for provider in f.raw:
        entry = f.child(provider)
        if provider not in HTTP_PROVIDERS or provider == settings.provider:
            raise f.fail(
                f"'{provider}' is not a server provider other than the main one "
                f"({', '.join(p for p in HTTP_PROVIDERS if p != settings.provider)})",
                provider,
            )
        api_url = entry.string("api_url", DEFAULT_API_URLS[provider], nonempty=True)
        _check_api_url(api_url, entry, from_environment=False)
        keys = _read_keys(entry, env) or _default_keys(provider, env)
        endpoints[provider] = Endpoint(
            provider, api_url.rstrip("/"), keys, _read_limits(entry.child("limits"))
        )
        entry.done()
    f.done()
    router = Router(settings)
    targets = [*settings.aliases.values()]
    for chain in [*settings.fallbacks.values(), settings.cascade]:
        targets.extend(router.target(name) for name in chain)
    settings = replace(settings, endpoints=MappingProxyType(endpoints))
    return _reach(settings, targets, env, f.path, "llm.aliases")


def _reach(
    settings: LLMSettings, targets: list[Target], env: Mapping[str, str], path: str, key: str
) -> LLMSettings:
    """`settings` with an endpoint (the provider's default server and keys) for every
    target's provider that has none yet; the local model is refused as a second provider."""
    endpoints = dict(settings.endpoints)
    for target in targets:
        if target.provider == "local" and settings.provider != "local":
            raise ConfigError(
                "the local model cannot be an alias, fallback, cascade step or judge of a "
                "server provider yet",
                path=path,
                key=key,
            )
        if target.provider != settings.provider and target.provider not in endpoints:
            endpoints[target.provider] = Endpoint(
                target.provider,
                DEFAULT_API_URLS[target.provider],
                _default_keys(target.provider, env),
            )
    return replace(settings, endpoints=MappingProxyType(endpoints))


def _default_keys(provider: str, env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    variable = PROVIDER_KEY_VARIABLES.get(provider)
    secret = env.get(variable) if variable else None
    return (ApiKey(variable, secret),) if variable and secret else ()


def _read_style(f: Fields, provider: str) -> str:
    style: str = f.string("style", LLMSettings.style, choices=PROMPT_STYLES)
    if style == "completion" and provider in HTTP_PROVIDERS:
        raise f.fail("completion style needs the local provider; servers are sent chat", "style")
    return style


def _check_api_url(api_url: str, f: Fields, *, from_environment: bool) -> None:
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        path, key = (
            ("environment", "LLM_API_URL") if from_environment else (f.path, f.at("api_url"))
        )
        raise ConfigError(
            f"expected an http(s) URL, got '{shown_url(api_url)}'", path=path, key=key
        )


def _read_cache(f: Fields, env: Mapping[str, str]) -> CacheSettings:
    if f.has("dir"):
        raise f.fail("the cache folder is now set by cache.disk.dir", "dir")
    tiers = _read_tiers(f, env)
    memory = f.child("memory")
    redis = f.child("redis")
    disk = f.child("disk")
    cache = CacheSettings(
        enabled=f.boolean("enabled", CacheSettings.enabled),
        ttl=f.integer("ttl", CacheSettings.ttl, minimum=1),
        tiers=tiers,
        memory=MemoryTierSettings(
            max_entries=memory.integer("max_entries", MemoryTierSettings.max_entries, minimum=1),
            ttl=memory.integer("ttl", MemoryTierSettings.ttl, minimum=1),
        ),
        redis=_read_redis(redis, env),
        disk=DiskTierSettings(
            directory=Path(disk.string("dir", str(DiskTierSettings.directory), nonempty=True)),
            max_size_mb=disk.integer("max_size_mb", DiskTierSettings.max_size_mb, minimum=1),
            ttl=disk.integer("ttl", DiskTierSettings.ttl, minimum=1),
        ),
    )
    for section in (memory, disk, f):
        section.done()
    return cache


def _read_semantic(f: Fields, llm: LLMSettings, env: Mapping[str, str]) -> SemanticSettings:
    """`cache.semantic`: the threshold, never below SEMANTIC_MIN_THRESHOLD, and the
    embedder, by default the site's own provider (Anthropic has no embeddings endpoint)."""
    enabled = f.boolean("enabled", SemanticSettings.enabled)
    threshold = f.number(
        "threshold", SemanticSettings.threshold, minimum=SEMANTIC_MIN_THRESHOLD, maximum=1
    )
    embedder = _read_embedder(f.child("embedder"), llm, env)
    f.done()
    if enabled and embedder is None:
        raise f.fail(
            f"{llm.provider} has no embeddings endpoint: name one under cache.semantic.embedder "
            f"(provider: one of {', '.join(EMBEDDING_PROVIDERS)})",
            "enabled",
        )
    return SemanticSettings(enabled=enabled, threshold=threshold, embedder=embedder)


def _read_embedder(f: Fields, llm: LLMSettings, env: Mapping[str, str]) -> EmbedderSettings | None:
    if f.has("api_key"):
        raise f.fail(
            "API keys are read from the environment only; remove it from this file and set "
            "EMBEDDINGS_API_KEY instead",
            "api_key",
        )
    own = llm.provider if llm.provider in EMBEDDING_PROVIDERS else None
    provider = f.string("provider", own, choices=EMBEDDING_PROVIDERS)
    if provider is None:
        f.done()
        return None
    same = provider == llm.provider
    api_url = f.string("api_url", llm.api_url if same else DEFAULT_API_URLS[provider])
    if provider == "local":
        api_url = ""
    else:
        _check_api_url(api_url, f, from_environment=False)
    embedder = EmbedderSettings(
        provider=provider,
        model=f.string("model", DEFAULT_EMBEDDING_MODELS[provider], nonempty=True),
        api_url=api_url.rstrip("/"),
        api_key=env.get("EMBEDDINGS_API_KEY") or (llm.api_key if same else None),
        timeout=f.number("timeout", EmbedderSettings.timeout, minimum=0.1, maximum=3600),
    )
    f.done()
    return embedder


def _read_tiers(f: Fields, env: Mapping[str, str]) -> tuple[str, ...]:
    """The enabled tiers in lookup order; CACHE_REDIS_HOST switches Redis on."""
    names = f.strings("tiers")
    if names is None:
        names = CacheSettings.tiers
    chosen: set[str] = set()
    for index, name in enumerate(names):
        tier = TIER_ALIASES.get(name, name)
        if tier not in CACHE_TIERS:
            hint = did_you_mean(name, CACHE_TIERS)
            raise f.fail(
                f"'{name}' is not one of {', '.join(CACHE_TIERS)}{hint}", f"tiers[{index}]"
            )
        if tier in chosen:
            raise f.fail(f"'{name}' is listed twice", f"tiers[{index}]")
        chosen.add(tier)
    if env.get("CACHE_REDIS_HOST"):
        chosen.add("redis")
    return tuple(tier for tier in CACHE_TIERS if tier in chosen)


def _read_redis(f: Fields, env: Mapping[str, str]) -> RedisTierSettings:
    if f.has("password"):
        raise f.fail(
            "the Redis password is read from the environment only; remove it from this file "
            "and set CACHE_REDIS_PASSWORD instead",
            "password",
        )
    host = f.string("host", RedisTierSettings.host, nonempty=True)
    port = f.integer("port", RedisTierSettings.port, minimum=1, maximum=65535)
    settings = RedisTierSettings(
        host=env.get("CACHE_REDIS_HOST") or host,
        port=_environment_port(env) or port,
        db=f.integer("db", RedisTierSettings.db, minimum=0),
        password=env.get("CACHE_REDIS_PASSWORD") or None,
        prefix=f.string("prefix", RedisTierSettings.prefix),
        timeout=f.number("timeout", RedisTierSettings.timeout, minimum=0.001),
        ttl=f.integer("ttl", RedisTierSettings.ttl, minimum=1),
    )
    f.done()
    return settings


def _environment_port(env: Mapping[str, str]) -> int | None:
    raw = env.get("CACHE_REDIS_PORT")
    if not raw:
        return None
    port = int(raw) if raw.strip().isascii() and raw.strip().isdigit() else 0
    if not 1 <= port <= 65535:
        raise ConfigError(
            f"expected a port number from 1 to 65535, got '{raw}'",
            path="environment",
            key="CACHE_REDIS_PORT",
        )
    return port


def _read_build(f: Fields) -> BuildSettings:
    build = BuildSettings(
        output_dir=Path(f.string("output_dir", str(BuildSettings.output_dir), nonempty=True)),
        theme=f.string("theme", BuildSettings.theme, nonempty=True),
        theme_options=MappingProxyType(f.mapping("theme_options")),
    )
    f.done()
    return build
