"""The `trinity` command: parses arguments, draws progress, maps errors to exit codes.

No logic lives here: every command calls into trinity.build, trinity.project,
trinity.scaffold or trinity.render. Heavy modules are imported inside the commands, so
`trinity --version` and `trinity --help` start fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from typer.core import TyperGroup

from trinity.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    EXIT_INTERRUPTED,
    BuildFailed,
    InputError,
    TrinityError,
)
from trinity.messages import did_you_mean, shown_path
from trinity.version import __version__

if TYPE_CHECKING:
    from trinity.doctor import CheckResult
    from trinity.evaluation import Evaluation, Outcome
    from trinity.layout.findings import GuardOptions
    from trinity.logs import InstalledLogging, LogProfile
    from trinity.maintenance import TierOutcome, TierStatus
    from trinity.plan import Shard
    from trinity.project import Project
    from trinity.report import BlockResult, BuildReport

# Options whose value may be left out, and what they mean then: Typer has no optional
# values (Click's flag_value is not passed through), so the group fills it in.
_BARE_OPTIONS = {"--guard": "--guard=heal", "--batch": "--batch=rebatch"}


class _Commands(TyperGroup):
    """Typer's group, reading a bare `--guard` as `--guard=heal`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, [_BARE_OPTIONS.get(arg, arg) for arg in args])


app = typer.Typer(
    cls=_Commands,
    name="trinity",
    help="Build static sites whose content is written by an LLM.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in tracebacks can hold API keys.
    pretty_exceptions_show_locals=False,
    # Plain help: Rich-formatted help imports Markdown and Pygments, half of what
    # `trinity --help` costs (BENCHMARKS.md, "Numbers behind design choices").
    rich_markup_mode=None,
)


class Consoles:
    """The one place consoles are made: results to stdout, progress and errors to stderr."""

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self.out = out or _console()
        self.err = err or _console(stderr=True)


def _console(*, stderr: bool = False) -> Console:
    """A console that wraps lines only on a terminal.

    A pipe or a CI log has no width: wrapped at Rich's 80 columns, a message breaks
    mid-phrase and no longer greps. Tables still fit their cells to the width.
    """
    console = Console(stderr=stderr)
    console.soft_wrap = not console.is_terminal
    return console


consoles = Consoles()

ProjectOption = Annotated[
    Path, typer.Option("--project", "-p", help="The site project folder.", show_default=True)
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file (default: PROJECT/config/settings.yaml)."),
]
ThemeOption = Annotated[
    str | None, typer.Option("--theme", "-t", help="Theme name (default: build.theme).")
]


