"""Anthropic's Message Batches API: POST /v1/messages/batches with every request's
params, polled (GET /v1/messages/batches/{id}), and its results read from `results_url`
(JSONL), only when that URL is on the configured endpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trinity.errors import MalformedResponseError
from trinity.llm.batches.api import (
    BatchCounts,
    BatchHTTP,
    BatchResult,
    BatchStatus,
    valid_id,
)
from trinity.llm.providers import ProviderAdapter
from trinity.llm.providers.base import server_count
from trinity.llm.types import LLMRequest


class AnthropicBatches:
    provider = "anthropic"

    def __init__(self, wire: BatchHTTP) -> None:
        self.wire = wire
        self.adapter: ProviderAdapter = wire.adapter

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        requests = [{"custom_id": cid, "params": self.adapter.body(r)} for cid, r in items]
        made = await self.wire.json("POST", "/v1/messages/batches", body={"requests": requests})
        found = valid_id(made.get("id"))
        if found is None:
            raise MalformedResponseError(f"{self.wire.shown}: the batch answer has no valid id")
        return found

    async def status(self, batch_id: str) -> BatchStatus:
        payload = await self.wire.json("GET", f"/v1/messages/batches/{batch_id}")
        state = payload.get("processing_status")
        if not isinstance(state, str):
            raise MalformedResponseError(
                f"{self.wire.shown}: batch {batch_id} has no processing_status"
            )
        counts = payload.get("request_counts")
        counts = counts if isinstance(counts, Mapping) else {}
        numbers = {name: server_count(counts.get(name)) for name in _COUNTS}
        failed = numbers["errored"] + numbers["canceled"] + numbers["expired"]
        ended = state == "ended"
        return BatchStatus(
            batch_id,
            state,
            ended=ended,
            counts=BatchCounts(sum(numbers.values()), numbers["succeeded"], failed),
            results=self._results_path(payload.get("results_url"), batch_id) if ended else (),
        )

    def _results_path(self, url: Any, batch_id: str) -> tuple[str, ...]:
        """Where an ended batch's results are: its `results_url`, refused when it names
        another host than the configured endpoint (a MalformedResponseError says so)."""
        if url is None:
            return ()
        path = self.wire.same_endpoint(url) if isinstance(url, str) else None
        if path is None:
            raise MalformedResponseError(
                f"{self.wire.shown}: batch {batch_id} names its results somewhere other than "
                "the configured endpoint; they were not fetched"
            )
        return (path,)

    async def results(self, status: BatchStatus, expected: int) -> list[BatchResult]:
        found: list[BatchResult] = []
        for path in status.results:
            found.extend(self._result(line) for line in await self.wire.lines(path, expected))
        return found

    def _result(self, line: Any) -> BatchResult:
        """{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}."""
        custom_id = valid_id(line.get("custom_id")) if isinstance(line, Mapping) else None
        if custom_id is None:
            return BatchResult("", error="a malformed line")
        result = line.get("result")
        kind = result.get("type") if isinstance(result, Mapping) else None
        if kind == "succeeded" and isinstance(result, Mapping):
            return self.wire.answer(custom_id, result.get("message"))
        if kind == "errored" and isinstance(result, Mapping):
            detail = self.adapter.error_detail(result.get("error"))
            return BatchResult(custom_id, error=f"errored: {detail or 'no detail'}")
        return BatchResult(custom_id, error=str(kind) if isinstance(kind, str) else "no result")


_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
