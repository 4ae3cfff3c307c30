"""Reviewing a block's answer before it is published: its checks, the cheap deterministic
repairs, corrective re-asks, the cascade of models, and the judge.

For one job::

    ask -> check (failed: repair, check again) -> judge (below its threshold: failed)
        -> still failed: ask again, at most `llm.repair_attempts` times, each answer
           repaired and checked as the first
        -> still failed: the next model of `llm.cascade`, and the whole loop again

A chat model asked again gets its failed answer back as the assistant's turn and a user
turn naming what failed (trinity.checks.correction); a base model, which reads no turns, is
sampled again with the next seed and a tighter budget. An answer that still fails after all
that fails its block as a model failure would: no stale answer stands in for it, since it
was the model's answer that was wrong, not its server.

Every answer stays cached raw under its own request's key (the client does that); the
repairs are deterministic and each re-ask is a request of its own (it carries the failed
answer and the correction), so a rebuild replays the same path from the cache with no model
call, and a changed check costs a call only for the cached answers that now fail it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Protocol

from trinity.answers import answer_validator, published_text
from trinity.checks.correction import correction
from trinity.checks.evaluate import checks_applied, evaluate
from trinity.checks.pii import find_pii
from trinity.checks.repair import repair
from trinity.checks.spec import CheckFailure, CheckSpec
from trinity.errors import LLMError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.types import LLMRequest, LLMResponse, Message
from trinity.logs import get_logger
from trinity.plan import Job, block_request
from trinity.project import Project
from trinity.report import BlockResult
from trinity.site import Block, Page

log = get_logger(__name__)

# A base model asked again gets this share of the budget it had, and never less than the
# floor: a shorter continuation has less room to run past a length check or to loop.
REASK_BUDGET_SHARE = 0.8
MIN_REASK_TOKENS = 16


class JudgeVerdict(Protocol):
    """What a judge says of an answer: a score from 0 to 1, and why."""

    @property
    def score(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def cost(self) -> float: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


class AnswerJudge(Protocol):
    """Scores an answer that passed its checks (trinity.judge.Judge); raises LLMError
    when it cannot judge."""

    async def verdict(self, page: Page, block: Block, text: str) -> JudgeVerdict: ...


def checks_run(spec: CheckSpec, block_format: str, *, judged: bool) -> list[str]:
    """The names of the checks an answer of a block goes through, as its report lists them:
    its checks, then a json block's schema, then the judge."""
    names = checks_applied(spec, format=block_format)
    if block_format == "json":
        names.append("json")
    if judged:
        names.append("judge")
    return names


def check_answer(
    block: Block, response: LLMResponse
) -> tuple[str, list[CheckFailure], tuple[str, ...]]:
    """An answer as it would be published (trimmed, and repaired when it fails its checks),
    the checks it fails still, and the repairs made (their names)."""
    text = published_text(block, response)
    failures = evaluate(text, block.checks, format=block.format)
    if not failures:
        return text, failures, ()
    repaired, fixes = repair(text, block.checks, format=block.format)
    if not fixes:
        return text, failures, ()
    return repaired, evaluate(repaired, block.checks, format=block.format), fixes


def judge_failure(verdict: JudgeVerdict, threshold: float) -> CheckFailure | None:
    """A verdict below the judge's threshold, as a failed check; None at or above it."""
    if verdict.score >= threshold:
        return None
    return CheckFailure("judge", f"scored {verdict.score:.2f}, below {threshold}: {verdict.reason}")


def failure_reason(failures: list[str]) -> str:
    """A block's error when its answer failed its checks, for the report and the console."""
    return f"failed its checks: {'; '.join(failures)}"


def reask_request(request: LLMRequest, answer: str, failures: list[CheckFailure]) -> LLMRequest:
    """The request that asks again after `answer` to `request` failed `failures`.

    A chat model gets its answer back and is told what failed; a base model (a request
    with a document) reads no turns: it is sampled with the next seed and a tighter budget.
    """
    if request.document is None:
        turns = (Message("assistant", answer), Message("user", correction(failures)))
        return replace(request, messages=request.messages + turns)
    seed = int(request.options.get("seed", 0)) + 1
    budget = max(MIN_REASK_TOKENS, int(request.max_tokens * REASK_BUDGET_SHARE))
    return replace(
        request,
        options=MappingProxyType({**request.options, "seed": seed}),
        max_tokens=min(request.max_tokens, budget),
    )


