"""One build: prepare (validate everything) -> plan -> generate -> render -> write -> report.

Nothing here prints: progress goes to a `BuildObserver` that the caller supplies (the CLI's
draws a Rich progress bar). Pages are rendered and written into the staging folder as soon
as their last block arrives, and the staging folder replaces `output/` only when every
block succeeded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

from trinity.config import load_build_settings
from trinity.errors import BuildFailed, InputError, LLMError
from trinity.guardian import Guardian, GuardOutcome, Healer
from trinity.layout.findings import GuardOptions
from trinity.layout.fixes import BlockLayout
from trinity.llm.client import AsyncLLMClient
from trinity.llm.settings import BATCH_MODES
from trinity.lock import output_lock
from trinity.logs import Redactor, correlation, current_correlation_id, get_logger, log_context
from trinity.manifest import MANIFEST_FILE
from trinity.messages import did_you_mean, shown_path
from trinity.pages import PageWriter
from trinity.plan import Job, Shard, plan_jobs
from trinity.project import Project, prepare_settings, project_client
from trinity.report import (
    REPORT_FILE,
    BlockResult,
    BuildObserver,
    BuildReport,
    NullObserver,
    cache_counts,
    write_report,
    write_report_or_say,
)
from trinity.review import AnswerJudge, Reviewer, failure_reason
from trinity.staging import BackgroundWriter, StagedOutput
from trinity.unchanged import keep_unchanged
from trinity.usagehistory import UsageRecorder, read_history, record_usage

if TYPE_CHECKING:
    import httpx

    from trinity.config import Settings
    from trinity.llm.events import ClientEvents

log = get_logger(__name__)


def build_site(
    project_dir: Path | str = ".",
    *,
    dry_run: bool = False,
    observer: BuildObserver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    refresh_cache: bool = False,
    guard: GuardOptions | None = None,
    generate_only: bool = False,
    shard: Shard | None = None,
    batch: str | None = None,
    **options: Any,
) -> BuildReport:
    """Build a site (for scripts); see `prepare` for the options, and `build_project`
    for `refresh_cache`, `guard`, `generate_only`, `shard` and `batch`. A site with nothing changed
    since its last build is left as it is (trinity.unchanged)."""
    settings = load_build_settings(project_dir, **options)
    unchanged = keep_unchanged(
        settings, guard, dry_run=dry_run, generate_only=generate_only, refresh=refresh_cache
    )
    if unchanged.report is not None:
        return unchanged.report
    return anyio.run(
        lambda: build_project(
            prepare_settings(settings, theme_chosen=options.get("theme") is not None),
            dry_run=dry_run,
            observer=observer,
            transport=transport,
            refresh_cache=refresh_cache,
            guard=guard,
            inputs=unchanged.inputs,
            generate_only=generate_only,
            shard=shard,
            batch=batch,
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
    judge: AnswerJudge | None = None,
    guard: GuardOptions | None = None,
    inputs: str | None = None,
    events: ClientEvents | None = None,
    generate_only: bool = False,
    shard: Shard | None = None,
    batch: str | None = None,
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

    With `judge:` in the settings, every answer that passed its checks is scored by a
    judge made from them, or by `judge` when one is passed in (tests pass a fake).

    With `guard`, the written pages are checked in a browser and healed before the site is
    swapped in (trinity.guardian); no browser is MissingDependencyError, before any call.

    `inputs` is the digest of what the project was loaded from (trinity.unchanged); a
    build that leaves nothing to do again records it, so that the next build with the
    same inputs keeps the site without loading it.

    `events` hears every attempt, retry and breaker change of the client made here (a
    `client` passed in brings its own); trinity.metrics counts them.

    With `generate_only`, every block is asked for (through its checks) into the cache and
    no page is written: the output folder is neither locked nor touched. With `shard`,
    only that share of the blocks is (trinity.plan.Shard): N machines each generate a
    share into a shared cache, then one build renders the site from it.

    With `batch` (a mode of trinity.llm.settings.BATCH_MODES), the uncached blocks are
    first asked through their provider's batch API at half price (trinity.batchrun).
    """
    _check_share(generate_only, shard, guard)
    _check_batch(batch)
    chromium = _guard_browser(guard, dry_run or generate_only)
    options = _BuildOptions(
        dry_run,
        keep_going,
        observer or NullObserver(),
        clock,
        report_path,
        wait_for_lock,
        on_lock_wait,
        judge,
        guard,
        chromium,
        inputs,
        generate_only,
        shard,
        batch,
    )
    with correlation(correlation_id or current_correlation_id()):
        if client is not None:
            return await _build(project, client, options)
        async with project_client(
            project.settings, refresh_cache=refresh_cache, transport=transport, events=events
        ) as own:
            return await _build(project, own, options)


