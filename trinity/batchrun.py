"""`trinity build --batch`: the build's batch pass, before its workers run.

Every planned block whose answer is not cached, and whose model is reached through a
provider with a batch API (OpenAI, Anthropic), is asked in a batch at half price::

    plan -> cached? -> by provider -> resume the ledger's batches that ask for these blocks
         -> send a batch of the rest (--max-cost reserves its estimate first)
         -> poll (the observer hears the counts) -> read the results
         -> each answer parsed by the provider's adapter, checked as a live one would be,
            cached under the block's key and handed to the client, which serves it as
            the block's model call (at the batch price; the report says "batch")
         -> what failed (errored, expired): the next batch (`rebatch`, up to
            `llm.batch.rounds` batches), or the live path at once (`then-live`)

Then the build runs as always: every block goes through its checks, and what the batches
did not answer (and blocks of providers without a batch API, said in one line) is asked
live. Nothing here prints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trinity.answers import answer_validator
from trinity.errors import MalformedResponseError
from trinity.llm.batches import (
    BATCH_PROVIDERS,
    BatchCounts,
    BatchLedger,
    BatchResult,
    BatchRunner,
    PendingBatch,
    batch_api,
)
from trinity.llm.batches.ledger import custom_id, endpoint_id
from trinity.llm.batches.runner import Ended
from trinity.llm.client import AsyncLLMClient
from trinity.llm.pricing import (
    BudgetReservation,
    price_for,
    prompt_cache_saving,
    usage_cost,
)
from trinity.llm.ratelimit import reserved_cost
from trinity.llm.settings import BATCH_MODES, Target
from trinity.llm.types import LLMRequest, LLMResponse
from trinity.logs import get_logger
from trinity.plan import Job
from trinity.project import Project
from trinity.report import BuildObserver

log = get_logger(__name__)

# Where the ledger of batches in flight lives, in the cache folder.
LEDGER_FOLDER = "batches"


@dataclass
class BatchSummary:
    """What the batch pass did, for the report (`report.batch`)."""

    mode: str
    sent: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    requests: int = 0
    answered: int = 0
    failed: int = 0
    live: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "batches_sent": self.sent,
            "batches_resumed": self.resumed,
            "requests": self.requests,
            "answered": self.answered,
            "failed": self.failed,
            "live": self.live,
        }


async def batch_pass(
    project: Project,
    client: AsyncLLMClient,
    jobs: list[Job],
    mode: str,
    observer: BuildObserver,
) -> BatchSummary:
    """Answer what can be answered by batch; the jobs then run as in any build."""
    if mode not in BATCH_MODES:
        raise ValueError(f"unknown batch mode {mode!r}")
    summary = BatchSummary(mode)
    wanted: dict[str, dict[str, Job]] = {}
    live: Counter[str] = Counter()
    for job in await _uncached(client, jobs):
        provider = client.router.target(job.request.model).provider
        if provider in BATCH_PROVIDERS:
            wanted.setdefault(provider, {})[custom_id(job.key)] = job
        else:
            live[provider] += 1
    _say_live(live)
    ledger = BatchLedger(_ledger_folder(project))
    for provider, by_id in wanted.items():
        await _Pass(project, client, ledger, provider, by_id, mode, observer, summary).run()
    summary.live.update(live)
    return summary


async def _uncached(client: AsyncLLMClient, jobs: Iterable[Job]) -> list[Job]:
    """The jobs without a fresh cached answer, one per cache key."""
    seen: set[str] = set()
    missing = []
    for job in jobs:
        if job.key in seen:
            continue
        seen.add(job.key)
        if await client.cached(job.request, job.key) is None:
            missing.append(job)
    return missing


def _say_live(live: Counter[str]) -> None:
    for provider, blocks in sorted(live.items()):
        log.warning(
            "%d blocks go to %s live: it has no batch API (--batch works with openai and "
            "anthropic)",
            blocks,
            provider,
            extra={"event": "batch_unsupported", "provider": provider, "blocks": blocks},
        )


def _ledger_folder(project: Project) -> Path:
    """`<cache folder>/batches`: the ledger goes where the cache goes (and CI keeps it)."""
    return project.settings.cache.directory / LEDGER_FOLDER


class _Pass:
    """The batches of one provider's endpoint, round after round."""

    def __init__(
        self,
        project: Project,
        client: AsyncLLMClient,
        ledger: BatchLedger,
        provider: str,
        by_id: dict[str, Job],
        mode: str,
        observer: BuildObserver,
        summary: BatchSummary,
    ) -> None:
        settings = client.settings
        endpoint = client.router.endpoint(provider)
        self.client = client
        self.by_id = by_id
        self.mode = mode
        self.summary = summary
        self.rounds = settings.batch.rounds if mode == "rebatch" else 1
        self.runner = BatchRunner(
            batch_api(
                endpoint,
                client.http_client(),
                timeout=settings.timeout,
                max_bytes=settings.max_response_bytes,
                api_key=endpoint.keys[0].secret if endpoint.keys else None,
            ),
            ledger,
            endpoint_id(provider, endpoint.api_url),
            poll_interval=settings.batch.poll_interval,
            sleep=client.sleep,
            on_progress=lambda c: observer.batch_progress(c.done, c.failed, c.total),
        )
        # --max-cost: each batch's estimate is held from before it is sent (or resumed)
        # until its results are read, then settled with what its answers cost.
        self._held: dict[str, BudgetReservation] = {}

    async def run(self) -> None:
        remaining = set(self.by_id)
        pending = self.runner.resumable(remaining)
        for batch in pending:
            remaining -= batch.custom_ids
            mine = sorted(batch.custom_ids & set(self.by_id))
            self._held[batch.batch_id] = self.client.budget.reserve(self._estimate(mine))
            self.summary.resumed.append(batch.batch_id)
            log.info("resuming batch %s", batch.batch_id, extra={"event": "batch_resumed"})
        number = max((b.round for b in pending), default=0)
        while True:
            if remaining and number < self.rounds:
                number += 1
                pending.append(await self._submit(sorted(remaining), number))
                remaining = set()
            if not pending:
                break
            for ended in await self.runner.wait(pending):
                remaining |= await self._take(ended)
            pending = []
        if remaining:
            self._say_left(remaining)

    async def _submit(self, ids: list[str], number: int) -> PendingBatch:
        items = [(cid, self._sent(self.by_id[cid].request)) for cid in ids]
        held = self.client.budget.reserve(self._estimate(ids))
        try:
            batch = await self.runner.submit(items, number)
        except BaseException:
            self.client.budget.release(held)
            raise
        self._held[batch.batch_id] = held
        self.summary.sent.append(batch.batch_id)
        self.summary.requests += len(items)
        return batch

    def _estimate(self, ids: Iterable[str]) -> float:
        """What a batch asking for `ids` is estimated to cost, at the batch price."""
        total = 0.0
        for cid in ids:
            request = self.by_id[cid].request
            target = self._target(request)
            price = price_for(target.provider, target.model, self.client.settings.prices)
            total += reserved_cost(price, request, batch=True)
        return total

    def _target(self, request: LLMRequest) -> Target:
        return self.client.router.target(request.model)

    def _sent(self, request: LLMRequest) -> LLMRequest:
        """`request` as the batch sends it: with the model's own name, as a live call."""
        model = self._target(request).model
        return request if request.model == model else replace(request, model=model)

    async def _take(self, ended: Ended) -> set[str]:
        """Store what an ended batch answered for this build's jobs; the ids it failed."""
        wanted = ended.batch.custom_ids & set(self.by_id)
        answered: dict[str, float] = {}
        for result in await self.runner.read(ended):
            if result.custom_id in wanted:
                spent = await self._keep(result)
                if spent is not None:
                    answered[result.custom_id] = spent
        self.runner.ledger.remove(ended.batch)
        held = self._held.pop(ended.batch.batch_id, None)
        if held is not None:
            self.client.budget.settle(held, sum(answered.values()))
        failed = set(wanted - answered.keys())
        self.summary.answered += len(answered)
        self.summary.failed += len(failed)
        if failed:
            log.warning(
                "batch %s failed %d of its requests; they are asked %s",
                ended.batch.batch_id,
                len(failed),
                "again live" if self.mode == "then-live" else "again in the next batch",
                extra={"event": "batch_failures", "failed": len(failed)},
            )
        return failed

    async def _keep(self, result: BatchResult) -> float | None:
        """A result's answer, checked as a live answer is, cached under its job's key and
        handed to the client: what it cost; None when there is none or it does not pass."""
        job = self.by_id[result.custom_id]
        if result.response is None:
            log.info("batch request for %s failed: %s", job.page.slug, result.error)
            return None
        response = self._priced(job.request, result.response)
        validate = answer_validator(job.block)
        try:
            if validate is not None:
                validate(response)
        except MalformedResponseError as exc:
            log.info("batch answer for %s refused: %s", job.page.slug, exc)
            return None
        await self.client.answers.store(job.key, response)
        self.client.prefill(job.key, response)
        return response.cost

    def _priced(self, request: LLMRequest, response: LLMResponse) -> LLMResponse:
        target = self._target(request)
        price = price_for(target.provider, target.model, self.client.settings.prices)
        return replace(
            response,
            model=response.model or target.model,
            attempts=1,
            cost=usage_cost(price, response.usage, batch=True),
            prompt_cache_saved=prompt_cache_saving(price, response.usage, batch=True),
            batch=True,
        )

    def _say_left(self, left: set[str]) -> None:
        why = (
            "--batch=then-live"
            if self.mode == "then-live"
            else f"llm.batch.rounds ({self.rounds}) batches failed them"
        )
        log.warning(
            "%d blocks are asked live: %s",
            len(left),
            why,
            extra={"event": "batch_left_live", "blocks": len(left)},
        )


__all__ = ["BatchCounts", "BatchSummary", "batch_pass"]
