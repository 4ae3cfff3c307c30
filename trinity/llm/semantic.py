"""The semantic cache: the answer to the nearest earlier prompt, when it is near enough.

Only a request at temperature 0 qualifies, and only against earlier requests that share
everything else the cache key hashes (provider, server, model, system prompt, sampling,
response format, schema, options: entries.request_fingerprint) except the prompt's own
text, and the same embedder: those form a group, named by a hash. Within a group the
prompts' embeddings are kept as one normalised float32 matrix (numpy, imported only when
the semantic cache is used), so a lookup is one matrix-vector product: about a
millisecond at 10,000 prompts of 768 dimensions, two at 1,536
(benchmarks/semantic_lookup.py). A prompt whose cosine
similarity to the query reaches the threshold (0.95 by default, never below 0.8) is a
match; the client serves its cached answer when that still passes the block's checks.

Vectors are kept with the disk tier and in Redis (cache/vectors.py) and read back as
untrusted: a record of another dimension, with a NaN, or of no length is ignored. An
embedder that fails is one warning, and the semantic cache is off for the rest of the
run: every request is then an exact-match lookup as before, never a failed build.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from trinity.cache.manager import CacheManager
from trinity.cache.vectors import (
    VECTORS_FOLDER,
    DiskVectors,
    RedisVectors,
    VectorRecord,
    VectorStore,
)
from trinity.errors import LLMError
from trinity.llm.embeddings import Embedder, LocalEmbedder, http_embedder
from trinity.llm.entries import is_current_key, request_fingerprint
from trinity.llm.pricing import cost, price_for
from trinity.llm.settings import EmbedderSettings, LLMSettings, SemanticSettings
from trinity.llm.types import LLMRequest
from trinity.logs import get_logger
from trinity.messages import one_line

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from trinity.llm.routes import Routes

    Vector = npt.NDArray[np.float32]

log = get_logger(__name__)

# The cache tier a semantic hit is reported under.
SEMANTIC_TIER = "semantic"
# How much of a matched prompt the report keeps.
MATCHED_PROMPT_CHARS = 200
# Query vectors kept for storing once the model has answered (a build's requests in flight).
_PENDING_LIMIT = 4096


@dataclass(frozen=True)
class Match:
    """The nearest earlier prompt: its answer's cache key, its text, how similar it is."""

    key: str
    prompt: str
    similarity: float


def prompt_text(request: LLMRequest) -> str:
    """What is embedded: the instruction of the last user message (the block's prompt
    without the page's data, LLMRequest.data_chars), else a base model's document."""
    for message in reversed(request.messages):
        if message.role == "user":
            return _split_data(message.content, request.data_chars)[0]
    return request.document or ""


def _split_data(content: str, data_chars: int) -> tuple[str, str]:
    """(instruction, data) of a prompt whose last `data_chars` characters are data."""
    cut = len(content) - min(max(0, data_chars), len(content))
    return content[:cut], content[cut:]


def group_of(provider: str, base_url: str, request: LLMRequest, embedder: EmbedderSettings) -> str:
    """The hash of everything two requests must share for one to be served the other's
    answer: the cache key's fingerprint without the prompt's instruction, and the embedder.

    The prompt's data (a collection page's facts) stays in it: two items of a collection
    differ in their data, and an instruction alike must not give one the other's answer
    (nor the same facts, embedded with two instructions, make them look alike). A base
    model's document stays too: its prompt is the page itself, alike only when the same.
    """
    fingerprint = request_fingerprint(provider, base_url, request)
    messages = fingerprint["messages"]
    last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=None)
    fingerprint["messages"] = [
        [role, _split_data(content, request.data_chars)[1] if index == last_user else content]
        for index, (role, content) in enumerate(messages)
    ]
    fingerprint["embedder"] = [embedder.provider, embedder.api_url, embedder.model]
    canonical = json.dumps(
        fingerprint, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"cannot hash {type(value).__name__}")