@dataclass(frozen=True)
class _BuildOptions:
    dry_run: bool
    keep_going: bool
    observer: BuildObserver
    clock: Callable[[], float]
    report_path: Path | None = None
    wait_for_lock: bool = True
    on_lock_wait: Callable[[str], None] | None = None
    judge: AnswerJudge | None = None
    guard: GuardOptions | None = None
    chromium: Path | None = None
    inputs: str | None = None
    generate_only: bool = False
    shard: Shard | None = None
    batch: str | None = None
    # What the blocks a model answered used, recorded for the next dry run's estimate.
    usage: UsageRecorder = field(default_factory=UsageRecorder)


def _check_batch(batch: str | None) -> None:
    """`--batch`'s mode (with --dry-run, the estimate is at the batch price)."""
    if batch is not None and batch not in BATCH_MODES:
        raise InputError(
            f"'{batch}' is not one of {', '.join(BATCH_MODES)}{did_you_mean(batch, BATCH_MODES)}",
            argument="batch",
        )


def _check_share(generate_only: bool, shard: Shard | None, guard: GuardOptions | None) -> None:
    """What `--generate-only` and `--shard` cannot go with (bad input, before any call)."""
    if shard is not None and not generate_only:
        raise InputError(
            "a shard generates its share of the answers and writes no site: add "
            "--generate-only, and render the site with a build without --shard",
            argument="shard",
        )
    if generate_only and guard is not None:
        raise InputError(
            "checks the pages a build writes, and --generate-only writes none: guard the "
            "build that renders the site",
            argument="guard",
        )


def _guard_browser(guard: GuardOptions | None, dry_run: bool) -> Path | None:
    """The browser a guarded build will use, found before anything else is done."""
    if guard is None or dry_run:
        return None
    from trinity.layout.browser import find_chromium  # only guarded builds need it

    return find_chromium(guard.chromium)


def _judge(
    project: Project, client: AsyncLLMClient, judge: AnswerJudge | None
) -> AnswerJudge | None:
    """The judge the settings ask for (`judge:`), made on the build's client; None without."""
    if project.settings.judge is None:
        return None
    if judge is not None:
        return judge
    from trinity.judge import Judge  # only builds with a judge need it

    return Judge(project.settings.judge, client)


