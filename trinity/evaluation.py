"""`trinity eval`: two models, aliases or builds compared on the site's own blocks.

A side is a model (or alias), whose answer to every block is asked for, repaired, checked
and judged here; or a build report, whose blocks carry what the build's review found. The
model is measured as it is: no re-asks, no cascade and no fallbacks, so a weak model
shows as weak. Everything goes through the cache (answers and verdicts alike), so a
second comparison of the same sides makes no model call.

A block regresses when it passed on the base side and fails on the candidate, or when its
judge's score dropped by more than a margin; the regression rate is what gates CI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import anyio

from trinity.answers import answer_validator
from trinity.checks.spec import CheckFailure
from trinity.config import Settings
from trinity.errors import InputError, LLMError, MalformedResponseError
from trinity.judge import Judge
from trinity.llm.client import AsyncLLMClient
from trinity.llm.settings import PROVIDERS
from trinity.llm.types import LLMResponse
from trinity.messages import did_you_mean, one_line, shown_path
from trinity.plan import Job, plan_jobs
from trinity.project import Project, project_client
from trinity.review import check_answer, judge_failure

SideKind = Literal["model", "report"]
Verdict = Literal["regression", "improved", "same", "not compared"]
BlockId = tuple[str, str]  # (page slug, block name), as a build report names a block

DEFAULT_MARGIN = 0.1
# Report sources that carry no answer: a dry run's plan.
_UNANSWERED = frozenset({"pending", "cached"})


@dataclass(frozen=True)
class Side:
    """One side as given on the command line: a model or alias, or a report's path."""

    name: str
    kind: SideKind
    argument: str  # "base" or "candidate": what a message about it names

    @property
    def path(self) -> Path:
        return Path(self.name)


@dataclass(frozen=True)
class Outcome:
    """How one block did on one side. `passed` is None when it was not evaluated (a
    report written before checks, a dry run's, or a block the report does not hold);
    `answered` is False when the model gave no answer at all (`error` says why)."""

    passed: bool | None
    score: float | None = None
    failed_checks: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    error: str | None = None
    answered: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "score": self.score,
            "failed_checks": list(self.failed_checks),
            "repairs": list(self.repairs),
            "error": self.error,
            "answered": self.answered,
        }


NOT_EVALUATED = Outcome(passed=None)


@dataclass(frozen=True)
class BlockComparison:
    page: str
    block: str
    base: Outcome
    candidate: Outcome
    verdict: Verdict
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "block": self.block,
            "base": self.base.to_dict(),
            "candidate": self.candidate.to_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class SideResult:
    """One side's outcomes by block, and what the reader should know about them."""

    side: Side
    outcomes: Mapping[BlockId, Outcome]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SideSummary:
    name: str
    kind: SideKind
    passed: int
    evaluated: int
    mean_score: float | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "evaluated": self.evaluated,
            "mean_score": self.mean_score,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Evaluation:
    """The comparison of two sides, block by block, and its summary."""

    base: SideSummary
    candidate: SideSummary
    blocks: tuple[BlockComparison, ...]
    margin: float
    max_regressions: float
    judge: str | None  # the judge's model, None when settings have no `judge:`

    @property
    def regressions(self) -> list[BlockComparison]:
        return [block for block in self.blocks if block.verdict == "regression"]

    @property
    def regression_rate(self) -> float:
        return len(self.regressions) / len(self.blocks) if self.blocks else 0.0

    @property
    def gate_failed(self) -> bool:
        """True when the regression rate is above `max_regressions`: exit 1."""
        return self.regression_rate > self.max_regressions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what `trinity eval --json` prints."""
        return {
            "base": self.base.to_dict(),
            "candidate": self.candidate.to_dict(),
            "judge": self.judge,
            "margin": self.margin,
            "max_regressions": self.max_regressions,
            "blocks": [block.to_dict() for block in self.blocks],
            "regressions": [
                {"page": b.page, "block": b.block, "reason": b.reason} for b in self.regressions
            ],
            "summary": {
                "blocks": len(self.blocks),
                "passed": {"base": self.base.passed, "candidate": self.candidate.passed},
                "mean_score": {
                    "base": self.base.mean_score,
                    "candidate": self.candidate.mean_score,
                },
                "regressions": len(self.regressions),
                "regression_rate": self.regression_rate,
                "gate": "failed" if self.gate_failed else "passed",
            },
        }


# --------------------------------------------------------------------------- sides


def parse_side(value: str, settings: Settings, models: Sequence[str], *, argument: str) -> Side:
    """What a side names: a build report (a path ending in .json, or an existing file),
    else a model. A model must be one the settings name (`models`, or an alias) or be
    written `provider:model`, so a mistyped alias is an input error, not a 404 per block."""
    if value.endswith(".json") or Path(value).is_file():
        return Side(value, "report", argument)
    known = {*settings.llm.aliases, *models}
    prefix, sep, model = value.partition(":")
    if value in known or (sep and prefix in PROVIDERS and model):
        return Side(value, "model", argument)
    raise InputError(
        f"'{value}' is neither a model or alias the settings name nor a report file"
        f"{did_you_mean(value, known)}; write 'provider:model' for another model "
        f"(providers: {', '.join(PROVIDERS)}), or the path of a build report (.json)",
        argument=argument,
    )


def named_models(project: Project) -> list[str]:
    """Every model name the project's settings and blocks use (aliases apart)."""
    settings = project.settings
    names = [settings.llm.model]
    for name, chain in settings.llm.fallbacks.items():
        names += [name, *chain]
    names += [block.model for page in project.site.pages for block in page.blocks if block.model]
    if settings.judge is not None:
        names.append(settings.judge.model)
    return names


