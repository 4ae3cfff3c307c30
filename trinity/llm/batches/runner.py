"""Sending, polling and reading the batches of one endpoint.

A batch is written to the ledger the moment it is made, so an interrupted build leaves it
there for the next one to poll; it leaves the ledger once its results are read. Polling
sleeps with the injectable `sleep`, `poll_interval` seconds at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from trinity.errors import LLMError, LLMStatusError
from trinity.llm.batches.api import BatchAPI, BatchCounts, BatchResult, BatchStatus
from trinity.llm.batches.ledger import BatchLedger, PendingBatch
from trinity.llm.types import LLMRequest
from trinity.logs import get_logger

log = get_logger(__name__)

# Looks in a row at a batch that failed for a reason worth trying again (a 5xx, a timeout)
# before the build gives up on it (it stays in the ledger for the next build).
MAX_FAILED_LOOKS = 5


@dataclass(frozen=True)
class Ended:
    """A batch whose polling is over: its last status, or None when it was dropped (the
    endpoint does not know it: a ledger from elsewhere)."""

    batch: PendingBatch
    status: BatchStatus | None


class BatchRunner:
    """The batches of one endpoint (`endpoint`: its id in the ledger)."""

    def __init__(
        self,
        api: BatchAPI,
        ledger: BatchLedger,
        endpoint: str,
        *,
        poll_interval: float,
        sleep: Callable[[float], Awaitable[None]],
        on_progress: Callable[[BatchCounts], None],
    ) -> None:
        self.api = api
        self.ledger = ledger
        self.endpoint = endpoint
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.on_progress = on_progress

    def resumable(self, wanted: set[str]) -> list[PendingBatch]:
        """The ledger's batches sent to this endpoint that ask for something `wanted`."""
        return [
            b
            for b in self.ledger.batches
            if b.provider == self.api.provider
            and b.endpoint == self.endpoint
            and b.custom_ids & wanted
        ]

    async def submit(self, items: Sequence[tuple[str, LLMRequest]], round: int) -> PendingBatch:
        batch_id = await self.api.submit(items)
        batch = PendingBatch(
            self.api.provider, self.endpoint, batch_id, frozenset(c for c, _ in items), round
        )
        self.ledger.add(batch)
        log.info(
            "batch %s sent: %d requests",
            batch_id,
            len(items),
            extra={"event": "batch_sent", "batch": batch_id, "requests": len(items)},
        )
        return batch

    async def wait(self, batches: Sequence[PendingBatch]) -> list[Ended]:
        """Poll every batch until each has ended; their counts told as they change."""
        ended: dict[str, Ended] = {}
        failed_looks = 0
        latest: dict[str, BatchCounts] = {}
        while True:
            for batch in batches:
                if batch.batch_id in ended:
                    continue
                try:
                    status = await self.api.status(batch.batch_id)
                except LLMError as exc:
                    if _unknown(exc):
                        # A ledger from elsewhere (or a batch the provider has deleted).
                        log.warning(
                            "batch %s cannot be read (%s); its requests are asked again",
                            batch.batch_id,
                            exc,
                        )
                        self.ledger.remove(batch)
                        ended[batch.batch_id] = Ended(batch, None)
                        continue
                    if not exc.retryable or failed_looks >= MAX_FAILED_LOOKS:
                        raise  # the batch stays in the ledger: the next build polls it
                    failed_looks += 1
                    log.info("looking at batch %s failed (%s)", batch.batch_id, exc)
                    continue
                failed_looks = 0
                latest[batch.batch_id] = _known(status.counts, batch)
                if status.ended:
                    ended[batch.batch_id] = Ended(batch, status)
            self.on_progress(_sum(latest.values()))
            if len(ended) == len(batches):
                return [ended[b.batch_id] for b in batches]
            await self.sleep(self.poll_interval)

    async def read(self, done: Ended) -> list[BatchResult]:
        """The results of an ended batch for the custom ids it was sent with; a result for
        any other id, or a malformed line, is left out (and said once)."""
        batch, status = done.batch, done.status
        if status is None:
            return []
        found: dict[str, BatchResult] = {}
        strays = 0
        for result in await self.api.results(status, len(batch.custom_ids)):
            if result.custom_id not in batch.custom_ids or result.custom_id in found:
                strays += 1
                continue
            found[result.custom_id] = result
        if strays:
            log.warning(
                "batch %s answered %d lines that match no request it was sent (malformed, "
                "repeated or for an unknown custom id); they were ignored",
                batch.batch_id,
                strays,
            )
        return list(found.values())


def _unknown(error: LLMError) -> bool:
    """Whether the endpoint says it has no such batch (HTTP 404)."""
    return isinstance(error, LLMStatusError) and error.status == 404


def _known(counts: BatchCounts, batch: PendingBatch) -> BatchCounts:
    """A server's counts, held to the size of the batch sent (they are only shown)."""
    total = len(batch.custom_ids)
    done = min(counts.done, total)
    return BatchCounts(total, done, min(counts.failed, total - done))


def _sum(counts: Iterable[BatchCounts]) -> BatchCounts:
    items = list(counts)
    return BatchCounts(
        sum(c.total for c in items), sum(c.done for c in items), sum(c.failed for c in items)
    )