async def _build(project: Project, client: AsyncLLMClient, options: _BuildOptions) -> BuildReport:
    settings = project.settings
    clock, observer = options.clock, options.observer
    started = clock()
    counts_before = cache_counts(client.cache)
    report = BuildReport.started(
        settings,
        project.theme.name,
        len(project.site.pages),
        dry_run=options.dry_run,
        shard=None if options.shard is None else str(options.shard),
    )
    # Planned lazily: the workers take each job as they need it, so at 100,000 blocks the
    # requests are never all in memory at once (a shard's share is listed, to count it).
    jobs = plan_jobs(project, client)
    report.planned_blocks = project.site.block_count
    if options.shard is not None:
        share = options.shard.jobs(jobs)
        jobs, report.planned_blocks = iter(share), len(share)
        _say_where_shards_meet(settings)
    notes = _FailureNotes(Redactor(settings.secrets()))
    judge = _judge(project, client, options.judge)
    reviewer = Reviewer(project, client, judge, notes.redactor.text)
    report.timings["plan"] = clock() - started
    observer.planned(report)
    if options.dry_run:
        pending = await _check_cached(jobs, client, report)
        report.estimate = _estimate(project, pending, batch=options.batch is not None)
        report.status = "planned"
        return report

    def settle() -> None:
        report.timings["total"] = clock() - started
        report.cache = cache_counts(client.cache, since=counts_before)
        report.embeddings = client.embedding_usage()

    async with _output_held(settings.build.output_dir, options):
        try:
            if options.batch is not None:
                jobs = await _batched(project, client, jobs, options.batch, options, report)
            if options.generate_only:
                await _generate(project, reviewer, notes, options, jobs, report, settle)
            else:
                await _write_site(project, reviewer, notes, options, jobs, report, settle)
        except BaseException as exc:
            # Cancellation (Ctrl-C) and KeyboardInterrupt are not Exceptions.
            report.status = "failed" if isinstance(exc, Exception) else "interrupted"
            settle()
            _write_unfinished_report(report, options.report_path)
            raise
        finally:
            _record_usage(settings, options.usage)
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
        done = (
            "the answers of the others are cached"
            if options.generate_only
            else "the site was written with placeholders in their place (--keep-going)"
        )
        raise BuildFailed(
            f"{len(report.failures)} of {report.planned_blocks} blocks could not be generated; "
            + done,
            _failure_list(report),
        )
    return report


async def _batched(
    project: Project,
    client: AsyncLLMClient,
    jobs: Iterator[Job],
    mode: str,
    options: _BuildOptions,
    report: BuildReport,
) -> Iterator[Job]:
    """`--batch`: the uncached blocks asked by batch first (trinity.batchrun); the jobs,
    listed for it, go on to the workers, which find those answers waiting."""
    from trinity.batchrun import batch_pass  # only batch builds need it

    listed = list(jobs)
    started = options.clock()
    summary = await batch_pass(project, client, listed, mode, options.observer)
    report.batch = summary.as_json()
    report.timings["batch"] = options.clock() - started
    return iter(listed)


def _say_where_shards_meet(settings: Settings) -> None:
    """Shards share their answers only through the cache: without Redis, that is the
    disk cache of one machine, which a warning says (shards on one machine are fine)."""
    if settings.cache.enabled and "redis" in settings.cache.tiers:
        return
    log.warning(
        "the shards of this site share their answers only through the disk cache at %s: "
        "run them all on this machine, or add redis to cache.tiers",
        shown_path(settings.cache.directory),
        extra={"event": "shard_without_redis"},
    )


def _output_held(output_dir: Path, options: _BuildOptions) -> AbstractAsyncContextManager[object]:
    """The output folder's lock, held from the first request to the report: a second
    build into the same folder waits for this one (and then finds its answers cached)
    instead of mixing two sites. A build that writes no site holds none: the shards of a
    site may run at once from one folder."""
    if options.generate_only:
        return nullcontext()
    lock = output_lock(output_dir)
    return lock.held_async(wait=options.wait_for_lock, on_wait=options.on_lock_wait)


async def _generate(
    project: Project,
    reviewer: Reviewer,
    notes: _FailureNotes,
    options: _BuildOptions,
    jobs: Iterator[Job],
    report: BuildReport,
    settle: Callable[[], None],
) -> None:
    """`--generate-only`: every planned block answered through its checks, each answer
    cached the moment it came; no page is rendered, and the output folder is not touched
    (the layout fixes a guarded build made are read from it, as a full build would)."""
    settings = project.settings
    healer = Healer(reviewer, project.theme.guard, settings.build.output_dir)
    steps = _BlockSteps(reviewer, healer, _NoPages(), notes, options.usage)
    phase = options.clock()
    await _run_workers(jobs, steps, settings.llm.in_flight(), report, options.observer)
    report.timings["generate"] = options.clock() - phase
    report.status = "failed" if report.failures else "generated"
    settle()