class VectorIndex:
    """One group's prompts: a normalised float32 matrix that grows by doubling."""

    def __init__(self, dimensions: int) -> None:
        import numpy as np

        self.dimensions = dimensions
        self._matrix: Vector = np.zeros((64, dimensions), dtype=np.float32)
        self.keys: list[str] = []
        self.prompts: list[str] = []
        self._known: set[str] = set()

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, prompt: str, vector: Vector) -> bool:
        """Add a normalised vector of this index's dimension; False (and nothing added)
        for a key already here."""
        if key in self._known:
            return False
        import numpy as np

        size = len(self.keys)
        if size == len(self._matrix):
            grown = np.zeros((2 * size, self.dimensions), dtype=np.float32)
            grown[:size] = self._matrix
            self._matrix = grown
        self._matrix[size] = vector
        self.keys.append(key)
        self.prompts.append(prompt)
        self._known.add(key)
        return True

    def nearest(self, query: Vector) -> tuple[int, float] | None:
        """The position of the most similar prompt and its cosine similarity."""
        size = len(self.keys)
        if size == 0:
            return None
        import numpy as np

        # BLAS's gemv, on this thread (one_blas_thread): twice as fast as einsum's loop,
        # and, unlike OpenBLAS's pool of threads, steady on a busy machine (BENCHMARKS.md).
        similarities = np.dot(self._matrix[:size], query)
        best = int(similarities.argmax())
        return best, float(similarities[best])


def normalised(values: Any, dimensions: int | None = None) -> Vector | None:
    """`values` (floats or float32 bytes) as a unit float32 vector; None when it is not
    one: of another dimension, not finite, or of no length."""
    import numpy as np

    if isinstance(values, bytes):
        vector = np.frombuffer(values, dtype="<f4").astype(np.float32)
    else:
        vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        return None
    if dimensions is not None and vector.size != dimensions:
        return None
    if not np.isfinite(vector).all():
        return None
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    result: Vector = (vector / norm).astype(np.float32)
    return result