def _version(value: bool) -> None:
    if value:
        consoles.out.print(f"trinity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Build static sites whose content is written by an LLM."""


@contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """Turn Trinity's errors into one clear message and the documented exit code."""
    try:
        yield
    except BuildFailed as exc:
        consoles.err.print(_failure_table(exc.failures))
        consoles.err.print(f"[bold red]Build failed:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except TrinityError as exc:
        consoles.err.print(f"[bold red]Error:[/] {escape(_message(exc))}", highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        consoles.err.print("[yellow]Interrupted[/]: the previous output was left as it was.")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _message(error: TrinityError) -> str:
    """The error as the CLI says it: an argument of the call is named by its flag."""
    if isinstance(error, InputError) and error.argument and not (error.path or error.key):
        return f"--{error.argument.replace('_', '-')}: {error.detail}"
    return str(error)


def _say_waiting(message: str) -> None:
    consoles.err.print(f"[yellow]{escape(message)}[/]", highlight=False)


def _print_unfinished_report(report: BuildReport | None) -> None:
    """A failed or interrupted build's report on stdout (--json): which blocks failed and
    why is what a script needs most then. Not for a build that never began writing."""
    if report is not None and report.status in ("failed", "interrupted"):
        report.write_json(consoles.out.file)


LogProfileOption = Annotated[
    str | None,
    typer.Option(
        "--log-profile",
        help="Logging profile from config/logging.yaml (default: LOG_PROFILE, then "
        "TRINITY_ENV=production, then default_profile).",
    ),
]


@contextmanager
def _logging(
    project: Path, config: Path | None, profile: str | None = None, *, quiet: bool = False
) -> Iterator[InstalledLogging]:
    """Install the chosen logging profile for one command, and remove it afterwards."""
    from trinity.logs import install_logging, secrets_from_environment

    chosen = _log_profile(project, config, profile)
    if quiet:
        chosen = replace(chosen, console_level="ERROR")
    installed = install_logging(
        chosen,
        console=consoles.err,
        secrets=secrets_from_environment(os.environ),
        base_dir=project,
    )
    try:
        yield installed
    finally:
        installed.remove()


def _log_profile(project: Path, config: Path | None, profile: str | None) -> LogProfile:
    """The profile from logging.yaml beside the settings file (validated)."""
    from trinity.logsettings import choose_profile, load_logging_settings

    config_dir = config.parent if config is not None else project / "config"
    return choose_profile(load_logging_settings(config_dir), profile)


@app.command()
def build(
    project: ProjectOption = Path(),
    config: ConfigOption = None,
    theme: ThemeOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Output folder (default: output).")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, max=1000, help="Requests in flight at once (default: llm.concurrency)."
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache",
            help="Ask the model again for every block; the new answers replace the cached ones.",
        ),
    ] = False,
    no_semantic: Annotated[
        bool,
        typer.Option(
            "--no-semantic",
            help="Serve no block the answer to a similar prompt (cache.semantic) this build.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan and what is cached; call no model.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(
            min=0, help="Refuse model calls that would take this build past this many USD."
        ),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="Write the site even if blocks fail (with placeholders); still exit 1.",
        ),
    ] = False,
    log_profile: LogProfileOption = None,
    correlation_id: Annotated[
        str | None,
        typer.Option(help="Tag this build's log records and report (default: a new UUID)."),
    ] = None,
    report_path: Annotated[
        Path | None,
        typer.Option("--report", help="Write the build report here too (JSON)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the build report as JSON on stdout.")
    ] = False,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait",
            help="If another build is writing the output folder, exit 1 instead of waiting.",
        ),
    ] = False,
    guard: Annotated[
        str | None,
        typer.Option(
            "--guard",
            metavar="[=heal|=strict]",
            help="Check every changed page in headless Chromium at 390, 768 and 1280 px and "
            "heal what is wrong; --guard=strict also fails the build on what is left.",
        ),
    ] = None,
    guard_screenshots: Annotated[
        bool,
        typer.Option(
            "--guard-screenshots",
            help="With --guard: screenshots of pages with findings, before and after, and "
            "a page showing them (output/.trinity/guard/index.html).",
        ),
    ] = False,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="Write the build's Prometheus metrics here (node_exporter's textfile "
            "format), also when it fails.",
        ),
    ] = None,
    metrics_push: Annotated[
        str | None,
        typer.Option(metavar="URL", help="Push the build's metrics to this Pushgateway."),
    ] = None,
    metrics_instance: Annotated[
        str | None,
        typer.Option(help="With --metrics-push: the instance label that groups them."),
    ] = None,
    generate_only: Annotated[
        bool,
        typer.Option(
            "--generate-only",
            help="Generate the blocks into the cache and write no site (the output folder "
            "is not touched); a build without it renders the site from the cache.",
        ),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="K/N",
            help="With --generate-only: only share K of N of the blocks (the same share on "
            "every machine), so N machines sharing a Redis cache generate a site together.",
        ),
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            "--batch",
            metavar="[=rebatch|=then-live]",
            help="Ask the uncached blocks through the provider's batch API at half price "
            "(openai, anthropic), waiting for it; a re-run resumes the same batch. Failed "
            "requests go in the next batch, or with --batch=then-live are asked live.",
        ),
    ] = None,
) -> None:
    """Generate every block and render the site into the output folder."""
    from trinity.config import load_build_settings
    from trinity.logs import new_correlation_id
    from trinity.metrics import metrics_request, recorded
    from trinity.unchanged import keep_unchanged

    metrics = (metrics_file, metrics_push, metrics_instance)
    with (
        _errors_to_exit_codes(),
        _logging(project, config, log_profile, quiet=quiet) as logs,
        recorded(metrics_request(*metrics, dry_run=dry_run)) as meter,
    ):
        guard_options = _guard_options(guard, guard_screenshots)
        share = _shard(shard)
        settings = load_build_settings(
            project,
            config=config,
            theme=theme,
            output=output,
            concurrency=concurrency,
            max_cost=max_cost,
            semantic=not no_semantic,
        )
        logs.redactor.add(settings.secrets())
        # With JSON logs stderr is for machines: no progress bar or tables in between.
        human = not quiet and logs.profile.format != "json"
        started = time.perf_counter()
        correlation_id = correlation_id or new_correlation_id()
        # Nothing changed since the last build: the site stays, nothing else is loaded.
        unchanged = keep_unchanged(
            settings,
            guard_options,
            dry_run=dry_run,
            generate_only=generate_only,
            refresh=no_cache,
            correlation_id=correlation_id,
            report_path=report_path,
            wait_for_lock=not no_wait,
            on_lock_wait=_say_waiting,
        )
        report = unchanged.report
        meter.track(report)
        if report is None:
            import anyio

            from trinity.build import build_project
            from trinity.project import prepare_settings

            prepared = prepare_settings(settings, theme_chosen=theme is not None)
            with _Progress(consoles.err, enabled=human and not dry_run) as progress:
                try:
                    report = anyio.run(
                        lambda: build_project(
                            prepared,
                            dry_run=dry_run,
                            observer=meter.observing(progress),
                            events=meter.events,
                            keep_going=keep_going,
                            correlation_id=correlation_id,
                            report_path=report_path,
                            refresh_cache=no_cache,
                            wait_for_lock=not no_wait,
                            on_lock_wait=_say_waiting,
                            guard=guard_options,
                            inputs=unchanged.inputs,
                            generate_only=generate_only,
                            shard=share,
                            batch=batch,
                        )
                    )
                except BaseException:
                    if as_json:
                        _print_unfinished_report(progress.report)
                    raise
        if as_json:
            # Straight to the stream: Rich would wrap and scan every line of it.
            report.write_json(consoles.out.file)
        if dry_run:
            if not as_json:
                consoles.out.print(_plan_table(report))
                if report.estimate is not None and report.estimate["blocks"]:
                    _print_estimate(report.estimate)
        elif human:
            consoles.err.print(_summary_table(report, time.perf_counter() - started))
            if report.guard is not None:
                _print_guard(report.guard, report.output_dir)
            for block in report.blocks:
                if block.source == "stale":
                    where = f"{block.page}: {block.block}: {block.error}"
                    consoles.err.print(f"[yellow]Stale[/]: {escape(where)}", highlight=False)
            consoles.err.print(_outcome(report))


