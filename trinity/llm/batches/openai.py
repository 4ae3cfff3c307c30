"""OpenAI's Batch API: a JSONL file uploaded (POST /v1/files, purpose batch), a batch made
of it (POST /v1/batches), polled (GET /v1/batches/{id}), and its output and error files
read (GET /v1/files/{id}/content). OpenAI-compatible servers that have it work too."""

from __future__ import annotations

import json
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

ENDPOINT = "/v1/chat/completions"
# A batch in one of these states will not change any more.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatches:
    provider = "openai"

    def __init__(self, wire: BatchHTTP) -> None:
        self.wire = wire
        self.adapter: ProviderAdapter = wire.adapter

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        lines = (
            json.dumps(
                {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": self.adapter.body(r)},
                ensure_ascii=False,
                separators=(",", ":"),
                allow_nan=False,
            )
            for cid, r in items
        )
        content = ("\n".join(lines) + "\n").encode("utf-8")
        uploaded = await self.wire.json(
            "POST",
            "/v1/files",
            files={"file": ("trinity-batch.jsonl", content, "application/jsonl")},
            data={"purpose": "batch"},
        )
        file_id = self._id(uploaded, "file upload")
        made = await self.wire.json(
            "POST",
            "/v1/batches",
            body={"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"},
        )
        return self._id(made, "batch")

    async def status(self, batch_id: str) -> BatchStatus:
        payload = await self.wire.json("GET", f"/v1/batches/{batch_id}")
        state = payload.get("status")
        if not isinstance(state, str):
            raise MalformedResponseError(f"{self.wire.shown}: batch {batch_id} has no status")
        counts = payload.get("request_counts")
        counts = counts if isinstance(counts, Mapping) else {}
        files = (valid_id(payload.get("output_file_id")), valid_id(payload.get("error_file_id")))
        return BatchStatus(
            batch_id,
            state,
            ended=state in ENDED,
            counts=BatchCounts(
                server_count(counts.get("total")),
                server_count(counts.get("completed")),
                server_count(counts.get("failed")),
            ),
            results=tuple(f"/v1/files/{f}/content" for f in files if f is not None),
        )

    async def results(self, status: BatchStatus, expected: int) -> list[BatchResult]:
        found: list[BatchResult] = []
        for path in status.results:
            found.extend(self._result(line) for line in await self.wire.lines(path, expected))
        return found

    def _result(self, line: Any) -> BatchResult:
        """A line of the output or error file: {"custom_id", "response": {"status_code",
        "body"}, "error"}. A line without a custom id we could have sent is skipped."""
        custom_id = _custom_id(line)
        if custom_id is None:
            return BatchResult("", error="a malformed line")
        response = line.get("response")
        if isinstance(response, Mapping) and response.get("status_code") == 200:
            return self.wire.answer(custom_id, response.get("body"))
        error = line.get("error")
        if isinstance(response, Mapping) and isinstance(response.get("body"), Mapping):
            detail = self.adapter.error_detail(response["body"])
        else:
            detail = error.get("message") if isinstance(error, Mapping) else None
        code = response.get("status_code") if isinstance(response, Mapping) else None
        why = detail if isinstance(detail, str) else "failed"
        return BatchResult(custom_id, error=f"HTTP {code}: {why}" if code else why)

    def _id(self, payload: Mapping[str, Any], what: str) -> str:
        found = valid_id(payload.get("id"))
        if found is None:
            raise MalformedResponseError(f"{self.wire.shown}: the {what} answer has no valid id")
        return found


def _custom_id(line: Any) -> str | None:
    if not isinstance(line, Mapping):
        return None
    return valid_id(line.get("custom_id"))