class SemanticCache:
    """Finds the nearest earlier prompt of a request's group, and remembers new ones.

    `stores` keep the vectors between runs (disk, Redis); the index of a group is read
    from them the first time the group is looked up.
    """

    def __init__(
        self,
        settings: SemanticSettings,
        embedder: Embedder,
        stores: list[VectorStore],
        *,
        provider: str,
        base_url: str,
    ) -> None:
        assert settings.embedder is not None
        self.settings = settings
        self.embedder_settings = settings.embedder
        self.embedder = embedder
        self.stores = list(stores)
        self.provider = provider
        self.base_url = base_url
        self.broken = False
        self.lookups = 0
        self.hits = 0
        self._indexes: dict[str, VectorIndex | None] = {}
        self._loading: dict[str, anyio.Lock] = {}
        self._pending: dict[str, Vector] = {}

    def usage(self, prices: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
        """What the embeddings took and cost (at `prices`, the settings' llm.prices, over
        the pinned table), as the build report's `embeddings`."""
        embedder = self.embedder_settings
        price = price_for(embedder.provider, embedder.model, prices)
        return {
            "provider": embedder.provider,
            "model": embedder.model,
            "requests": self.embedder.requests,
            "input_tokens": self.embedder.tokens,
            "cost_usd": round(cost(price, self.embedder.tokens, 0), 8),
            "priced": price is not None,
        }

    def applies(self, request: LLMRequest, wanted: bool | None = None) -> bool:
        """Whether `request` may be served a similar prompt's answer: asked for (`wanted`,
        else the site's `enabled`), at temperature 0, with an embedder that works."""
        return (
            self.settings.asked(wanted)
            and not self.broken
            and request.temperature == 0
            and bool(prompt_text(request))
        )

    def group(self, request: LLMRequest) -> str:
        return group_of(self.provider, self.base_url, request, self.embedder_settings)

    async def nearest(self, request: LLMRequest) -> Match | None:
        """The nearest earlier prompt of the request's group at or above the threshold."""
        self.lookups += 1
        text = prompt_text(request)
        query = await self._embed(text)
        if query is None:
            return None
        group = self.group(request)
        self._pending[f"{group}\n{text}"] = query
        if len(self._pending) > _PENDING_LIMIT:
            self._pending.pop(next(iter(self._pending)))
        index = await self._index(group, len(query))
        found = index.nearest(query) if index is not None else None
        if index is None or found is None or found[1] < self.settings.threshold:
            return None
        position, similarity = found
        return Match(index.keys[position], index.prompts[position], min(similarity, 1.0))

    async def remember(self, request: LLMRequest, key: str) -> None:
        """Add the prompt of a request the model answered (stored under `key`)."""
        text = prompt_text(request)
        group = self.group(request)
        vector = self._pending.pop(f"{group}\n{text}", None)
        if vector is None:
            vector = await self._embed(text)
        if vector is None:
            return
        index = await self._index(group, len(vector))
        if index is None or not index.add(key, text, vector):
            return
        record = VectorRecord(key, text, vector.astype("<f4").tobytes())
        for store in list(self.stores):
            await self._store_call(store, store.add(group, record))

    async def aclose(self) -> None:
        await self.embedder.aclose()

    async def _embed(self, text: str) -> Vector | None:
        if self.broken:
            return None
        try:
            values = await self.embedder.embed(text)
        except LLMError as exc:
            self._break(one_line(exc))
            return None
        vector = normalised(values)
        if vector is None:
            self._break("the embedding has no direction (all zeros)")
        return vector

    def _break(self, why: str) -> None:
        if not self.broken:
            self.broken = True
            log.warning(
                "semantic cache: no embedding (%s); exact matches only for the rest of this run",
                why,
            )

    async def _index(self, group: str, dimensions: int) -> VectorIndex | None:
        """The group's index, read from the stores the first time; None when its vectors
        are of another dimension than this embedder's (another model wrote them)."""
        lock = self._loading.setdefault(group, anyio.Lock())
        async with lock:
            if group not in self._indexes:
                self._indexes[group] = await self._load(group, dimensions)
        index = self._indexes[group]
        return index if index is not None and index.dimensions == dimensions else None

    async def _load(self, group: str, dimensions: int) -> VectorIndex:
        index = VectorIndex(dimensions)
        for store in list(self.stores):
            records = await self._store_call(store, store.load(group)) or []
            for record in records:
                vector = normalised(record.vector, dimensions)
                # A record is data from a file or a server: only a current key of ours,
                # with a vector of this embedder's shape, is kept.
                if vector is not None and is_current_key(record.key):
                    index.add(record.key, record.prompt, vector)
        return index

    async def _store_call(self, store: VectorStore, call: Any) -> Any:
        """A store's call; a store that fails is a warning, and gone for the run."""
        try:
            return await call
        except (OSError, ValueError) as exc:
            if store in self.stores:
                self.stores.remove(store)
                log.warning(
                    "semantic cache: the %s store of vectors failed (%s); going on without it",
                    store.name,
                    one_line(exc),
                )
            return None


def one_blas_thread() -> None:
    """Keep numpy's BLAS (OpenBLAS) on the thread that calls it. Its pool of threads halves
    a lookup's median on an idle machine, but on a busy one took the p99 to 20-250 ms (a
    product waits for every thread of the pool). Only numpy's first import reads the
    setting: once it is imported (by a script that builds from Python) this changes
    nothing, and a user's own setting stands."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def open_semantic(settings: LLMSettings, cache: CacheManager, routes: Routes) -> SemanticCache:
    """The semantic cache `settings.semantic` asks for (it names an embedder), its vectors
    kept beside the cache's disk tier (`semantic/` in its folder) and in its Redis tier."""
    one_blas_thread()
    semantic = settings.semantic
    embedder_settings = semantic.embedder
    assert embedder_settings is not None
    embedder: Embedder
    if embedder_settings.provider == "local":
        embedder = LocalEmbedder(embedder_settings, str(settings.base_dir), settings.threads)
    else:
        embedder = http_embedder(embedder_settings, routes.endpoint_path)
    return SemanticCache(
        semantic,
        embedder,
        vector_stores(cache),
        provider=settings.provider,
        base_url=settings.api_url,
    )


def vector_stores(cache: CacheManager) -> list[VectorStore]:
    """Where a cache's tiers keep vectors: the disk tier's folder, the Redis tier's server."""
    stores: list[VectorStore] = []
    disk = cache.tier("disk")
    directory = getattr(disk, "directory", None)
    if directory is not None:
        stores.append(DiskVectors(directory / VECTORS_FOLDER))
    redis = cache.tier("redis")
    link = getattr(redis, "link", None)
    if link is not None:
        stores.append(RedisVectors(link, getattr(redis, "ttl", None)))
    return stores


def matched_prompt(prompt: str) -> str:
    """A matched prompt as the report keeps it: at most MATCHED_PROMPT_CHARS."""
    if len(prompt) <= MATCHED_PROMPT_CHARS:
        return prompt
    return prompt[: MATCHED_PROMPT_CHARS - 1] + "…"


__all__ = [
    "MATCHED_PROMPT_CHARS",
    "SEMANTIC_TIER",
    "Match",
    "SemanticCache",
    "VectorIndex",
    "group_of",
    "matched_prompt",
    "normalised",
    "open_semantic",
    "prompt_text",
    "vector_stores",
]