class Reviewer:
    """Takes each block's answers through its checks, repairs, re-asks, the cascade and
    the judge, for one build. `judge` is used only when the settings name one (`judge:`)."""

    def __init__(
        self,
        project: Project,
        client: AsyncLLMClient,
        judge: AnswerJudge | None = None,
        mask: Callable[[str], str] = str,
    ) -> None:
        self.project = project
        self.client = client
        settings = project.settings
        self.judge = judge if settings.judge is not None else None
        self.threshold = settings.judge.threshold if settings.judge is not None else 0.0
        self.cascade = settings.llm.cascade
        self.repair_attempts = settings.llm.repair_attempts
        # What a server's error is told through: the build masks the secrets it may echo.
        self.mask = mask
        self._judge_failed = False

    async def review(self, job: Job, result: BlockResult) -> str | None:
        """The text to publish for `job`, or None when no answer passed its checks;
        `result` is filled in with what was done and what it cost.

        Raises LLMError when not even a first answer came (the build may then serve the
        last good one, see `stale`).
        """
        result.checks = checks_run(job.block.checks, job.block.format, judged=self.judged)
        request = job.request
        response = await self._ask(job, request, job.key, result)
        text, failures = await self._settle(job, request, response, result)
        for model in self._after(request.model):
            if not failures:
                break
            result.escalations.append(model)
            log.info("escalating to %s: %s", model, failure_reason([str(f) for f in failures]))
            step = block_request(self.project, self.client, job.page, job.block, model)
            try:
                response = await self._ask(job, step, self.client.key(step), result)
            except LLMError as exc:
                self._failed_call(exc, result)
                continue
            text, failures = await self._settle(job, step, response, result)
        return self._outcome(job, text, failures, result)

    async def rework(
        self,
        job: Job,
        request: LLMRequest,
        text: str,
        failures: list[CheckFailure],
        result: BlockResult,
    ) -> tuple[LLMRequest, str | None]:
        """Ask again for a block whose published `text` (the answer to `request`) fails
        `failures` its checks do not know: the layout guardian's. It is the re-ask of a
        failed check, and the new answer goes through the block's checks and repairs as
        any other. Returns the re-ask (a next one builds on it) and the new text, or None
        when the model did not answer or its answer fails the block's checks."""
        step, checked = await self._reask(job, request, text, failures, result)
        if checked is None or checked[1]:
            return step, None
        return step, checked[0]

    async def stale(self, job: Job, result: BlockResult) -> str | None:
        """The last good cached answer, checked (no model is asked again: it just failed),
        or None when there is none or it fails its checks now."""
        request = job.request
        validate = answer_validator(job.block)
        response = await self.client.stale(request, validate=validate, key=job.key)
        if response is None:
            return None
        result.checks = checks_run(job.block.checks, job.block.format, judged=self.judged)
        _count(result, request, response)
        text, failures = await self._check(job, response, result)
        return self._outcome(job, text, failures, result)

    @property
    def judged(self) -> bool:
        return self.judge is not None

    def _after(self, model: str) -> tuple[str, ...]:
        """The cascade's models after `model` (none when it is not in the cascade)."""
        return self.cascade[self.cascade.index(model) + 1 :] if model in self.cascade else ()

    async def _settle(
        self, job: Job, request: LLMRequest, response: LLMResponse, result: BlockResult
    ) -> tuple[str, list[CheckFailure]]:
        """One model's best: its answer checked, and asked again while it fails."""
        text, failures = await self._check(job, response, result)
        for _ in range(self.repair_attempts):
            if not failures:
                break
            request, checked = await self._reask(job, request, text, failures, result)
            if checked is None:
                break
            text, failures = checked
        return text, failures

    async def _reask(
        self,
        job: Job,
        request: LLMRequest,
        text: str,
        failures: list[CheckFailure],
        result: BlockResult,
    ) -> tuple[LLMRequest, tuple[str, list[CheckFailure]] | None]:
        """Ask again after `text` (the answer to `request`) failed `failures`: the re-ask
        sent, and its answer checked (None when the model did not answer)."""
        step = reask_request(request, text, failures)
        result.reasks += 1
        try:
            response = await self._ask(job, step, self.client.key(step), result)
        except LLMError as exc:
            self._failed_call(exc, result)
            return step, None
        return step, await self._check(job, response, result)

    async def _ask(
        self, job: Job, request: LLMRequest, key: str, result: BlockResult
    ) -> LLMResponse:
        validate = answer_validator(job.block)
        response = await self.client.complete(
            request, validate=validate, key=key, semantic=job.block.semantic
        )
        _count(result, request, response)
        return response

    async def _check(
        self, job: Job, response: LLMResponse, result: BlockResult
    ) -> tuple[str, list[CheckFailure]]:
        """The answer as it would be published, repaired if it failed, and what it fails
        still (the judge's verdict included once the checks pass)."""
        text, failures, fixes = check_answer(job.block, response)
        result.repairs.extend(fix for fix in fixes if fix not in result.repairs)
        if not failures:
            failures = await self._verdict(job, text, result)
        return text, failures

    async def _verdict(self, job: Job, text: str, result: BlockResult) -> list[CheckFailure]:
        """The judge's score of a passing answer: below the threshold, a failed check. A
        judge that cannot judge leaves the block unjudged (said once per build)."""
        if self.judge is None:
            return []
        try:
            verdict = await self.judge.verdict(job.page, job.block, text)
        except LLMError as exc:
            if not self._judge_failed:
                log.warning(
                    "the judge could not score answers (%s); they are published unjudged", exc
                )
            self._judge_failed = True
            result.judge_score = None
            return []
        result.judge_score = verdict.score
        result.cost += verdict.cost
        result.input_tokens += verdict.input_tokens
        result.output_tokens += verdict.output_tokens
        failure = judge_failure(verdict, self.threshold)
        return [] if failure is None else [failure]

    def _failed_call(self, error: LLMError, result: BlockResult) -> None:
        """A re-ask or a cascade step the model did not answer: told, and counted. The
        block goes on with the answers it has (and the cascade's next model, if any)."""
        result.attempts += error.attempts
        log.warning("asking again failed: %s", self.mask(str(error)))

    @staticmethod
    def _outcome(
        job: Job, text: str, failures: list[CheckFailure], result: BlockResult
    ) -> str | None:
        """The text to publish, or None; with `pii: warn`, the personal data it holds is
        told (its kinds, never the data) and it is published as it is."""
        result.failed_checks = [str(failure) for failure in failures]
        if failures:
            return None
        if job.block.checks.pii == "warn":
            kinds = sorted({finding.kind for finding in find_pii(text)})
            if kinds:
                log.warning(
                    "%s: %s: the answer holds personal data (%s), published as checks.pii is warn",
                    job.page.slug,
                    job.block.name,
                    ", ".join(kinds),
                    extra={"event": "pii_published"},
                )
        return text


def _count(result: BlockResult, request: LLMRequest, response: LLMResponse) -> None:
    """Add one call to a block's result: its numbers add up, and the block is "llm" as
    soon as one of its answers came from a model."""
    if response.stale:
        result.source = "stale"
    elif response.cache_tier is None or result.source == "llm":
        result.source = "llm"
    else:
        result.source = "cache"
    result.cache_tier = response.cache_tier
    result.similarity, result.matched_prompt = response.similarity, response.matched_prompt
    result.model = response.model or request.model
    result.input_tokens += response.usage.input_tokens
    result.output_tokens += response.usage.output_tokens
    if response.cache_tier is None:  # the provider's prompt cache served this call's input
        result.cached_input_tokens += response.usage.cached_input_tokens
        result.cache_write_tokens += response.usage.cache_write_tokens
        result.prompt_cache_saved += response.prompt_cache_saved
    result.latency += response.latency
    result.attempts += response.attempts
    result.cost += response.cost
    result.saved += response.saved
    result.batch = result.batch or response.batch


__all__ = [
    "AnswerJudge",
    "JudgeVerdict",
    "Reviewer",
    "check_answer",
    "checks_run",
    "failure_reason",
    "judge_failure",
    "reask_request",
]
