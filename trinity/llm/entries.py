"""What the cache holds for a request: its key, and the entry stored under it.

The key is a versioned SHA-256 over a canonical JSON of everything that shapes an answer.
Two requests get one key exactly when the model would be asked the same thing: same
provider, base URL, model name (the alias the page asked for), messages (system prompts
included), sampling parameters, response format, schema and provider options. The API
key is never part of it.

The entry is the answer as `response_data` shapes it, with the time it was made (what
`cache.ttl` judges). The cache itself stores any JSON value and knows neither shape: both
are versioned here, together, by KEY_VERSION.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from trinity.llm.types import LLMRequest, LLMResponse, response_data, response_from_data

# Bump when the key's inputs or the cached entry's shape change, so old entries miss.
KEY_VERSION = 1


def request_fingerprint(provider: str, base_url: str, request: LLMRequest) -> dict[str, Any]:
    """The canonical description of a request that the cache key hashes."""
    return {
        "v": KEY_VERSION,
        "provider": provider,
        "base_url": base_url.rstrip("/"),
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "temperature": float(request.temperature),
        "top_p": None if request.top_p is None else float(request.top_p),
        "max_tokens": request.max_tokens,
        "response_format": request.response_format,
        "json_schema": request.json_schema,
        "options": dict(request.options),
        "document": request.document,
        "lead": request.lead,
        "stop": list(request.stop),
    }


def cache_key(provider: str, base_url: str, request: LLMRequest) -> str:
    """'v1:<sha256 hex>' for a request."""
    fingerprint = request_fingerprint(provider, base_url, request)
    canonical = json.dumps(
        fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )
    return f"v{KEY_VERSION}:{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def _plain(value: Any) -> Any:
    # Mapping proxies and other read-only views of settings hash as the dicts they show.
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"cannot put {type(value).__name__} in a cache key")


def is_current_key(key: str) -> bool:
    """True for a key of this KEY_VERSION; older ones can never be looked up again."""
    return key.startswith(f"v{KEY_VERSION}:")


def to_entry(response: LLMResponse, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """What the cache stores for an answer: its data and when it was made."""
    return {**response_data(response), "created": now()}


def read_entry(value: Any) -> LLMResponse | None:
    """A cached entry back as a response; None for anything not in our shape (a cache is
    read back from files and servers: any value may be there)."""
    return response_from_data(value)