@app.command()
def check(
    project: ProjectOption = Path(),
    config: ConfigOption = None,
    theme: ThemeOption = None,
    layout: Annotated[
        bool,
        typer.Option(
            "--layout",
            help="Also open the built site (the output folder) in headless Chromium at 390, "
            "768 and 1280 px and report what is wrong with its layout; exit 1 on findings.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="With --layout: the built site (default: output)."),
    ] = None,
) -> None:
    """Validate settings, content and theme without calling any model."""
    from trinity.project import prepare

    with _errors_to_exit_codes():
        prepared = prepare(project, config=config, theme=theme, output=output)
        _log_profile(project, config, None)
        blocks = prepared.site.block_count
        consoles.out.print(
            f"[green]OK[/]: {len(prepared.site.pages)} pages, {blocks} blocks, "
            f"theme '{escape(prepared.theme.name)}'"
        )
        if layout:
            _check_layout(prepared)


def _guard_options(guard: str | None, screenshots: bool) -> GuardOptions | None:
    """`--guard[=heal|strict]` and `--guard-screenshots` (which implies --guard)."""
    if guard is None and not screenshots:
        return None
    from trinity.layout.findings import MODES, GuardOptions

    mode = guard or "heal"
    if mode not in MODES:
        raise InputError(
            f"'{mode}' is not one of {', '.join(MODES)}{did_you_mean(mode, MODES)}",
            argument="guard",
        )
    return GuardOptions(mode=mode, screenshots=screenshots)


def _shard(text: str | None) -> Shard | None:
    """`--shard K/N`, checked."""
    if text is None:
        return None
    from trinity.plan import parse_shard

    return parse_shard(text)


def _check_layout(prepared: Project) -> None:
    """`trinity check --layout`: the built site's findings, a table; exit 1 when any."""
    import anyio

    from trinity.guardian import check_built_site

    checked, findings = anyio.run(lambda: check_built_site(prepared))
    where = escape(shown_path(prepared.settings.build.output_dir))
    if not findings:
        consoles.out.print(
            f"[green]OK[/]: {_counted(checked, 'page')} in {where} checked at 390, 768 and "
            "1280 px: no layout findings"
        )
        return
    consoles.out.print(_findings_table([f.as_json() for f in findings], "Layout findings"))
    raise typer.Exit(EXIT_BUILD_FAILED)


def _print_guard(guard: dict[str, Any], output_dir: str) -> None:
    """What the layout guardian found and did: one line, and the findings left unhealed."""
    findings = guard["findings"]
    cached = (
        f" ({guard['pages_cached']} unchanged, not checked again)" if guard["pages_cached"] else ""
    )
    line = (
        f"Layout: {_counted(guard['pages_checked'], 'page')} checked{cached}; "
        f"{_counted(len(findings), 'finding')}, {guard['healed']} healed"
    )
    consoles.err.print(line, highlight=False)
    left = [f for f in findings if not f["healed"]]
    if left:
        consoles.err.print(_findings_table(left, "Layout findings left unhealed"))
    if guard["screenshots"]:
        shots = escape(str(Path(output_dir) / guard["screenshots"]))
        consoles.err.print(f"Screenshots, before and after: {shots}", highlight=False)


@app.command("eval")
def eval_command(
    base: Annotated[
        str,
        typer.Option(
            help="The side compared against: a model or alias, or a build report "
            "(output/.trinity/report.json)."
        ),
    ],
    candidate: Annotated[
        str,
        typer.Option(help="The side under test: a model or alias, or a build report."),
    ],
    project: ProjectOption = Path(),
    config: ConfigOption = None,
    margin: Annotated[
        float,
        typer.Option(min=0, max=1, help="A judge's score that drops by more is a regression."),
    ] = 0.1,
    max_regressions: Annotated[
        float,
        typer.Option(
            min=0, max=1, help="Exit 1 when the share of blocks that regress is above this."
        ),
    ] = 0.0,
    log_profile: LogProfileOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON on stdout.")
    ] = False,
) -> None:
    """Compare two models, aliases or builds on this site's blocks: checks, judge scores,
    regressions; exit 1 when too many blocks regress."""
    import json

    import anyio

    from trinity.evaluation import evaluate_project
    from trinity.project import prepare

    with _errors_to_exit_codes(), _logging(project, config, log_profile) as logs:
        prepared = prepare(project, config=config)
        logs.redactor.add(prepared.settings.secrets())
        with consoles.err.status("Evaluating", spinner="dots") if not as_json else nullcontext():
            result = anyio.run(
                lambda: evaluate_project(
                    prepared,
                    base,
                    candidate,
                    margin=margin,
                    max_regressions=max_regressions,
                )
            )
        if as_json:
            json.dump(result.to_dict(), consoles.out.file, indent=2)
            consoles.out.file.write("\n")
        else:
            _print_evaluation(result)
    if result.gate_failed:
        raise typer.Exit(EXIT_BUILD_FAILED)


