"""Embeddings for the semantic cache: a prompt's vector, from a server or the local model.

Servers are an OpenAI-compatible `/v1/embeddings` or Ollama's `/api/embed`, spoken to
through the build's one httpx client with the bounds of a chat request (llm/http.py); the
local model is llama.cpp in a child process of its own (providers/embedworker.py), so a
crash there is a failed embedding, never a dead build. A vector that comes back is
untrusted: it must be a non-empty list of at most MAX_DIMENSIONS finite numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from trinity.errors import MalformedResponseError, ModelFailed
from trinity.llm.providers.base import server_count
from trinity.llm.settings import EmbedderSettings, Endpoint

if TYPE_CHECKING:
    from trinity.llm.http import HTTPBackend

# Wider than any embedding model's (OpenAI's largest has 3,072 dimensions).
MAX_DIMENSIONS = 16_384
EMBEDDING_PATHS = {"openai": "/v1/embeddings", "ollama": "/api/embed"}


class Embedder(Protocol):
    """A text's embedding; an LLMError when none can be had. `requests` counts the texts
    embedded, `tokens` the input tokens the server said they took (what they cost)."""

    requests: int
    tokens: int

    async def embed(self, text: str) -> list[float]: ...
    async def aclose(self) -> None: ...


def checked_vector(value: Any, where: str) -> list[float]:
    """`value` as a vector, or MalformedResponseError naming `where` it came from."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_DIMENSIONS:
        raise MalformedResponseError(f"{where} sent no embedding vector")
    if not all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value
    ):
        raise MalformedResponseError(f"{where} sent an embedding that is not all numbers")
    return [float(x) for x in value]


def embedding_in(provider: str, payload: Any) -> Any:
    """Where a server's answer keeps the (first) embedding, in each wire format."""
    if not isinstance(payload, dict):
        return None
    if provider == "ollama":
        vectors = payload.get("embeddings")
        return vectors[0] if isinstance(vectors, list) and vectors else None
    data = payload.get("data")
    first = data[0] if isinstance(data, list) and data else None
    return first.get("embedding") if isinstance(first, dict) else None


def embedding_tokens(provider: str, payload: Any) -> int:
    """The input tokens a server's answer says the embedding took (0 when it does not say):
    OpenAI's usage.prompt_tokens, Ollama's prompt_eval_count."""
    if not isinstance(payload, dict):
        return 0
    usage = payload if provider == "ollama" else payload.get("usage")
    name = "prompt_eval_count" if provider == "ollama" else "prompt_tokens"
    return server_count(usage.get(name)) if isinstance(usage, dict) else 0


class HTTPEmbedder:
    """Embeddings from a server's endpoint (`EMBEDDING_PATHS` by provider)."""

    def __init__(self, settings: EmbedderSettings, backend: HTTPBackend) -> None:
        self.settings = settings
        self.backend = backend
        self.requests = 0
        self.tokens = 0

    async def embed(self, text: str) -> list[float]:
        body = {"model": self.settings.model, "input": text}
        payload = await self.backend.post(body, self.settings.api_key)
        vector = checked_vector(embedding_in(self.settings.provider, payload), self.backend.shown)
        self.requests += 1
        self.tokens += embedding_tokens(self.settings.provider, payload)
        return vector

    async def aclose(self) -> None:
        await self.backend.aclose()


def http_embedder(
    settings: EmbedderSettings, endpoint_path: Callable[[Endpoint, str, float], HTTPBackend]
) -> HTTPEmbedder:
    """An HTTPEmbedder for `settings`, its backend made by `endpoint_path` (Routes')."""
    endpoint = Endpoint(settings.provider, settings.api_url)
    path = EMBEDDING_PATHS[settings.provider]
    return HTTPEmbedder(settings, endpoint_path(endpoint, path, settings.timeout))


# The longest line the worker may answer with: a vector of MAX_DIMENSIONS numbers in JSON.
_MAX_LINE = MAX_DIMENSIONS * 32


class LocalEmbedder:
    """Embeddings from a GGUF model through llama.cpp, in a child process started on the
    first call and asked one text at a time (JSON lines on its stdin and stdout)."""

    def __init__(self, settings: EmbedderSettings, base_dir: str, threads: int | None) -> None:
        self.settings = settings
        self.command = [
            sys.executable,
            "-m",
            "trinity.llm.providers.embedworker",
            settings.model,
            base_dir,
            str(threads or 0),
        ]
        self._process: Process | None = None
        self._replies: BufferedByteReceiveStream | None = None
        self._lock = anyio.Lock()
        self.requests = 0
        self.tokens = 0  # not counted: the local model costs nothing

    async def embed(self, text: str) -> list[float]:
        async with self._lock:
            with anyio.move_on_after(self.settings.timeout):
                vector = await self._ask(text)
                self.requests += 1
                return vector
            await self.aclose()  # its next answer would be to this question: start anew
            raise ModelFailed(
                f"the local embedding model gave no vector within {self.settings.timeout:g} s"
            )

    async def _ask(self, text: str) -> list[float]:
        process, replies = await self._started()
        assert process.stdin is not None
        try:
            await process.stdin.send(json.dumps({"text": text}).encode("utf-8") + b"\n")
            line = await replies.receive_until(b"\n", _MAX_LINE)
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.DelimiterNotFound,
        ) as exc:
            await self.aclose()
            raise ModelFailed(f"the local embedding model stopped ({type(exc).__name__})") from None
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and isinstance(reply.get("error"), str):
            raise ModelFailed(f"the local embedding model failed: {reply['error'][:300]}")
        vector = reply.get("vector") if isinstance(reply, dict) else None
        return checked_vector(vector, "the local embedding model")

    async def _started(self) -> tuple[Process, BufferedByteReceiveStream]:
        if self._process is None or self._replies is None:
            try:
                # llama.cpp writes its notes to file descriptor 2: not onto the console.
                self._process = await anyio.open_process(self.command, stderr=subprocess.DEVNULL)
            except OSError as exc:
                raise ModelFailed(f"cannot start the local embedding model: {exc}") from None
            assert self._process.stdout is not None
            self._replies = BufferedByteReceiveStream(self._process.stdout)
        return self._process, self._replies

    async def aclose(self) -> None:
        process, self._process, self._replies = self._process, None, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


__all__ = [
    "EMBEDDING_PATHS",
    "MAX_DIMENSIONS",
    "Embedder",
    "HTTPEmbedder",
    "LocalEmbedder",
    "checked_vector",
    "embedding_in",
    "embedding_tokens",
    "http_embedder",
]
