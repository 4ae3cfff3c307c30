"""One build: prepare (validate everything) -> plan -> generate -> render -> write -> report.

Nothing here prints: progress goes to a `BuildObserver` that the caller supplies (the CLI's
draws a Rich progress bar). Pages are rendered and written into the staging folder as soon
as their last block arrives, and the staging folder replaces `output/` only when every
block succeeded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import anyio
import anyio.lowlevel

from trinity import __version__
from trinity.cache.manager import CacheManager
from trinity.config import Settings, SiteSettings, load_settings
from trinity.errors import (
    BuildFailed,
    LLMError,
    MalformedResponseError,
    ThemeError,
    resource_error,
)
from trinity.llm.client import AsyncLLMClient
from trinity.llm.trim import trim_truncated
from trinity.llm.types import CompletionFrame, LLMRequest, LLMResponse
from trinity.lock import output_lock
from trinity.logs import Redactor, correlation, current_correlation_id, get_logger, log_context
from trinity.render.markdown import render_markdown, render_text
from trinity.render.output import (
    MANIFEST_FILE,
    MARKER_DIR,
    BackgroundWriter,
    StagedOutput,
    check_output_dir,
    robots_txt,
    sitemap_xml,
)
from trinity.render.themes import Theme, ThemeRenderer, load_theme
from trinity.site import INDEX_SLUG, PAGES_FILE, Block, Page, Site, load_site
from trinity.yamlfile import shown_path

if TYPE_CHECKING:
    import httpx
    import jsonschema

log = get_logger(__name__)

REPORT_FILE = f"{MARKER_DIR}/report.json"
GENERATOR = f"Trinity {__version__}"

Source = Literal["llm", "cache", "stale", "failed", "cached", "pending"]


@dataclass(frozen=True)
class Job:
    """One block to generate: the page it belongs to, and the request it sends."""

    page: Page
    block: Block
    request: LLMRequest
    key: str


@dataclass
class BlockResult:
    page: str
    block: str
    source: Source
    cache_tier: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency: float = 0.0
    attempts: int = 0
    cost: float = 0.0
    saved: float = 0.0
    error: str | None = None


@dataclass
class BuildReport:
    """What a build (or a dry run) did; the CLI's summary is drawn from it."""

    project_dir: str
    output_dir: str
    theme: str
    provider: str
    model: str
    pages: int
    dry_run: bool = False
    # "running" while it is filled in; then "built", "failed", "interrupted" or, for a
    # dry run, "planned": what a script reads first.
    status: str = "running"
    # Pages whose inputs had not changed, taken from the previous output unrendered.
    pages_reused: int = 0
    correlation_id: str | None = None
    settings_digest: str = ""
    generator: str = GENERATOR
    planned_blocks: int = 0
    blocks: list[BlockResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The cache's own counts: lookups, and hits per tier in lookup order.
    cache: dict[str, Any] = field(default_factory=dict)

    def count(self, source: Source) -> int:
        return sum(1 for b in self.blocks if b.source == source)

    @property
    def llm_calls(self) -> int:
        return self.count("llm")

    @property
    def cache_hits(self) -> int:
        return self.count("cache")

    @property
    def hits_by_tier(self) -> dict[str, int]:
        """Blocks answered from the cache, by the tier that had them (or in-flight)."""
        counts: dict[str, int] = {}
        for b in self.blocks:
            if b.source == "cache" and b.cache_tier is not None:
                counts[b.cache_tier] = counts.get(b.cache_tier, 0) + 1
        return counts

    @property
    def failures(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.source == "failed"]

    @property
    def input_tokens(self) -> int:
        return sum(b.input_tokens for b in self.blocks if b.source == "llm")

    @property
    def output_tokens(self) -> int:
        return sum(b.output_tokens for b in self.blocks if b.source == "llm")

    @property
    def cost(self) -> float:
        return sum(b.cost for b in self.blocks)

    @property
    def saved(self) -> float:
        return sum(b.saved for b in self.blocks)

    @property
    def attempts(self) -> int:
        return sum(b.attempts for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data. It shares the report's values rather than copying
        them (`dataclasses.asdict` deep-copied every block: 0.15 ms a block)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["blocks"] = [vars(block) for block in self.blocks]
        data["totals"] = self.totals()
        return data

    def write_json(self, stream: IO[str]) -> None:
        """The report as JSON into `stream`: a field, or a block, to a line.

        Written a piece at a time, so a report of 100,000 blocks is never all in memory as
        text (`json.dumps(..., indent=2)` took 220 MB more), and each piece by the C encoder
        (the indenting encoder is pure Python: 0.15 ms a block). One block to a line also
        suits grep and jq.
        """
        data = self.to_dict()
        blocks = data.pop("blocks")
        stream.write("{\n")
        for name, value in data.items():
            stream.write(f"  {json.dumps(name)}: {json.dumps(value)},\n")
        stream.write('  "blocks": [')
        for number, block in enumerate(blocks):
            stream.write(("\n    " if number == 0 else ",\n    ") + json.dumps(block))
        stream.write("\n  ]\n}\n" if blocks else "]\n}\n")

    def totals(self) -> dict[str, Any]:
        return {
            "blocks": len(self.blocks),
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "cache_hits_by_tier": self.hits_by_tier,
            "failed": len(self.failures),
            "stale": self.count("stale"),
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost, 6),
            "saved_usd": round(self.saved, 6),
        }


class BuildObserver(Protocol):
    """Hears about a build's progress; the CLI draws it, tests may record it."""

    def planned(self, report: BuildReport) -> None: ...
    def block_done(self, result: BlockResult) -> None: ...


class NullObserver:
    def planned(self, report: BuildReport) -> None:
        pass

    def block_done(self, result: BlockResult) -> None:
        pass


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
    settings = load_settings(project_dir, config, environ).with_overrides(
        output_dir=Path(output) if output is not None else None,
        concurrency=concurrency,
        theme=theme,
        cache_enabled=None if use_cache else False,
        max_cost=max_cost,
    )
    try:
        chosen = load_theme(settings.build.theme, settings.project_dir)
    except ThemeError as exc:
        if theme is not None or exc.key != "--theme":
            raise
        # The name came from the settings file, not from --theme: point there.
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
    used_by: dict[str, str] = {}
    for page in site.pages:
        used_by.setdefault(page.template, page.source)  # the first page to ask names it
    renderer.require(used_by, pages_path=shown_path(settings.project_dir / PAGES_FILE))
    check_output_dir(settings.build.output_dir)
    return Project(settings, chosen, renderer, site)


def build_site(
    project_dir: Path | str = ".",
    *,
    dry_run: bool = False,
    observer: BuildObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    refresh_cache: bool = False,
    **options: Any,
) -> BuildReport:
    """Build a site (for scripts); see `prepare` for the options, and `build_project`
    for `refresh_cache`."""
    return anyio.run(
        lambda: build_project(
            prepare(project_dir, **options),
            dry_run=dry_run,
            observer=observer,
            transport=transport,
            refresh_cache=refresh_cache,
        )
    )


async def build_project(
    project: Project,
    *,
    dry_run: bool = False,
    observer: BuildObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    client: AsyncLLMClient | None = None,
    keep_going: bool = False,
    clock: Callable[[], float] = time.perf_counter,
    correlation_id: str | None = None,
    report_path: Path | None = None,
    refresh_cache: bool = False,
    wait_for_lock: bool = True,
    on_lock_wait: Callable[[str], None] | None = None,
) -> BuildReport:
    """Generate, render and write a prepared project; raise BuildFailed if a block fails.

    A `client` may be passed in (already entered); otherwise one is made from settings,
    with the cache they ask for. With `refresh_cache` that client asks the model again
    for every block and the new answers replace the cached ones (an old answer is still
    served when the model fails); a client passed in brings its own mode. Every log
    record of the build carries `correlation_id` (the current one, or a new one). The
    report goes to `output/.trinity/report.json`, and to `report_path` too when given,
    there also when the build fails or is interrupted (its `status` says which).

    One build at a time writes an output folder: another one holding it is waited for
    (`on_lock_wait` hears why, once), or with `wait_for_lock=False` is LockBusy at once.
    """
    options = _BuildOptions(
        dry_run,
        keep_going,
        observer or NullObserver(),
        clock,
        report_path,
        wait_for_lock,
        on_lock_wait,
    )
    with correlation(correlation_id or current_correlation_id()):
        if client is not None:
            return await _build(project, client, options)
        cache = open_cache(project.settings)
        try:
            async with AsyncLLMClient(
                project.settings.llm,
                cache=cache,
                cache_ttl=project.settings.cache.ttl,
                cache_refresh=refresh_cache,
                transport=transport,
            ) as own:
                return await _build(project, own, options)
        finally:
            if cache is not None:
                await cache.aclose()


@dataclass(frozen=True)
class _BuildOptions:
    dry_run: bool
    keep_going: bool
    observer: BuildObserver
    clock: Callable[[], float]
    report_path: Path | None = None
    wait_for_lock: bool = True
    on_lock_wait: Callable[[str], None] | None = None


async def _build(project: Project, client: AsyncLLMClient, options: _BuildOptions) -> BuildReport:
    settings = project.settings
    clock, observer = options.clock, options.observer
    started = clock()
    counts_before = cache_counts(client.cache)
    report = BuildReport(
        project_dir=str(settings.project_dir),
        output_dir=str(settings.build.output_dir),
        theme=project.theme.name,
        provider=settings.llm.provider,
        model=settings.llm.model,
        pages=len(project.site.pages),
        dry_run=options.dry_run,
        correlation_id=current_correlation_id(),
        settings_digest=settings.digest(),
    )
    log.info(
        "build of %d pages with theme %s started",
        report.pages,
        report.theme,
        extra={"event": "build_started", "settings_digest": report.settings_digest},
    )
    # Planned lazily: the workers take each job as they need it, so at 100,000 blocks the
    # requests are never all in memory at once.
    jobs = plan_jobs(project, client)
    report.planned_blocks = project.site.block_count
    report.timings["plan"] = clock() - started
    observer.planned(report)
    if options.dry_run:
        await _check_cached(jobs, client, report)
        report.status = "planned"
        return report

    def settle() -> None:
        report.timings["total"] = clock() - started
        report.cache = cache_counts(client.cache, since=counts_before)

    # Held from the first request to the report: a second build into the same folder
    # waits for this one (and then finds its answers cached) instead of mixing two sites.
    lock = output_lock(settings.build.output_dir)
    async with lock.held_async(wait=options.wait_for_lock, on_wait=options.on_lock_wait):
        try:
            await _write_site(project, client, options, jobs, report, settle)
        except BaseException as exc:
            # Cancellation (Ctrl-C) and KeyboardInterrupt are not Exceptions.
            report.status = "failed" if isinstance(exc, Exception) else "interrupted"
            settle()
            _write_unfinished_report(report, options.report_path)
            raise
        if options.report_path is not None:
            _write_finished_report(report, options.report_path)
    log.info(
        "build finished: %d blocks, %d LLM calls, %d cache hits, %d failed",
        len(report.blocks),
        report.llm_calls,
        report.cache_hits,
        len(report.failures),
        extra={"event": "build_finished", "totals": report.totals()},
    )
    if report.failures:
        raise BuildFailed(
            f"{len(report.failures)} of {report.planned_blocks} blocks could not be generated; "
            "the site was written with placeholders in their place (--keep-going)",
            _failure_list(report),
        )
    return report


async def _write_site(
    project: Project,
    client: AsyncLLMClient,
    options: _BuildOptions,
    jobs: Iterator[Job],
    report: BuildReport,
    settle: Callable[[], None],
) -> None:
    """Generate, render and write into a staging folder; commit it if every block came
    (or `keep_going`), else raise BuildFailed with the previous output untouched.
    `settle` fills in the report's totals before it is written into the site."""
    settings, clock = project.settings, options.clock
    with StagedOutput(settings.build.output_dir) as output, BackgroundWriter(output) as files:
        writer = _PageWriter(project, output, files, keep_going=options.keep_going)
        phase = clock()
        notes = _FailureNotes(Redactor(settings.secrets()))
        await _generate(
            jobs, client, settings.llm.concurrency, report, options.observer, writer, notes
        )
        report.timings["generate"] = clock() - phase
        report.timings["render"] = writer.render_time
        report.pages_reused = writer.reused
        report.status = "failed" if report.failures else "built"
        if report.failures and not options.keep_going:
            raise BuildFailed(
                f"{len(report.failures)} of {report.planned_blocks} blocks could not be "
                f"generated; {settings.build.output_dir} was left as it was",
                _failure_list(report),
            )
        phase = clock()
        files.close()  # every page on disk, or the first error writing one
        writer.finish()
        report.timings["write"] = writer.write_time + clock() - phase
        settle()
        with output.open_text(REPORT_FILE) as stream:
            report.write_json(stream)
        output.commit()


def _failure_list(report: BuildReport) -> list[tuple[str, str, str]]:
    return [(b.page, b.block, b.error or "") for b in report.failures]


def _write_finished_report(report: BuildReport, path: Path) -> None:
    """The report of a build that succeeded, at `path`. The site is written by then, but a
    script that asked for the report must hear that it has none: one line, exit 1."""
    try:
        write_report(report, path)
    except OSError as exc:
        doing = "writing the build report"
        raise resource_error(exc, shown_path(path), doing, after="the site was written") from exc


def _write_unfinished_report(report: BuildReport, path: Path | None) -> None:
    """The report of a build that failed or was interrupted, at `path` when asked for: a
    script needs it most then. Failing to write it must not hide why the build stopped."""
    if path is None:
        return
    try:
        write_report(report, path)
    except OSError as exc:
        log.warning("could not write the report to %s: %s", shown_path(path), exc.strerror)


def open_cache(settings: Settings) -> CacheManager | None:
    """The cache the settings ask for, or None when it is off.

    `cache.ttl` is not given to the tiers: the client judges freshness itself, so that
    an expired answer is still there to serve when the model fails.
    """
    if not settings.cache.enabled:
        return None
    return CacheManager.from_settings(settings.cache)


def write_report(report: BuildReport, path: Path) -> None:
    """The report as JSON at `path`, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as stream:
            report.write_json(stream)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk must not keep half a report
        raise


def cache_counts(
    cache: CacheManager | None, since: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What the cache has seen: lookups, misses and hits per tier, less the counts `since`
    (taken when a build began, so a cache shared by several builds reports each its own)."""
    if cache is None:
        return {}
    before = since or {}
    hits_before = before.get("hits", {})
    return {
        "lookups": cache.lookups - before.get("lookups", 0),
        "misses": cache.misses - before.get("misses", 0),
        "hits": {name: n - hits_before.get(name, 0) for name, n in cache.hits.items()},
    }


def system_prompt(*parts: str | None) -> str | None:
    """Site, theme voice and block system prompts, joined; None when all are empty."""
    joined = "\n\n".join(p.strip() for p in parts if p and p.strip())
    return joined or None


# Where a base model's continuation of a block ends, by block format: the next heading, a
# run of blank lines, or markup it tends to drift into. A block's `stop` replaces these.
DEFAULT_STOPS = {
    "markdown": ("\n#", "\n\n\n", "<", "```", "\n---", "\n|"),
    "text": ("\n\n", "\n#", "<", "```"),
    "json": (),
}


def completion_frame(site: SiteSettings, page: Page, block: Block) -> CompletionFrame:
    """The block as a document for a base model to continue: the page up to its text.

    The site's title and description, the page's title and description and the block's
    heading give the model its context; the block's `lead` begins the text itself.
    """
    lines = [f"{site.title}: {site.description}" if site.description else site.title, ""]
    lines += [f"# {page.title}", ""]
    if page.description:
        lines += [page.description, ""]
    lines += [f"## {block.heading}", "", block.lead]
    stop = block.stop if block.stop is not None else DEFAULT_STOPS[block.format]
    return CompletionFrame("\n".join(lines), lead=block.lead, stop=stop)


def plan_jobs(project: Project, client: AsyncLLMClient) -> Iterator[Job]:
    """One job per block of every page, with its request fully resolved."""
    voice = project.theme.voice
    site = project.settings.site
    site_system = project.settings.llm.system
    for page in project.site.pages:
        for block in page.blocks:
            request = client.request(
                block.prompt,
                system=system_prompt(site_system, voice, block.system),
                model=block.model,
                temperature=block.temperature,
                max_tokens=block.max_tokens,
                response_format="json" if block.format == "json" else "text",
                json_schema=dict(block.schema) if block.schema is not None else None,
                frame=completion_frame(site, page, block),
            )
            yield Job(page=page, block=block, request=request, key=client.key(request))


async def _check_cached(jobs: Iterable[Job], client: AsyncLLMClient, report: BuildReport) -> None:
    for job in jobs:
        hit = await client.cached(job.request, job.key)
        report.blocks.append(
            BlockResult(
                page=job.page.slug,
                block=job.block.name,
                source="cached" if hit is not None else "pending",
                cache_tier=hit.cache_tier if hit is not None else None,
            )
        )


async def _generate(
    jobs: Iterator[Job],
    client: AsyncLLMClient,
    concurrency: int,
    report: BuildReport,
    observer: BuildObserver,
    writer: _PageWriter,
    notes: _FailureNotes,
) -> None:
    """Run every job; a fixed pool of workers keeps memory flat however many jobs there are."""

    async def worker() -> None:
        for job in jobs:  # shared iterator: each job goes to exactly one worker
            result = await _run_job(job, client, writer, notes)
            report.blocks.append(result)
            observer.block_done(result)
            # A cache hit and a page render never suspend: without this, a build from a
            # full cache held the event loop to its end, and Ctrl-C (a cancellation the
            # loop delivers) waited as long.
            await anyio.lowlevel.checkpoint()

    # More workers than connections, so cache lookups overlap with calls in flight.
    try:
        async with anyio.create_task_group() as group:
            for _ in range(min(report.planned_blocks, concurrency * 2 + 8)):
                group.start_soon(worker)
    except BaseExceptionGroup as group:
        # A template error while rendering a page stops the build: report it, not the group.
        raise _first_error(group) from None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


class _FailureNotes:
    """How failed blocks are told: what servers echo is masked, and each distinct reason
    is a warning once. A dead server or model fails every block alike: the later ones are
    logged at INFO (in the log file, not on the console), and the build's table of
    failures lists them all."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._seen: set[str] = set()

    def note(self, error: LLMError) -> str:
        """Log a block's failure; its reason, masked, for the report and the console."""
        reason = self.redactor.text(str(error))
        level = logging.INFO if reason in self._seen else logging.WARNING
        self._seen.add(reason)
        log.log(level, "block failed: %s", reason, extra={"event": "block_failed"})
        return reason


async def _run_job(
    job: Job, client: AsyncLLMClient, writer: _PageWriter, notes: _FailureNotes
) -> BlockResult:
    """One block: its answer (fresh, cached, or a stale one when the model failed)."""
    with log_context(page=job.page.slug, block=job.block.name):
        return await _answer_job(job, client, writer, notes)


async def _answer_job(
    job: Job, client: AsyncLLMClient, writer: _PageWriter, notes: _FailureNotes
) -> BlockResult:
    base = BlockResult(page=job.page.slug, block=job.block.name, source="failed")
    validate = _validator(job.block)
    try:
        response = await client.complete(job.request, validate=validate, key=job.key)
    except LLMError as exc:
        reason = notes.note(exc)
        stale = await client.stale(job.request, validate=validate, key=job.key)
        if stale is None:
            base.error = reason
            base.attempts = getattr(exc, "attempts", 1)
            writer.block_failed(job)
            return base
        base.error = f"served the last good answer: {reason}"
        response = stale
    base.source = "stale" if response.stale else "cache" if response.cache_tier else "llm"
    base.cache_tier = response.cache_tier
    base.model = response.model or job.request.model
    base.input_tokens = response.usage.input_tokens
    base.output_tokens = response.usage.output_tokens
    base.latency = response.latency
    base.attempts = response.attempts
    base.cost = response.cost
    base.saved = response.saved
    writer.block_ready(job, response)
    return base


_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n(.*?)\n[ \t]*```", re.DOTALL)


def _json_candidates(text: str) -> Iterator[str]:
    """The whole answer, then any fenced block in it, then its outermost {...} or [...]."""
    yield text
    yield from (match.group(1) for match in _FENCE.finditer(text))
    for opening, closing in (("{", "}"), ("[", "]")):
        start, end = text.find(opening), text.rfind(closing)
        if 0 <= start < end:
            yield text[start : end + 1]


def parse_json_answer(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The data in a json block's answer; MalformedResponseError if it has none.

    Chat models often wrap JSON in a code fence or a sentence of introduction, so the
    first candidate in the answer that parses is taken.
    """
    for candidate in _json_candidates(text):
        try:
            data = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    else:
        excerpt = " ".join(text.split())[:80]
        raise MalformedResponseError(f"the answer is not valid JSON: {excerpt!r}")
    if schema is not None:
        import jsonschema  # here: 65 ms to import, and few sites have json blocks

        error = jsonschema.exceptions.best_match(_schema_validator(schema).iter_errors(data))
        if error is not None:
            raise MalformedResponseError(
                f"the answer does not match the block's schema: {error.message}"
            )
    return data


@functools.lru_cache(maxsize=256)
def _compiled_schema(schema_json: str) -> jsonschema.protocols.Validator:
    import jsonschema

    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _schema_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    # Checked when the site loaded; compiled once per distinct schema.
    return _compiled_schema(json.dumps(schema, sort_keys=True))


def _validator(block: Block) -> Callable[[LLMResponse], None] | None:
    """For json blocks, a check that refuses (and so never caches) answers that do not parse."""
    if block.format != "json":
        return None

    def validate(response: LLMResponse) -> None:
        if response.truncated:
            # Even if what came back parses, it is not all the model meant to say.
            raise MalformedResponseError(
                f"the answer was cut off after {response.usage.output_tokens} tokens; "
                "raise the block's max_tokens"
            )
        parse_json_answer(response.text, block.schema)

    return validate


def published_text(block: Block, response: LLMResponse) -> str:
    """The answer a block shows: cut off at max_tokens, by any provider, it ends where it
    last made sense (trim_truncated); a json block's never is (its validator refuses it).

    Trimmed here, as the page is made, rather than before caching: the cache keeps what
    the model said and that it was cut off, so every rebuild from the cache trims by the
    current rule, answers cached before it included, and a better rule costs no model call.
    """
    if response.truncated and block.format != "json":
        return trim_truncated(response.text)
    return response.text


def block_value(block: Block, text: str) -> Any:
    """What a template sees for a block: safe HTML, or the parsed data of a json block."""
    if block.format == "json":
        return parse_json_answer(text, block.schema)
    if block.format == "text":
        return render_text(text)
    return render_markdown(text)


def page_root(page: Page) -> str:
    """The relative path from a page's folder back to the site root."""
    return "" if page.slug == INDEX_SLUG else "../" * (page.slug.count("/") + 1)


class _PageWriter:
    """Renders each page the moment its last block arrives, then forgets its answers.

    With `keep_going`, a failed block takes the theme's placeholder so its page can still
    be written; otherwise a page with a failed block is never rendered.

    A page whose inputs (templates, the site-wide context, its own fields and its blocks'
    answers) are those of the current output's copy is not rendered again: that file is
    kept where it is. `output/.trinity/pages.json` records each page's fingerprint and size.
    """

    def __init__(
        self,
        project: Project,
        output: StagedOutput,
        files: BackgroundWriter,
        keep_going: bool = False,
    ) -> None:
        self.project = project
        self.output = output
        self.files = files
        self.keep_going = keep_going
        # Pages are rendered and written while blocks are still generating: these add up
        # the time spent on each, which the generate phase's wall time includes.
        self.render_time = 0.0
        self._keep_time = 0.0
        self.reused = 0
        self._pending: dict[str, dict[str, str | None]] = {}
        site = project.site
        self._nav = [_link(p) for p in site.pages if p.collection is None]
        self._collections: dict[str, list[dict[str, Any]]] = {}
        for page in site.pages:
            if page.collection is not None:
                self._collections.setdefault(page.collection, []).append(_link(page))
        self._shared: dict[str, Any] = {
            "site": project.settings.site.as_context(),
            "data": site.data,
            "nav": self._nav,
            "collections": self._collections,
            "theme": {
                "name": project.theme.name,
                "description": project.theme.description,
                "options": project.renderer.options,
            },
            "generator": GENERATOR,
        }
        self._shared_digest = _fingerprint(project.renderer.digest, self._shared)
        self._previous = read_page_manifest(output.output_dir / MANIFEST_FILE)
        self._manifest: dict[str, tuple[str, int]] = {}
        for page in site.pages:
            if not page.blocks:
                self._finish_page(page, {})

    def block_ready(self, job: Job, response: LLMResponse) -> None:
        self._settle(job, published_text(job.block, response))

    def block_failed(self, job: Job) -> None:
        if self.keep_going:
            self._settle(job, None)

    def _settle(self, job: Job, answer: str | None) -> None:
        page = job.page
        answers = self._pending.setdefault(page.slug, {})
        answers[job.block.name] = answer
        if len(answers) == len(page.blocks):
            del self._pending[page.slug]
            self._finish_page(page, answers)

    def _finish_page(self, page: Page, answers: dict[str, str | None]) -> None:
        """Reuse the page if nothing it is made of changed, else render and write it.

        `answers` holds each block's text, or None for a failed block (`--keep-going`):
        a page with a placeholder is always rendered, and never recorded for reuse.
        """
        fingerprint = None
        if self._shared_digest is not None and None not in answers.values():
            fingerprint = self._page_fingerprint(page, answers)
        if fingerprint is not None and self._reuse(page, fingerprint):
            return
        started = time.perf_counter()
        blocks = {b.name: self._block_value(page, b, answers[b.name]) for b in page.blocks}
        context: dict[str, Any] = {
            **self._shared,
            "page": {**_link(page), "description": page.description},
            "blocks": blocks,
            "headings": {block.name: block.heading for block in page.blocks},
            "root": page_root(page),
        }
        html = self.project.renderer.render(page.template, context)
        self.render_time += time.perf_counter() - started
        self.files.write_text(page.output_path, html)
        if fingerprint is not None:
            self._manifest[page.output_path] = (fingerprint, len(html.encode("utf-8")))

    def _block_value(self, page: Page, block: Block, answer: str | None) -> Any:
        if answer is None:
            return self.project.renderer.placeholder(page.title, block.name)
        return block_value(block, answer)

    def _page_fingerprint(self, page: Page, answers: Mapping[str, str | None]) -> str | None:
        own = [
            page.template,
            _link(page),
            page.description,
            page_root(page),
            [(b.name, b.heading, b.format, answers[b.name]) for b in page.blocks],
        ]
        return _fingerprint(self._shared_digest, own)

    def _reuse(self, page: Page, fingerprint: str) -> bool:
        previous = self._previous.get(page.output_path)
        if previous is None or previous[0] != fingerprint:
            return False
        started = time.perf_counter()
        reused = self.output.keep(page.output_path, previous[1])
        self._keep_time += time.perf_counter() - started
        if reused:
            self._manifest[page.output_path] = previous
            self.reused += 1
        return reused

    @property
    def write_time(self) -> float:
        """Seconds spent writing pages (on the writer's thread) and checking kept ones."""
        return self.files.busy_time + self._keep_time

    def finish(self) -> None:
        """Static files, the page manifest, and sitemap.xml and robots.txt when the site
        has a base URL."""
        self.output.copy_static(self.project.renderer.static_folders())
        base_url = self.project.settings.site.base_url
        if base_url:
            urls = [page.url for page in self.project.site.pages]
            self.output.write_text("sitemap.xml", sitemap_xml(base_url, urls))
            self.output.write_text("robots.txt", robots_txt(base_url))
        manifest = {"generator": GENERATOR, "pages": self._manifest}
        with self.output.open_text(MANIFEST_FILE) as stream:
            # Sorted: pages finish in any order, and the same site should give the same file.
            json.dump(manifest, stream, separators=(",", ":"), sort_keys=True)


def _fingerprint(*parts: Any) -> str | None:
    """A digest of JSON-able `parts`; None when they cannot be written as JSON (and so
    cannot be compared: the page is rendered every time)."""
    try:
        text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # keys of mixed types, or a circular structure
        return None
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def read_page_manifest(path: Path) -> dict[str, tuple[str, int]]:
    """Fingerprint and size of each page of the output at `path`'s site, by output path;
    empty when there is none, it is unreadable, or another version of Trinity wrote it."""
    try:
        data = json.loads(path.read_text("utf-8"))
        if data["generator"] != GENERATOR:
            return {}
        return {str(k): (str(v[0]), int(v[1])) for k, v in data["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def _link(page: Page) -> dict[str, Any]:
    return {
        "slug": page.slug,
        "title": page.title,
        "url": page.url,
        "collection": page.collection,
        "item": page.item,
    }


__all__ = [
    "BlockResult",
    "BuildObserver",
    "BuildReport",
    "Project",
    "build_project",
    "build_site",
    "prepare",
]