_VERDICT_STYLES = {"regression": "bold red", "improved": "green", "same": "", "not compared": "dim"}


def _print_evaluation(result: Evaluation) -> None:
    """The block table, the regressions, the summary and the verdict on the gate."""
    table = Table("page", "block", "base", "candidate", "verdict", title="Blocks")
    for block in result.blocks:
        style = _VERDICT_STYLES[block.verdict]
        verdict = f"[{style}]{block.verdict}[/]" if style else block.verdict
        table.add_row(
            escape(block.page),
            escape(block.block),
            escape(_side_cell(block.base)),
            escape(_side_cell(block.candidate)),
            verdict,
        )
    consoles.out.print(table)
    for block in result.regressions:
        where = f"{block.page}: {block.block}: {block.reason}"
        consoles.out.print(f"[bold red]Regression[/]: {escape(where)}", highlight=False)
    consoles.out.print(_evaluation_summary(result))
    judge = result.judge or "none (the settings have no judge:)"
    consoles.out.print(f"Judge: {escape(judge)}", highlight=False)
    for side in (result.base, result.candidate):
        for note in side.notes:
            consoles.out.print(f"[yellow]Note[/]: {escape(side.name)}: {escape(note)}")
    rate = f"{len(result.regressions)} of {len(result.blocks)} blocks regressed "
    rate += f"({result.regression_rate:.1%}; at most {result.max_regressions:.1%} allowed)"
    if result.gate_failed:
        consoles.out.print(f"[bold red]Failed[/]: {rate}", highlight=False)
    else:
        consoles.out.print(f"[green]Passed[/]: {rate}", highlight=False)


def _side_cell(outcome: Outcome) -> str:
    """One side of one block: pass or FAIL (and why), and the judge's score."""
    if outcome.passed is None:
        status = "not evaluated"
    elif outcome.passed:
        status = "pass"
    else:
        checks = ", ".join(name.split(":", 1)[0] for name in outcome.failed_checks)
        status = f"FAIL ({checks or 'no answer'})"
    return status if outcome.score is None else f"{status} {outcome.score:.2f}"