async def _write_site(
    project: Project,
    reviewer: Reviewer,
    notes: _FailureNotes,
    options: _BuildOptions,
    jobs: Iterator[Job],
    report: BuildReport,
    settle: Callable[[], None],
) -> None:
    """Generate, render and write into a staging folder; commit it if every block came
    (or `keep_going`), else raise BuildFailed with the previous output untouched.
    `settle` fills in the report's totals before it is written into the site."""
    settings, clock = project.settings, options.clock
    staged = StagedOutput(settings.build.output_dir, manifest=MANIFEST_FILE)
    healer = Healer(reviewer, project.theme.guard, settings.build.output_dir)
    with staged as output, BackgroundWriter(output) as files:
        writer = PageWriter(project, output, files, keep_going=options.keep_going)
        steps = _BlockSteps(reviewer, healer, writer, notes, options.usage)
        phase = clock()
        await _run_workers(jobs, steps, settings.llm.in_flight(), report, options.observer)
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
        writer.copy_static()
        report.timings["write"] = writer.write_time + clock() - phase
        await _guard(project, healer, writer, output, options, report)
        writer.finish(inputs=options.inputs if _complete(report) else None)
        healer.write_record(output)
        settle()
        with output.open_text(REPORT_FILE) as stream:
            report.write_json(stream)
        output.commit()


async def _guard(
    project: Project,
    healer: Healer,
    writer: PageWriter,
    output: StagedOutput,
    options: _BuildOptions,
    report: BuildReport,
) -> None:
    """With `--guard`, the staged pages checked in a browser and healed (trinity.guardian),
    and `--guard=strict` failing on what is left; without, the pages' last checks kept."""
    if options.guard is None or options.chromium is None:
        healer.carry_checks(project.site.pages, writer)
        return
    started = options.clock()
    guardian = Guardian(
        project,
        healer,
        writer,
        output,
        options.guard,
        options.chromium,
        results={(b.page, b.block): b for b in report.blocks},
        observer=options.observer,
    )
    outcome = await guardian.run()
    report.guard = outcome.as_json()
    report.timings["guard"] = options.clock() - started
    _fail_when_strict(outcome, project.settings.build.output_dir)


def _fail_when_strict(outcome: GuardOutcome, output_dir: Path) -> None:
    """`--guard=strict`: a finding left unhealed fails the build, the old site in place."""
    left = outcome.unhealed
    if outcome.mode != "strict" or not left:
        return
    raise BuildFailed(
        f"{len(left)} layout findings were left unhealed (--guard=strict); "
        f"{output_dir} was left as it was",
        [
            (f["page"], f["block"] or "(theme)", f"{f['kind']} at {f['width']} px: {f['detail']}")
            for f in left
        ],
    )


def _complete(report: BuildReport) -> bool:
    """Whether a build left nothing to do again: no block failed, and none was served a
    stale answer (the model failed it; the next build asks again)."""
    return not report.failures and report.count("stale") == 0


def _failure_list(report: BuildReport) -> list[tuple[str, str, str]]:
    return [(b.page, b.block, b.error or "") for b in report.failures]


def _write_finished_report(report: BuildReport, path: Path) -> None:
    """The report of a build that succeeded, at `path`. The site is written by then, but a
    script that asked for the report must hear that it has none: one line, exit 1."""
    write_report_or_say(report, path, after="the site was written")


def _write_unfinished_report(report: BuildReport, path: Path | None) -> None:
    """The report of a build that failed or was interrupted, at `path` when asked for: a
    script needs it most then. Failing to write it must not hide why the build stopped."""
    if path is None:
        return
    try:
        write_report(report, path)
    except OSError as exc:
        log.warning("could not write the report to %s: %s", shown_path(path), exc.strerror)


async def _check_cached(
    jobs: Iterable[Job], client: AsyncLLMClient, report: BuildReport
) -> list[Job]:
    """Each job's block in the report as cached or pending; the pending jobs."""
    pending: list[Job] = []
    for job in jobs:
        hit = await client.cached(job.request, job.key)
        if hit is None:
            pending.append(job)
        report.blocks.append(
            BlockResult(
                page=job.page.slug,
                block=job.block.name,
                source="cached" if hit is not None else "pending",
                cache_tier=hit.cache_tier if hit is not None else None,
            )
        )
    return pending


