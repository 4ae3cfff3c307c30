"""Batch APIs at half price: OpenAI's Batch API and Anthropic's Message Batches API.

`api.py` holds what both share (the types, and the HTTP exchange through the build's one
httpx client, bounded and with a deadline); `openai.py` and `anthropic.py` speak each
wire format, every request body and answer going through the provider adapter's own
`body()` and `parse()`; `ledger.py` keeps the ids of the batches in flight with the cache,
so that a re-run polls them instead of paying again; `runner.py` submits, polls and reads
them. Nothing here knows about pages: a batch maps custom ids to requests.
"""

from __future__ import annotations

from trinity.llm.batches.api import BATCH_PROVIDERS, BatchAPI, BatchCounts, BatchResult, batch_api
from trinity.llm.batches.ledger import BatchLedger, PendingBatch
from trinity.llm.batches.runner import BatchRunner

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