def _evaluation_summary(result: Evaluation) -> Table:
    table = Table("", "base", "candidate", title="Summary", box=None)
    base, candidate = result.base, result.candidate
    rows = [
        ("side", base.name, candidate.name),
        (
            "passed",
            f"{base.passed} of {base.evaluated}",
            f"{candidate.passed} of {candidate.evaluated}",
        ),
        ("mean score", _score(base.mean_score), _score(candidate.mean_score)),
    ]
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.2f}"


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project.")] = Path(),
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
) -> None:
    """Write a working example project into DIRECTORY."""
    from trinity.scaffold import write_project

    with _errors_to_exit_codes():
        written = write_project(directory, force=force)
        consoles.out.print(f"Wrote {len(written)} files into {escape(str(directory))}{os.sep}")
        step = "trinity build" if directory == Path() else f"cd {directory} && trinity build"
        consoles.out.print(f"Next: [bold]{escape(step)}[/]", highlight=False)


@app.command()
def themes(project: ProjectOption = Path()) -> None:
    """List the themes this project can use."""
    from trinity.render.themes import list_themes

    with _errors_to_exit_codes():
        table = Table("theme", "description", "extends", "from", box=None)
        for found in list_themes(project.resolve()):
            origin = "built-in" if found.builtin else str(found.folder)
            row = (found.name, found.description, found.extends or "", origin)
            table.add_row(*(escape(cell) for cell in row))
        consoles.out.print(table)


@app.command()
def doctor(
    project: ProjectOption = Path(),
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the checks as JSON on stdout.")
    ] = False,
) -> None:
    """Check the set-up (Python, extras, model, servers, Redis, folders); exit 1 on a FAIL."""
    import json

    from trinity.doctor import diagnose, failed

    with _errors_to_exit_codes():
        if as_json:
            results = diagnose(project, config)
            json.dump([result.as_dict() for result in results], consoles.out.file, indent=2)
            consoles.out.file.write("\n")
        else:
            with consoles.err.status("Checking the set-up"):
                results = diagnose(project, config)
            consoles.out.print(_doctor_table(results))
            consoles.out.print(_doctor_verdict(results), highlight=False)
    if failed(results):
        raise typer.Exit(EXIT_BUILD_FAILED)


_STATUS_STYLES = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}


def _doctor_table(results: list[CheckResult]) -> Table:
    # Folded, never cut: a path or a command with its middle missing is no use.
    table = Table(
        "check",
        "status",
        Column("detail", overflow="fold"),
        Column("fix", overflow="fold"),
        box=None,
    )
    for result in results:
        status = f"[{_STATUS_STYLES[result.status]}]{result.status}[/]"
        table.add_row(escape(result.name), status, escape(result.detail), escape(result.hint))
    return table


def _doctor_verdict(results: list[CheckResult]) -> str:
    fails = sum(1 for result in results if result.status == "FAIL")
    warnings = sum(1 for result in results if result.status == "WARN")
    if not fails and not warnings:
        return "[green]No problems found.[/]"
    found = f"{_counted(fails, 'problem')}, {_counted(warnings, 'warning')}"
    return f"[bold red]{found}[/]" if fails else f"[yellow]{found}[/]"


cache_app = typer.Typer(
    help="Look at and tidy the answer cache (memory, Redis, disk).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")

TierOption = Annotated[
    str | None,
    typer.Option(
        "--tier", help="Only this tier: memory, redis or disk (filesystem). Default: all enabled."
    ),
]


@cache_app.command("stats")
def cache_stats(project: ProjectOption = Path(), config: ConfigOption = None) -> None:
    """Entries and size of every enabled tier, and its hit rate in the last build."""
    from trinity.maintenance import cache_stats as read_stats

    with _errors_to_exit_codes(), _logging(project, config):
        table = Table("tier", "entries", "size", "last build hits", "where", box=None)
        for tier in read_stats(project, config):
            if tier.error is not None:
                table.add_row(
                    tier.name, "", "", "", f"[red]{escape(tier.error)}[/] ({escape(tier.location)})"
                )
                continue
            table.add_row(
                tier.name,
                f"{tier.entries:,}",
                _size(tier.bytes or 0),
                _hit_rate(tier),
                escape(tier.location),
            )
        consoles.out.print(table)


@cache_app.command("clear")
def cache_clear(
    project: ProjectOption = Path(), config: ConfigOption = None, tier: TierOption = None
) -> None:
    """Delete every cached answer (only Trinity's keys in a shared Redis)."""
    from trinity.maintenance import clear_cache

    with _errors_to_exit_codes(), _logging(project, config):
        _print_outcomes(clear_cache(project, config, tier, on_wait=_say_waiting), "removed")