def _estimate(project: Project, pending: list[Job], *, batch: bool) -> dict[str, Any]:
    """What generating the pending blocks would cost (trinity.estimate), from the usage
    history kept with the cache and, for the embedded model, its own tokenizer; with
    `batch`, as `--batch` would ask them."""
    from trinity.estimate import estimate_jobs  # only dry runs estimate
    from trinity.llm.providers.vocab import count_tokens

    settings = project.settings
    history = read_history(settings.cache.directory)
    estimate = estimate_jobs(
        settings.llm,
        pending,
        history,
        lambda target, texts: count_tokens(settings.llm, target, texts),
        batch=batch,
    )
    return estimate.as_json()


def _record_usage(settings: Settings, usage: UsageRecorder) -> None:
    """The build's usage into the history kept beside the disk cache (none without one:
    a project that keeps its cache in Redis alone has asked for no folder)."""
    cache = settings.cache
    if cache.enabled and "disk" in cache.tiers:
        record_usage(cache.directory, usage.entries())


class _Pages(Protocol):
    """Where a block's outcome goes: a PageWriter, or nowhere (`--generate-only`)."""

    def block_ready(self, job: Job, text: str, layout: BlockLayout) -> None: ...
    def block_failed(self, job: Job) -> None: ...


class _NoPages:
    """`--generate-only`: the answers are in the cache; no page is rendered from them."""

    def block_ready(self, job: Job, text: str, layout: BlockLayout) -> None:
        pass

    def block_failed(self, job: Job) -> None:
        pass


@dataclass(frozen=True)
class _BlockSteps:
    """What is done with each block: reviewed, healed as last time, written, or failed."""

    reviewer: Reviewer
    healer: Healer
    writer: _Pages
    notes: _FailureNotes
    usage: UsageRecorder


async def _run_workers(
    jobs: Iterator[Job],
    steps: _BlockSteps,
    concurrency: int,
    report: BuildReport,
    observer: BuildObserver,
) -> None:
    """Run every job; a fixed pool of workers keeps memory flat however many jobs there are."""

    async def worker() -> None:
        for job in jobs:  # shared iterator: each job goes to exactly one worker
            result = await _run_job(job, steps)
            report.blocks.append(result)
            steps.usage.add_block(job, result)
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

    def note(self, why: str) -> str:
        """Log a block's failure; its reason, masked, for the report and the console."""
        reason = self.redactor.text(why)
        level = logging.INFO if reason in self._seen else logging.WARNING
        self._seen.add(reason)
        log.log(level, "block failed: %s", reason, extra={"event": "block_failed"})
        return reason


async def _run_job(job: Job, steps: _BlockSteps) -> BlockResult:
    """One block: its answer (fresh, cached, or a stale one when the model failed),
    through its checks (trinity.review), with the layout fixes it got last time."""
    with log_context(page=job.page.slug, block=job.block.name):
        return await _answer_job(job, steps)


async def _answer_job(job: Job, steps: _BlockSteps) -> BlockResult:
    reviewer, writer, notes = steps.reviewer, steps.writer, steps.notes
    result = BlockResult(page=job.page.slug, block=job.block.name, source="failed")
    try:
        text = await reviewer.review(job, result)
    except LLMError as exc:
        reason = notes.note(str(exc))
        text = await reviewer.stale(job, result)
        if text is None:
            # No stale answer, or one that fails its checks now: the model's error says why.
            result.source = "failed"
            result.error = reason
            result.attempts += exc.attempts
            writer.block_failed(job)
            return result
        result.error = f"served the last good answer: {reason}"
    if text is None:
        # Every answer failed its checks; a stale one must not stand in: it was the
        # model's answer that was wrong, not its server.
        result.source = "failed"
        result.error = notes.note(failure_reason(result.failed_checks))
        writer.block_failed(job)
        return result
    text, layout = await steps.healer.heal(job, text, result)
    writer.block_ready(job, text, layout)
    return result


__all__ = ["build_project", "build_site"]