def read_report(side: Side) -> SideResult:
    """A build report's blocks as outcomes. A report without check results (written
    before checks were run) or judge scores is read, and said to be so."""
    outcomes: dict[BlockId, Outcome] = {}
    checked = scored = False
    for entry in _load_report(side):
        checked = checked or "failed_checks" in entry
        scored = scored or "judge_score" in entry
        outcomes[(entry["page"], entry["block"])] = _report_outcome(entry)
    notes = []
    if not checked:
        notes.append("the report holds no check results: its blocks are not evaluated")
    if not scored:
        notes.append("the report holds no judge scores")
    return SideResult(side, MappingProxyType(outcomes), tuple(notes))


def _load_report(side: Side) -> list[dict[str, Any]]:
    """The blocks of the report a side names; InputError when it is not one."""
    where = shown_path(side.path)
    try:
        data = json.loads(side.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read the report {where}: {one_line(exc)}", argument=side.argument
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"the report {where} is not JSON: {exc}", argument=side.argument) from None
    blocks = data.get("blocks") if isinstance(data, dict) else None
    if not isinstance(blocks, list) or not all(_report_block(entry) for entry in blocks):
        raise InputError(
            f"{where} is not a build report (a 'blocks' list, each with a page and a block)",
            argument=side.argument,
        )
    return blocks


def _report_block(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("page"), str)
        and isinstance(entry.get("block"), str)
    )


def _report_outcome(entry: Mapping[str, Any]) -> Outcome:
    failed = tuple(str(name) for name in entry.get("failed_checks") or ())
    score = entry.get("judge_score")
    score = float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
    error = entry.get("error") if isinstance(entry.get("error"), str) else None
    source = entry.get("source")
    if source == "failed":
        if not failed:
            return Outcome(False, score, error=error, answered=False)
        passed: bool | None = False
    elif source in _UNANSWERED or "failed_checks" not in entry:
        passed = None
    else:
        passed = not failed
    return Outcome(passed, score, failed, error=error)


# --------------------------------------------------------------------------- models


async def measure_model(
    side: Side, jobs: Sequence[Job], client: AsyncLLMClient, judge: Judge | None
) -> SideResult:
    """Every block asked of the side's model once, its answer repaired, checked and judged."""
    outcomes: dict[BlockId, Outcome] = {}
    limiter = anyio.CapacityLimiter(client.settings.in_flight())

    async def one(job: Job) -> None:
        async with limiter:
            outcomes[(job.page.slug, job.block.name)] = await measure_block(
                job, side.name, client, judge
            )

    async with anyio.create_task_group() as group:
        for job in jobs:
            group.start_soon(one, job)
    return SideResult(side, MappingProxyType(outcomes))


async def measure_block(
    job: Job, model: str, client: AsyncLLMClient, judge: Judge | None
) -> Outcome:
    """One block's request sent to `model`: the answer as the build would publish it
    (trimmed, repaired), its failed checks, and the judge's score when there is a judge.

    No validator is given to the client: an answer that fails its checks is cached too,
    so the next comparison reads it instead of asking again.
    """
    block = job.block
    try:
        response = await client.complete(replace(job.request, model=model))
    except LLMError as exc:
        return Outcome(passed=False, error=one_line(exc), answered=False)
    text, failures, repairs = check_answer(block, response)
    failures += _json_failures(job, replace(response, text=text))
    score, error = None, None
    if judge is not None:
        try:
            verdict = await judge.verdict(job.page, block, text)
        except LLMError as exc:
            error = f"the judge failed: {one_line(exc)}"
        else:
            score = verdict.score
            failure = judge_failure(verdict, judge.spec.threshold)
            failures += [failure] if failure is not None else []
    return Outcome(not failures, score, tuple(map(str, failures)), repairs, error)


def _json_failures(job: Job, response: LLMResponse) -> list[CheckFailure]:
    """A json block's answer must parse and match its schema, as the build demands."""
    validate = answer_validator(job.block)
    if validate is None:
        return []
    try:
        validate(response)
    except MalformedResponseError as exc:
        return [CheckFailure("json", str(exc))]
    return []


# --------------------------------------------------------------------------- comparing