@cache_app.command("prune")
def cache_prune(project: ProjectOption = Path(), config: ConfigOption = None) -> None:
    """Delete expired entries (past cache.ttl), old key versions and unreadable ones."""
    from trinity.maintenance import prune_cache

    with _errors_to_exit_codes(), _logging(project, config):
        _print_outcomes(prune_cache(project, config, on_wait=_say_waiting), "pruned")


def _print_outcomes(outcomes: list[TierOutcome], done: str) -> None:
    """One line per tier; exit 1 if a tier could not be reached (the others were done)."""
    for outcome in outcomes:
        if outcome.error is None:
            consoles.out.print(f"{outcome.name}: {done} {outcome.removed:,} entries")
        else:
            consoles.err.print(
                f"[bold red]Error:[/] the {outcome.name} cache failed: {escape(outcome.error)}",
                highlight=False,
            )
    if any(outcome.error is not None for outcome in outcomes):
        raise typer.Exit(EXIT_BUILD_FAILED)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size, unit = count / 1024, "KB"
    for bigger in ("MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"


def _hit_rate(tier: TierStatus) -> str:
    if tier.hit_rate is None:
        return "-"
    return f"{tier.hits:,} of {tier.reached:,} ({tier.hit_rate:.0%})"


class _Progress:
    """A Rich progress bar fed by the build's observer calls."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = enabled
        self.tokens = 0
        self._batching = False
        # The report the build fills in: what --json prints if the build stops early.
        self.report: BuildReport | None = None
        self._started = 0.0
        self._bar = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self._task = self._bar.add_task("blocks", total=None, detail="", label="Generating")

    def __enter__(self) -> _Progress:
        self._started = self._bar.get_time()
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def planned(self, report: BuildReport) -> None:
        self.report = report
        self._bar.update(self._task, total=report.planned_blocks)

    def _generating(self) -> None:
        """Back to counting blocks after a batch's wait, from none done."""
        self._batching = False
        total = self.report.planned_blocks if self.report is not None else None
        self._bar.reset(self._task, total=total, detail="", label="Generating")

    def layout_checked(self, done: int, total: int) -> None:
        """The guard's check: the same bar, counting pages (each round starts it again)."""
        self._bar.update(
            self._task,
            completed=done,
            total=total,
            detail="pages in Chromium at 390, 768 and 1280 px",
            label="Checking layout",
        )

    def batch_progress(self, done: int, failed: int, total: int) -> None:
        """`--batch`: the same bar, counting the requests the batches have answered."""
        self._bar.update(
            self._task,
            completed=done + failed,
            total=total,
            detail=f"{failed} failed" if failed else "",
            label="Waiting for the batch",
        )
        self._batching = True

    def block_done(self, result: BlockResult) -> None:
        if self._batching:
            self._generating()
        if result.source == "llm":
            self.tokens += result.output_tokens
        elapsed = self._bar.get_time() - self._started
        rate = f", {self.tokens / elapsed:.0f} tok/s" if self.tokens and elapsed > 0 else ""
        self._bar.update(self._task, advance=1, detail=f"{self.tokens} tokens{rate}")


def _findings_table(findings: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("page", "width", "block", "finding", "fixes"):
        table.add_column(column)
    for f in findings:
        table.add_row(
            escape(f["page"]),
            f"{f['width']} px",
            escape(f["block"] or "(theme)"),
            escape(f"{f['kind']}: {f['detail']}"),
            escape(", ".join(f.get("fixes", [])) or "—"),
        )
    return table


def _summary_table(report: BuildReport, wall: float) -> Table:
    table = Table(title="Build summary", show_header=False, box=None)
    rows: list[tuple[str, Any]] = [
        ("pages", _pages(report)),
        ("blocks", len(report.blocks)),
        ("LLM calls", report.llm_calls),
        ("requests sent", report.attempts),
        ("cache hits", _hits_by_tier(report)),
        *_semantic_row(report),
        ("stale answers", report.count("stale")),
        *_checks_row(report),
        *_batch_row(report),
        ("tokens in / out", _tokens(report)),
        ("cost", _cost(report)),
        ("theme", report.theme),
        ("model", f"{report.provider}:{report.model}"),
        ("wall time", f"{wall:.2f} s"),
    ]
    for name, value in rows:
        table.add_row(name, escape(str(value)))
    return table


def _batch_row(report: BuildReport) -> list[tuple[str, str]]:
    """`--batch`: the blocks answered by batch (at half price), and how many batches."""
    if report.batch is None:
        return []
    batched = sum(1 for block in report.blocks if block.batch)
    batches = len(report.batch["batches_sent"]) + len(report.batch["batches_resumed"])
    resumed = (
        f", {len(report.batch['batches_resumed'])} resumed"
        if report.batch["batches_resumed"]
        else ""
    )
    return [("by batch", f"{batched} blocks in {batches} batches{resumed}")]


def _tokens(report: BuildReport) -> str:
    """Tokens in and out, and how many of those in the provider's prompt cache served."""
    line = f"{report.input_tokens} / {report.output_tokens}"
    if report.cached_input_tokens:
        line += f" ({report.cached_input_tokens} in from the prompt cache)"
    return line


def _cost(report: BuildReport) -> str:
    """What the build cost (the semantic cache's embeddings apart), and what Trinity's
    cache and the provider's prompt cache saved."""
    line = f"${report.cost:.4f}"
    if report.embedding_cost:
        line += f" + {_usd(report.embedding_cost)} for embeddings"
    line += f" (cache saved ${report.saved:.4f}"
    if report.cached_input_tokens or report.cache_write_tokens:
        line += f", prompt cache saved ${report.prompt_cache_saved:.4f}"
    return line + ")"


def _checks_row(report: BuildReport) -> list[tuple[str, str]]:
    """What the blocks' checks did, when any ran: answers repaired, asked again,
    escalated along the cascade, and blocks that failed them in the end."""
    if not any(block.checks for block in report.blocks):
        return []
    totals = report.check_totals()
    failed = sum(1 for block in report.blocks if block.failed_checks)
    done = (
        f"{totals['repaired']} repaired, {totals['reasked']} re-asked, "
        f"{totals['escalated']} escalated, {failed} failed"
    )
    judged = f", {totals['judged']} judged" if totals["judged"] else ""
    return [("checks", done + judged)]


def _outcome(report: BuildReport) -> str:
    """The build's last line: whether anything changed, and how many model calls it took."""
    where = escape(report.output_dir)
    if report.status == "generated":
        share = f" (shard {report.shard})" if report.shard else ""
        return (
            f"[green]Generated[/] {_counted(len(report.blocks), 'block')}{share} into the "
            f"cache ({_counted(report.llm_calls, 'model call')}); no site written: "
            "`trinity build` renders it"
        )
    if report.llm_calls == 0 and report.pages_reused == report.pages:
        # "Built" would suggest work was done (and money spent) when none was.
        return (
            f"[green]Nothing changed[/]: {_counted(report.pages, 'page')} in {where} up to "
            "date, no model call made"
        )
    unchanged = f"{report.pages_reused} unchanged, " if report.pages_reused else ""
    calls = _counted(report.llm_calls, "model call")
    return f"[green]Built[/] {_counted(report.pages, 'page')} into {where} ({unchanged}{calls})"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _pages(report: BuildReport) -> str:
    if report.status == "generated":
        return f"{report.pages} (none written: --generate-only)"
    if not report.pages_reused:
        return str(report.pages)
    return f"{report.pages} ({report.pages_reused} unchanged, not rendered again)"


def _semantic_row(report: BuildReport) -> list[tuple[str, str]]:
    """The blocks served the answer to a similar prompt, and how similar, when any were."""
    similarities = [b.similarity for b in report.blocks if b.similarity is not None]
    if not similarities:
        return []
    low, high = min(similarities), max(similarities)
    spread = f"{low:.3f}" if low == high else f"{low:.3f} to {high:.3f}"
    return [("semantic hits", f"{len(similarities)} (similarity {spread}; see the report)")]


def _hits_by_tier(report: BuildReport) -> str:
    tiers = report.hits_by_tier
    if not tiers:
        return str(report.cache_hits)
    return f"{report.cache_hits} ({', '.join(f'{name} {n}' for name, n in tiers.items())})"


def _plan_table(report: BuildReport) -> Table:
    """Every block, cached or to generate; for those to generate, the model, the
    estimated tokens and cost (trinity.estimate)."""
    estimate = report.estimate or {}
    estimated = {(b["page"], b["block"]): b for b in estimate.get("blocks", [])}
    table = Table(
        "page",
        "block",
        "status",
        "model",
        Column("input tokens", justify="right"),
        Column("output tokens", justify="right"),
        Column("cost", justify="right"),
        title=f"Plan: {report.pages} pages (dry run)",
    )
    for block in report.blocks:
        if block.source == "cached":
            table.add_row(escape(block.page), escape(block.block), f"cached ({block.cache_tier})")
            continue
        guess = estimated.get((block.page, block.block))
        table.add_row(
            escape(block.page), escape(block.block), "to generate", *_estimate_cells(guess)
        )
    pending = report.count("pending")
    table.caption = f"{len(report.blocks) - pending} cached, {pending} to generate"
    return table


def _estimate_cells(block: dict[str, Any] | None) -> tuple[str, ...]:
    if block is None:
        return ()
    return (
        escape(block["model"]),
        f"{block['input_tokens']:,} ({_INPUT_BASES[block['input_basis']]})",
        f"{block['output_tokens']:,} ({_OUTPUT_BASES[block['output_basis']]})",
        _usd(block["cost_usd"], priced=block["priced"]),
    )


# How each figure was come by, in a word for the table (explained under it).
_INPUT_BASES = {"tokenizer": "counted", "history": "learned", "default": "estimated"}
_OUTPUT_BASES = {"history: block": "this block", "history: format": "format", "max_tokens": "max"}


def _usd(amount: float, *, priced: bool = True) -> str:
    """USD to the cent's hundredth; a block that costs less still shows its figure."""
    if not priced:
        return "unpriced"
    return f"${amount:.6f}" if 0 < amount < 0.01 else f"${amount:.4f}"


def _estimate_table(estimate: dict[str, Any]) -> Table:
    """The estimate's cost per model and in total, and the verdict on --max-cost."""
    table = Table(
        "model",
        Column("blocks", justify="right"),
        Column("input tokens", justify="right"),
        Column("output tokens", justify="right"),
        Column("cost", justify="right"),
        title="Estimated cost of the blocks to generate",
    )
    for model in estimate["models"]:
        table.add_row(
            escape(f"{model['provider']}:{model['model']}"),
            str(model["blocks"]),
            f"{model['input_tokens']:,}",
            f"{model['output_tokens']:,}",
            _usd(model["cost_usd"], priced=model["priced"]),
        )
    table.add_section()
    table.add_row(
        "total",
        str(len(estimate["blocks"])),
        f"{estimate['input_tokens']:,}",
        f"{estimate['output_tokens']:,}",
        _usd(estimate["cost_usd"]) + ("" if estimate["priced"] else " (+ unpriced)"),
    )
    return table


# What the words in brackets in the plan say, printed under the estimate.
_ESTIMATE_NOTES = (
    "input tokens: counted by the model's tokenizer, learned from what the provider "
    "reported for this model before (the usage history), or estimated at 4 characters a "
    "token",
    "output tokens: the mean of this block's earlier answers, of the model's blocks of its "
    "format, or its max_tokens (a ceiling)",
)


def _print_estimate(estimate: dict[str, Any]) -> None:
    consoles.out.print(_estimate_table(estimate))
    notes: tuple[str, ...] = _ESTIMATE_NOTES
    if any(block["batch"] for block in estimate["blocks"]):
        notes += ("cost: at the batch price (--batch), half the live one",)
    for note in notes:
        consoles.out.print(note, style="dim", highlight=False)
    verdict = estimate["max_cost"]
    line = _max_cost_line(verdict, len(estimate["blocks"]))
    consoles.out.print(line, style="yellow" if verdict["stops"] else None, highlight=False)


def _max_cost_line(verdict: dict[str, Any], pending: int) -> str:
    limit = verdict["max_cost_usd"]
    if limit is None:
        return "no --max-cost set"
    if not verdict["stops"]:
        return f"--max-cost ${limit:.4f} would not stop the build"
    return (
        f"--max-cost ${limit:.4f} would stop the build after about "
        f"{verdict['blocks_before_stop']} of {pending} blocks to generate "
        f"(about {verdict['blocks_refused']} refused)"
    )


_BLOCKS_SHOWN_PER_REASON = 8


def _failure_table(failures: list[tuple[str, str, str]]) -> Table:
    """Failed blocks grouped by reason: a dead server is one row, not a hundred."""
    by_reason: dict[str, list[str]] = {}
    for page, block, reason in failures:
        by_reason.setdefault(reason, []).append(f"{page}: {block}")
    table = Table("blocks", "reason", title="Blocks that failed", title_style="bold red")
    for reason, blocks in by_reason.items():
        shown = blocks[:_BLOCKS_SHOWN_PER_REASON]
        if len(blocks) > len(shown):
            shown.append(f"... and {len(blocks) - len(shown)} more")
        table.add_row(escape("\n".join(shown)), escape(reason))
    return table


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    runner: Callable[..., Any] = app
    try:
        runner(args=argv, prog_name="trinity")
    except KeyboardInterrupt:  # before a command's own handler is in place
        raise SystemExit(EXIT_INTERRUPTED) from None


__all__ = ["EXIT_BAD_INPUT", "app", "main"]
