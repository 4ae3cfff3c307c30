"""Batch APIs at half price: OpenAI's Batch API and Anthropic's Message Batches API.

`api.py` holds what both share (the types, and the HTTP exchange through the build's one
httpx client, bounded and with a deadline); `openai.py` and `anthropic.py` speak each
wire format, every request body and answer going through the provider adapter's own
`body()` and `parse()`; `ledger.py` keeps the ids of the batches in flight with the cache,
so that a re-run polls them instead of paying again; `runner.py` submits, polls and reads
them. Nothing here knows about pages: a batch maps custom ids to requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trinity.llm.batches.anthropic import AnthropicBatches
from trinity.llm.batches.api import BATCH_PROVIDERS, BatchAPI, BatchCounts, BatchHTTP, BatchResult
from trinity.llm.batches.ledger import BatchLedger, PendingBatch
from trinity.llm.batches.openai import OpenAIBatches
from trinity.llm.batches.runner import BatchRunner
from trinity.llm.settings import Endpoint

if TYPE_CHECKING:
    import httpx


def batch_api(
    endpoint: Endpoint,
    http: httpx.AsyncClient,
    *,
    timeout: float,
    max_bytes: int,
    api_key: str | None,
) -> BatchAPI:
    """The batch API of `endpoint`'s provider (one of BATCH_PROVIDERS)."""
    wire = BatchHTTP(endpoint, http, timeout=timeout, max_bytes=max_bytes, api_key=api_key)
    if endpoint.provider == "anthropic":
        return AnthropicBatches(wire)
    return OpenAIBatches(wire)


__all__ = [
    "BATCH_PROVIDERS",
    "BatchAPI",
    "BatchCounts",
    "BatchLedger",
    "BatchResult",
    "BatchRunner",
    "PendingBatch",
    "batch_api",
]