def compare(base: Outcome, candidate: Outcome, margin: float) -> tuple[Verdict, str]:
    """A block's verdict, and why. A base with no answer is no reference: a dead server
    on both sides is not "the same"."""
    if not base.answered:
        return "not compared", f"no answer on base: {base.error}"
    if base.passed and candidate.passed is False:
        failed = ", ".join(candidate.failed_checks) or candidate.error or "failed"
        return "regression", f"passed on base, fails on candidate: {failed}"
    drop = _score_change(base, candidate)
    if drop is not None and -drop > margin:
        return "regression", f"score {base.score:.2f} -> {candidate.score:.2f}"
    if base.passed is False and candidate.passed:
        return "improved", "fails on base, passes on candidate"
    if drop is not None and drop > margin:
        return "improved", f"score {base.score:.2f} -> {candidate.score:.2f}"
    if drop is None and None in (base.passed, candidate.passed):
        missing = "base" if base.passed is None else "candidate"
        return "not compared", f"not evaluated on {missing}"
    return "same", ""


def _score_change(base: Outcome, candidate: Outcome) -> float | None:
    if base.score is None or candidate.score is None:
        return None
    # Rounded: 0.8 - 0.7 is 0.10000000000000009, which is no drop "by more than" 0.1.
    return round(candidate.score - base.score, 9)


def summarize(result: SideResult, ids: Sequence[BlockId]) -> SideSummary:
    outcomes = [result.outcomes.get(block, NOT_EVALUATED) for block in ids]
    scores = [o.score for o in outcomes if o.score is not None]
    notes = list(result.notes)
    missing = sum(1 for block in ids if block not in result.outcomes)
    if missing:
        notes.append(f"{missing} of the site's blocks are not in it")
    unanswered = [o for o in outcomes if not o.answered]
    if unanswered:
        notes.append(f"{len(unanswered)} blocks got no answer, such as: {unanswered[0].error}")
    return SideSummary(
        name=result.side.name,
        kind=result.side.kind,
        passed=sum(1 for o in outcomes if o.passed),
        evaluated=sum(1 for o in outcomes if o.passed is not None),
        mean_score=sum(scores) / len(scores) if scores else None,
        notes=tuple(notes),
    )


def compare_sides(
    base: SideResult,
    candidate: SideResult,
    *,
    ids: Sequence[BlockId],
    margin: float,
    max_regressions: float,
    judge: str | None,
) -> Evaluation:
    blocks = []
    for page, name in ids:
        old = base.outcomes.get((page, name), NOT_EVALUATED)
        new = candidate.outcomes.get((page, name), NOT_EVALUATED)
        verdict, reason = compare(old, new, margin)
        blocks.append(BlockComparison(page, name, old, new, verdict, reason))
    return Evaluation(
        base=summarize(base, ids),
        candidate=summarize(candidate, ids),
        blocks=tuple(blocks),
        margin=margin,
        max_regressions=max_regressions,
        judge=judge,
    )


# --------------------------------------------------------------------------- the run


async def evaluate_project(
    project: Project,
    base: str,
    candidate: str,
    *,
    margin: float = DEFAULT_MARGIN,
    max_regressions: float = 0.0,
    client: AsyncLLMClient | None = None,
) -> Evaluation:
    """Compare `base` and `candidate` (models, aliases or report paths) on the project's
    blocks. InputError for a side that names neither a known model nor a readable report.

    The client made here has no fallbacks: an answer must be the side's model's own.
    """
    for value, argument in ((margin, "margin"), (max_regressions, "max_regressions")):
        if not 0 <= value <= 1:
            raise InputError("must be between 0 and 1", argument=argument)
    models = named_models(project)
    sides = [
        parse_side(value, project.settings, models, argument=argument)
        for value, argument in ((base, "base"), (candidate, "candidate"))
    ]
    reports = {side.argument: read_report(side) for side in sides if side.kind == "report"}
    if client is not None:
        results = await _measure_sides(project, sides, reports, client)
    else:
        settings = project.settings
        no_fallbacks = replace(settings.llm, fallbacks=MappingProxyType({}))
        async with project_client(settings, llm=no_fallbacks) as own:
            results = await _measure_sides(project, sides, reports, own)
    ids = [(page.slug, block.name) for page in project.site.pages for block in page.blocks]
    judge = project.settings.judge
    return compare_sides(
        *results,
        ids=ids,
        margin=margin,
        max_regressions=max_regressions,
        judge=judge.model if judge is not None else None,
    )


async def _measure_sides(
    project: Project,
    sides: Sequence[Side],
    reports: Mapping[str, SideResult],
    client: AsyncLLMClient,
) -> tuple[SideResult, SideResult]:
    jobs = list(plan_jobs(project, client))
    spec = project.settings.judge
    judge = Judge(spec, client) if spec is not None else None

    async def result(side: Side) -> SideResult:
        if side.kind == "report":
            return reports[side.argument]
        return await measure_model(side, jobs, client, judge)

    base, candidate = sides
    return await result(base), await result(candidate)


__all__ = [
    "DEFAULT_MARGIN",
    "BlockComparison",
    "Evaluation",
    "Outcome",
    "Side",
    "SideSummary",
    "compare",
    "evaluate_project",
    "measure_block",
    "parse_side",
    "read_report",
]
