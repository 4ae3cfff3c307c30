"""A fake LLM server for tests: a real HTTP server on loopback.

``FakeLLMServer`` runs a standard-library ``ThreadingHTTPServer`` in a daemon thread,
bound to ``127.0.0.1`` on a port picked by the OS, and speaks three wire formats:

* **Ollama** -- ``POST /api/chat`` (non-streaming) and ``GET /api/tags``.
* **OpenAI** -- ``POST /v1/chat/completions`` and ``GET /v1/models``.
* **Embeddings** -- ``POST /v1/embeddings`` (OpenAI: ``{"data": [{"embedding": [...]}]}``)
  and ``POST /api/embed`` (Ollama: ``{"embeddings": [[...]]}``), for ``{"model", "input"}``
  where ``input`` is a string or a list of them. The vector is ``fake_embedding(text)``: a
  hashed bag of lower-cased words in ``EMBEDDING_DIMENSIONS`` buckets, normalised, so a
  paraphrase sharing most words is close and another prompt is far. Embedding requests
  are not chat requests (no faults, latency or limits); ``embedding_count`` counts them,
  and ``fail_embeddings(503)`` answers them all with that status (``None``: no longer).
* **Batches** -- OpenAI's Batch API and Anthropic's Message Batches API, with a processing
  delay, injected per-request failures and stats (``server.batches``: tests/fakebatch.py).
* **Anthropic** -- ``POST /v1/messages`` (non-streaming; the ``anthropic-version`` header
  and ``max_tokens`` are required, ``system`` is a top-level string or list of text
  blocks, and ``messages`` may hold only user/assistant turns, else 400), and
  ``GET /v1/models`` with an ``anthropic-version`` header (Anthropic's page shape; 401
  without ``x-api-key``).

Every other method/path gets a 404 JSON error. HTTP/1.1 keep-alive works (every
response carries ``Content-Length``), so pooled clients such as ``httpx`` are fine.

Answers are deterministic. Let ``system`` be the system messages joined by newlines
(``""`` if none; Anthropic: the top-level ``system``) and ``user`` the content of the
*last* user message; then::

    digest = sha256((system + "\\n" + user).encode()).hexdigest()[:12]
    TEXT   = "Generated answer " + digest + ".\\n\\nThis paragraph responds to: "
             + " ".join(user.split())[:60] + "."

When JSON output is requested (Ollama ``"format": "json"`` or a JSON-schema dict in
``format``; OpenAI ``response_format.type`` in ``{"json_object", "json_schema"}``;
Anthropic, which has no JSON mode: ``ANTHROPIC_JSON_INSTRUCTION`` in ``system``, where it and
all after it are left out of the digest, so a system+prompt pair gets the same answer from
every format) TEXT is instead the JSON object string
``{"digest": digest, "items": ["alpha", "beta"], "summary": "Structured answer to: ..."}``
(any schema is ignored). Token counts: input = whitespace-separated words over the
content of all messages, output = words of TEXT.

Test controls (all thread-safe)::

    with FakeLLMServer() as server:          # started on construction
        server.url                           # "http://127.0.0.1:PORT"
        server.script("evil", "<script>x</script>")  # verbatim answer when the last
                                             # user message contains "evil"
        server.script("bio", "Good.", model="strong")  # only for requests to "strong"
        server.script("bio", "Too long.", turn=0)   # a bad first answer to the prompt
        server.script("bio", "Short.", turn=1)      # ... and a good one once corrected
        server.latency = 0.1                 # seconds slept before each chat answer
        server.fail_next(2)                  # next 2 chat requests -> 500 JSON error
        server.fail_next(1, 429, headers={"Retry-After": "1"})
        server.fail_next(1, kind="drop")     # close the connection, no response
        server.fail_next(1, kind="malformed")  # 200 whose body is not JSON
        server.fail_next(1, kind="truncated")  # 200, finish/done/stop_reason "length"
                                             # ("max_tokens" for Anthropic)
        server.fail_next(1, kind="timeout", hang=5)  # answer nothing for 5 s, then hang up
        server.fail_next(1, kind="reset")    # abort the connection (TCP RST)
        server.fail_next(1, kind="huge")     # 200, a well-formed answer of HUGE_BYTES
        server.fail_next(1, kind="endless")  # 200, a chunked body that never ends
        server.fail_next(1, kind="gzip_bomb")  # 200, gzip: GZIP_BOMB_BYTES unpacked
        server.fail_next(1, kind="trickle", hang=2)  # 200, then one byte every 2 s
        server.fail_rate(0.2, kinds=("status", "drop"), statuses=(500, 503), seed=1)
                                             # each chat request fails with p=0.2
        server.fail_rate(0.5, statuses=(429,), headers={"Retry-After": "0.05"})
        server.fail_rate(0)                  # ... and no longer
        server.limit_per_key(10, window=60.0, clock=time.monotonic)
                                             # 10 chat requests per key per window, else 429
        server.limit_per_key(None)           # no limit
        server.rate_limited_count            # chat requests refused with 429 by the limit
        server.fault_count                   # chat requests given an injected fault
        server.answered, server.answered_prompts  # chat requests that got a real answer,
                                             # and their last user messages
        server.requests                      # snapshot list[RecordedRequest], all paths
        server.request_count                 # len(server.requests)
        server.chat_requests, server.chat_count  # only the chat POSTs
        server.max_in_flight                 # peak number of concurrent chat requests
        server.reset()                       # clear log, counters and pending faults
        FakeLLMServer(prompt_cache=True)     # usage reports a prompt cache (see below)

Faults are queued and consumed in order, one per chat request (health checks never
consume them); with no queued fault, ``fail_rate`` may draw one (seeded, so a run is
repeatable when requests arrive in the same order). Faulted requests are still recorded
in the request log, so retry tests can count attempts with ``chat_count``. Latency
applies to faulted requests too.

``limit_per_key`` keeps a sliding window of admitted chat requests per API key (the
``Authorization: Bearer`` token, else ``x-api-key``, else ``""``). A request over the
limit gets 429 at once, before any fault or latency, with ``Retry-After`` (whole seconds
until a slot frees, at least 1), ``x-ratelimit-remaining-requests: 0`` and
``x-ratelimit-reset-requests: Ns``; admitted requests count against the window whatever
their outcome, and their replies carry ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests``. The clock is
injectable, so a test can move time forward instead of waiting.

With ``prompt_cache=True`` the usage of an answer says what a provider's prompt cache did,
in its own format, counting a start of the prompt seen before as cached (a token is a
word, as everywhere here): OpenAI's ``prompt_tokens_details.cached_tokens`` counts the
first (system) message once it was sent before; Anthropic caches only a system prompt's
text blocks up to the last one marked ``cache_control``: the first time, they are
``cache_creation_input_tokens``, after that ``cache_read_input_tokens``, and
``input_tokens`` is the rest. Ollama reports no such thing.

``answered`` holds the chat requests that got a 200 with a well-formed answer (normal,
scripted or "truncated"; not "malformed"), for counting what a rerun really generates.

A corrective re-ask sends the failed answer back as an assistant turn followed by a user
turn saying what was wrong, so its last user message is the correction, not the prompt.
A script with ``turn=N`` therefore matches a request that holds exactly N assistant
messages and whose *first* user message (the prompt) contains the marker: ``turn=0`` is
the first answer, ``turn=1`` the answer after one correction, and so on. ``model=`` limits
a script to requests for that model (the name the server receives), e.g. to make a
cascade's cheap model fail and its strong one pass on one server.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import math
import random
import re
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, cast, get_args

from tests.fakebatch import FakeBatches

__all__ = [
    "ANTHROPIC_CHAT_PATH",
    "ANTHROPIC_JSON_INSTRUCTION",
    "DEFAULT_HANG",
    "EMBEDDING_DIMENSIONS",
    "GZIP_BOMB_BYTES",
    "HUGE_BYTES",
    "MALFORMED_BODY",
    "OLLAMA_CHAT_PATH",
    "OPENAI_CHAT_PATH",
    "FakeLLMServer",
    "FaultKind",
    "RecordedRequest",
    "default_answer",
    "fake_embedding",
    "prompt_digest",
]

OLLAMA_CHAT_PATH = "/api/chat"
OPENAI_CHAT_PATH = "/v1/chat/completions"
ANTHROPIC_CHAT_PATH = "/v1/messages"
CHAT_PATHS = frozenset({OLLAMA_CHAT_PATH, OPENAI_CHAT_PATH, ANTHROPIC_CHAT_PATH})
OPENAI_EMBEDDINGS_PATH = "/v1/embeddings"
OLLAMA_EMBED_PATH = "/api/embed"
EMBEDDING_PATHS = frozenset({OPENAI_EMBEDDINGS_PATH, OLLAMA_EMBED_PATH})
EMBEDDING_DIMENSIONS = 256
_WORD_RE = re.compile(r"[a-z0-9]+")

ANTHROPIC_JSON_INSTRUCTION = "Answer with a single JSON object only."
"""The sentence in an Anthropic ``system`` prompt that asks for JSON (trinity's adapter's)."""

FaultKind = Literal[
    "status",
    "drop",
    "malformed",
    "truncated",
    "timeout",
    "reset",
    "huge",
    "endless",
    "gzip_bomb",
    "trickle",
]
_FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
# Faults whose body is written piece by piece (see ``_Reply.chunks``).
_STREAMED_KINDS = frozenset({"endless", "gzip_bomb", "trickle"})

HUGE_BYTES = 50 * 1024 * 1024
"""Bytes of answer text a "huge" fault sends (as one well-formed answer)."""
GZIP_BOMB_BYTES = 500 * 1024 * 1024
"""Bytes a "gzip_bomb" body inflates to (it is about 500 KB on the wire)."""
_TRICKLE_BYTES = 4096  # a small body: only its pace is hostile

DEFAULT_HANG = 5.0
"""Seconds a "timeout" fault keeps the client waiting (longer than tests' client timeouts)."""

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

MALFORMED_BODY = b'{"message": {"role": "assistant", "content": "this is not valid JSON'
"""Body sent by ``fail_next(kind="malformed")`` (status 200, content-type JSON)."""

_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class RecordedRequest:
    """One request received by the server.

    ``body`` is the parsed JSON body (``None`` when empty or not valid JSON; ``raw``
    keeps the bytes). ``headers`` has lower-cased names.
    """

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    raw: bytes = b""

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path in CHAT_PATHS


@dataclass(frozen=True)
class _Script:
    """A scripted answer and the requests it answers (see ``FakeLLMServer.script``)."""

    substring: str
    text: str
    turn: int | None = None
    model: str | None = None

    def matches(self, msgs: list[dict[str, Any]], model: Any) -> bool:
        if self.model is not None and model != self.model:
            return False
        if self.turn is None:
            return self.substring in _last_user(msgs)
        turns = sum(1 for m in msgs if m.get("role") == "assistant")
        return turns == self.turn and self.substring in _first_user(msgs)


@dataclass(frozen=True)
class _Fault:
    kind: FaultKind
    status: int = 500
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = DEFAULT_HANG


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: dict[str, str]
    answered: bool = False  # a well-formed answer (what ``answered`` records)
    # A body written piece by piece instead of ``body``: chunked, unless ``headers``
    # give a Content-Length. Writing stops when the client hangs up.
    chunks: Iterable[bytes] | None = None


_Hangup = Literal["drop", "reset"]


# --------------------------------------------------------------------------- helpers


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or OpenAI-style list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _anthropic_system(system: Any) -> str:
    """The text of Anthropic's `system`: a string, or text blocks, which it joins as they are."""
    if isinstance(system, list):
        return "".join(
            b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return system if isinstance(system, str) else ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("messages")
    if not isinstance(raw, list):
        return []
    return [m for m in raw if isinstance(m, dict)]


def _last_user(msgs: list[dict[str, Any]]) -> str:
    user_msgs = [m for m in msgs if m.get("role") == "user"]
    return _content_text(user_msgs[-1].get("content")) if user_msgs else ""


def _first_user(msgs: list[dict[str, Any]]) -> str:
    user_msgs = [m for m in msgs if m.get("role") == "user"]
    return _content_text(user_msgs[0].get("content")) if user_msgs else ""


def _api_key(headers: Mapping[str, str]) -> str:
    """The key a request authenticates with (lower-cased header names)."""
    auth = headers.get("authorization", "").strip()
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else auth
    return headers.get("x-api-key", "")


def _word_count(text: str) -> int:
    return len(text.split())


def prompt_digest(system: str, user: str) -> str:
    """The 12-hex digest embedded in default answers."""
    return hashlib.sha256((system + "\n" + user).encode("utf-8")).hexdigest()[:12]


def _snippet(user: str) -> str:
    return _WS_RE.sub(" ", user).strip()[:60]


def default_answer(system: str, user: str, *, json_mode: bool = False) -> str:
    """The answer the server gives when no script matches (exposed for assertions)."""
    digest = prompt_digest(system, user)
    if json_mode:
        obj = {
            "digest": digest,
            "items": ["alpha", "beta"],
            "summary": "Structured answer to: " + _snippet(user),
        }
        return json.dumps(obj)
    # Ends on a full stop: a complete sentence, as the example site's checks ask.
    return "Generated answer " + digest + ".\n\nThis paragraph responds to: " + _snippet(user) + "."


def fake_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The fake server's embedding of ``text``: each lower-cased word counted in a bucket
    picked by its hash, the counts normalised to length 1 (all zeros without a word)."""
    counts = [0.0] * dimensions
    for word in _WORD_RE.findall(text.lower()):
        bucket = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:4], "big")
        counts[bucket % dimensions] += 1.0
    norm = math.sqrt(sum(c * c for c in counts))
    return [c / norm for c in counts] if norm else counts


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


def _error_body(path: str, status: int, message: str) -> bytes:
    if path == ANTHROPIC_CHAT_PATH:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return _json_bytes({"type": "error", "error": {"type": kind, "message": message}})
    if path.startswith("/v1/"):
        return _json_bytes(
            {"error": {"message": message, "type": "fake_error", "param": None, "code": status}}
        )
    return _json_bytes({"error": message})


# --------------------------------------------------------------------------- server


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: FakeLLMServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, close() during latency) are expected in tests.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40ms stalls
    server_version = "FakeLLM/1.0"
    sys_version = ""

    @property
    def owner(self) -> FakeLLMServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        super().setup()
        self.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(method=method, path=path, body=body, headers=headers, raw=raw)
        reply = self.owner._handle(record)
        if not isinstance(reply, _Reply):  # hang up without a response
            self.close_connection = True
            if reply == "reset":
                self._abort()
            return
        if reply.chunks is not None:
            self._send_pieces(reply, reply.chunks)
            return
        self.send_response(reply.status)
        send_headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in send_headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()

    def _send_pieces(self, reply: _Reply, chunks: Iterable[bytes]) -> None:
        """Headers, then each piece as it comes (chunked without a Content-Length)."""
        self.close_connection = True
        chunked = not any(name.lower() == "content-length" for name in reply.headers)
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client hung up, as it should on a body it refuses

    def _abort(self) -> None:
        """Close the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket is really closed only once its file objects are: close them first.
        for stream in (self.wfile, self.rfile):
            with contextlib.suppress(OSError):
                stream.close()
        with contextlib.suppress(OSError):
            self.connection.close()


class FakeLLMServer:
    """Fake Ollama/OpenAI/Anthropic chat server on ``127.0.0.1``; started on construction.

    See the module docstring for the wire formats, the answer rules and the controls.
    """

    def __init__(
        self, *, latency: float = 0.0, models: list[str] | None = None, prompt_cache: bool = False
    ) -> None:
        self._lock = threading.Lock()
        self.prompt_cache = prompt_cache
        self._cached_prefixes: set[str] = set()
        self._closing = threading.Event()
        self._latency = float(latency)
        self.models: list[str] = list(models) if models else ["fake-model"]
        self._scripts: list[_Script] = []
        self._faults: deque[_Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._serial = 0
        self._rng = random.Random(0)
        self._fail_rate = 0.0
        self._rate_kinds: tuple[FaultKind, ...] = ("status",)
        self._rate_statuses: tuple[int, ...] = (500,)
        self._rate_hang = DEFAULT_HANG
        self._rate_headers: dict[str, str] = {}
        self._fault_count = 0
        self._limit: int | None = None
        self._limit_window = 60.0
        self._limit_clock: Callable[[], float] = time.monotonic
        self._windows: dict[str, deque[float]] = {}
        self._rate_limited = 0
        self._answered: list[RecordedRequest] = []
        self._embeddings_status: int | None = None
        self._connections: set[socket.socket] = set()
        self._closed = False
        self._httpd = _HTTPServer(self)
        self.host: str = "127.0.0.1"
        self.port: int = int(self._httpd.server_address[1])
        self.url: str = f"http://{self.host}:{self.port}"
        # The batch endpoints of both providers (tests/fakebatch.py).
        self.batches = FakeBatches(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakellm-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop serving and hang up on open (keep-alive) connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns = list(self._connections)
        self._closing.set()  # wakes handlers sleeping for latency
        self._httpd.shutdown()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeLLMServer(url={self.url!r}, closed={self._closed})"

    # ------------------------------------------------------------------ controls

    @property
    def latency(self) -> float:
        """Seconds slept before answering each chat request (0 = none)."""
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency = float(seconds)

    def script(
        self, substring: str, text: str, *, turn: int | None = None, model: str | None = None
    ) -> None:
        """Answer ``text`` verbatim when the last user message contains ``substring``.

        With ``turn``, only a request holding exactly ``turn`` assistant messages matches,
        and ``substring`` is looked for in its first user message (the prompt; later user
        turns are corrections). With ``model``, only requests for that model match.
        Scripts are checked in registration order; the first match wins. They apply in
        JSON mode too (so they can return malformed JSON). ``reset()`` keeps them.
        """
        with self._lock:
            self._scripts.append(_Script(substring, text, turn, model))

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: str | bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        kind: FaultKind = "status",
        hang: float = DEFAULT_HANG,
    ) -> None:
        """Make the next ``n`` chat requests fail (queued after any pending faults).

        ``kind``:

        * ``"status"`` (default): respond ``status`` with ``body`` (a mapping is sent as
          JSON; default: a JSON error in the endpoint's format) and extra ``headers``,
          e.g. ``fail_next(1, 429, headers={"Retry-After": "1"})``.
        * ``"drop"``: read the request, then close the connection without a response.
        * ``"malformed"``: status 200, JSON content-type, body ``MALFORMED_BODY``.
        * ``"truncated"``: status 200, a well-formed response whose content is the
          normal answer cut to half its length and whose OpenAI ``finish_reason`` /
          Ollama ``done_reason`` is ``"length"`` (Anthropic ``stop_reason``:
          ``"max_tokens"``).
        * ``"timeout"``: read the request, send nothing for ``hang`` seconds (``close()``
          cuts this short), then close the connection without a response.
        * ``"reset"``: read the request, then abort the connection (a TCP RST).
        * ``"huge"``: status 200, a well-formed answer whose text is the normal answer
          repeated to more than ``HUGE_BYTES`` (sent with its Content-Length).
        * ``"endless"``: status 200, a chunked body of spaces that ends only when the
          client hangs up.
        * ``"gzip_bomb"``: status 200, ``Content-Encoding: gzip``, a body of about 500 KB
          that inflates to ``GZIP_BOMB_BYTES`` of spaces (sent whatever the client asked).
        * ``"trickle"``: status 200 and a Content-Length of 4,096, then one byte every
          ``hang`` seconds.

        ``status``/``body``/``headers`` are only used by ``"status"``, except that
        ``headers`` are also added to ``"malformed"``/``"truncated"`` responses.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        _check_kinds([kind])
        if hang < 0:
            raise ValueError("hang must be >= 0")
        if isinstance(body, Mapping):
            body_bytes: bytes | None = _json_bytes(dict(body))
        elif isinstance(body, str):
            body_bytes = body.encode("utf-8")
        else:
            body_bytes = body
        fault = _Fault(
            kind=kind, status=status, body=body_bytes, headers=dict(headers or {}), hang=hang
        )
        with self._lock:
            self._faults.extend([fault] * n)

    def fail_rate(
        self,
        rate: float,
        *,
        kinds: Iterable[FaultKind] = ("status",),
        statuses: Iterable[int] = (500,),
        seed: int = 0,
        hang: float = DEFAULT_HANG,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Make each chat request fail with probability ``rate`` (0 turns this off).

        A failing request gets a fault of a kind drawn from ``kinds`` (as in
        ``fail_next``; a "status" fault answers a status drawn from ``statuses`` with the
        endpoint's JSON error and ``headers``, such as a Retry-After). Draws come from
        ``random.Random(seed)``, reseeded by each call; each request draws afresh, so a
        retried request may succeed. Queued ``fail_next`` faults go first and take no draw.
        """
        kinds = tuple(kinds)
        statuses = tuple(statuses)
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if not kinds:
            raise ValueError("kinds must not be empty")
        _check_kinds(kinds)
        if not statuses:
            raise ValueError("statuses must not be empty")
        if hang < 0:
            raise ValueError("hang must be >= 0")
        with self._lock:
            self._fail_rate = float(rate)
            self._rate_kinds = kinds
            self._rate_statuses = statuses
            self._rate_hang = float(hang)
            self._rate_headers = dict(headers or {})
            self._rng = random.Random(seed)

    def limit_per_key(
        self,
        requests_per_minute: int | None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Admit at most ``requests_per_minute`` chat requests per API key per ``window``
        seconds (a sliding window read from ``clock``); more get 429. ``None`` lifts the
        limit. Each call starts every key's window afresh.
        """
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be >= 1 (or None for no limit)")
        if window <= 0:
            raise ValueError("window must be > 0")
        with self._lock:
            self._limit = requests_per_minute
            self._limit_window = float(window)
            self._limit_clock = clock
            self._windows.clear()

    @property
    def pending_faults(self) -> int:
        """Number of queued faults not yet consumed."""
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Clear the request log, counters, rate-limit windows and pending faults.

        Settings stay: scripts, latency, ``fail_rate`` (its random sequence goes on) and
        ``limit_per_key``.
        """
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._max_in_flight = self._in_flight
            self._fault_count = 0
            self._windows.clear()
            self._rate_limited = 0
            self._answered.clear()
        self.batches.reset()

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received (all paths), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Snapshot of the chat POSTs only (what the LLM "billed")."""
        with self._lock:
            return [r for r in self._requests if r.is_chat]

    @property
    def chat_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.is_chat)

    @property
    def embedding_count(self) -> int:
        """Embedding requests received (either endpoint, answered or failed)."""
        with self._lock:
            return sum(1 for r in self._requests if r.path in EMBEDDING_PATHS)

    def fail_embeddings(self, status: int | None = 503) -> None:
        """Answer every embedding request with ``status`` (``None``: answer them again)."""
        with self._lock:
            self._embeddings_status = status

    @property
    def last_request(self) -> RecordedRequest | None:
        with self._lock:
            return self._requests[-1] if self._requests else None

    @property
    def answered(self) -> list[RecordedRequest]:
        """The chat requests that got a well-formed 200 answer, oldest first."""
        with self._lock:
            return list(self._answered)

    @property
    def answered_prompts(self) -> list[str]:
        """The last user message of each request in ``answered``."""
        with self._lock:
            answered = list(self._answered)
        return [_last_user(_messages(r.body)) for r in answered]

    @property
    def answered_count(self) -> int:
        with self._lock:
            return len(self._answered)

    @property
    def rate_limited_count(self) -> int:
        """Chat requests refused with 429 by ``limit_per_key`` (not ``fail_next`` 429s)."""
        with self._lock:
            return self._rate_limited

    @property
    def fault_count(self) -> int:
        """Chat requests given an injected fault (queued or drawn by ``fail_rate``)."""
        with self._lock:
            return self._fault_count

    @property
    def max_in_flight(self) -> int:
        """Peak number of chat requests being handled at once (since the last reset)."""
        with self._lock:
            return self._max_in_flight

    # ------------------------------------------------------------------ internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _sleep(self, seconds: float) -> None:
        """Sleep at least ``seconds`` (monotonic) unless the server is closing."""
        deadline = time.monotonic() + seconds
        while not self._closing.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._closing.wait(remaining)

    def _handle(self, record: RecordedRequest) -> _Reply | _Hangup:
        with self._lock:
            self._requests.append(record)
        if record.method == "GET" and record.path == "/api/tags":
            return _Reply(200, _json_bytes(self._ollama_tags()), {})
        if record.method == "GET" and record.path == "/v1/models":
            if record.headers.get("anthropic-version"):
                return self._anthropic_models(record)
            return _Reply(200, _json_bytes(self._openai_models()), {})
        if record.method == "POST" and record.path in EMBEDDING_PATHS:
            return self._embeddings(record)
        batched = self.batches.handle(record)
        if batched is not None:
            return batched
        if not record.is_chat:
            msg = f"not found: {record.method} {record.path}"
            return _Reply(404, _error_body(record.path, 404, msg), {})

        refused, limit_headers = self._admit(record)
        if refused is not None:
            return refused
        with self._lock:
            fault = self._faults.popleft() if self._faults else self._draw_fault()
            if fault is not None:
                self._fault_count += 1
            latency = self._latency
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._serial += 1
            serial = self._serial
        try:
            if latency > 0:
                self._sleep(latency)
            if fault is not None and fault.kind == "timeout":
                self._sleep(fault.hang)
                return "drop"
            if self._closing.is_set():
                return "drop"
            reply = self._chat(record, fault, serial)
            if isinstance(reply, _Reply):
                reply = replace(reply, headers={**limit_headers, **reply.headers})
                if reply.answered:
                    with self._lock:
                        self._answered.append(record)
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _embeddings(self, record: RecordedRequest) -> _Reply:
        """The embedding of each input, in the endpoint's format (or the failure asked for)."""
        with self._lock:
            status = self._embeddings_status
        if status is not None:
            return _Reply(status, _error_body(record.path, status, "embeddings unavailable"), {})
        body = record.body if isinstance(record.body, dict) else {}
        given = body.get("input")
        texts = [given] if isinstance(given, str) else given
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _Reply(400, _error_body(record.path, 400, "input must be text"), {})
        vectors = [fake_embedding(text) for text in texts]
        model = body.get("model", "")
        if record.path == OLLAMA_EMBED_PATH:
            return _Reply(200, _json_bytes({"model": model, "embeddings": vectors}), {})
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        words = sum(_word_count(t) for t in texts)
        usage = {"prompt_tokens": words, "total_tokens": words}
        return _Reply(
            200, _json_bytes({"object": "list", "data": data, "model": model, "usage": usage}), {}
        )

    def _draw_fault(self) -> _Fault | None:
        """A fault drawn by ``fail_rate``, or None (call with the lock held)."""
        if self._fail_rate <= 0 or self._rng.random() >= self._fail_rate:
            return None
        kind = self._rng.choice(self._rate_kinds)
        status = self._rng.choice(self._rate_statuses)
        return _Fault(kind=kind, status=status, headers=self._rate_headers, hang=self._rate_hang)

    def _admit(self, record: RecordedRequest) -> tuple[_Reply | None, dict[str, str]]:
        """(a 429 reply, {}) over the per-key limit; else (None, headers for the reply)."""
        with self._lock:
            limit = self._limit
            if limit is None:
                return None, {}
            window = self._limit_window
            now = self._limit_clock()
            stamps = self._windows.setdefault(_api_key(record.headers), deque())
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
            if len(stamps) >= limit:
                self._rate_limited += 1
                wait = max(1, math.ceil(stamps[0] + window - now))
                headers = {
                    "Retry-After": str(wait),
                    "x-ratelimit-limit-requests": str(limit),
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{wait}s",
                }
                message = f"rate limit of {limit} requests per {window:g} s reached"
                return _Reply(429, _error_body(record.path, 429, message), headers), {}
            stamps.append(now)
            reset = max(1, math.ceil(stamps[0] + window - now))
            return None, {
                "x-ratelimit-limit-requests": str(limit),
                "x-ratelimit-remaining-requests": str(limit - len(stamps)),
                "x-ratelimit-reset-requests": f"{reset}s",
            }

    def _chat(self, record: RecordedRequest, fault: _Fault | None, serial: int) -> _Reply | _Hangup:
        path = record.path
        if fault is not None and fault.kind in ("drop", "reset"):
            return "reset" if fault.kind == "reset" else "drop"
        if fault is not None and fault.kind == "status":
            body = fault.body
            if body is None:
                body = _error_body(path, fault.status, f"injected failure (HTTP {fault.status})")
            return _Reply(fault.status, body, fault.headers)
        if fault is not None and fault.kind == "malformed":
            return _Reply(200, MALFORMED_BODY, fault.headers)
        if fault is not None and fault.kind in _STREAMED_KINDS:
            return self._streamed(fault)

        if path == ANTHROPIC_CHAT_PATH and not record.headers.get("anthropic-version"):
            return _Reply(400, _error_body(path, 400, "anthropic-version: header is required"), {})
        req = record.body
        if not isinstance(req, dict):
            return _Reply(400, _error_body(path, 400, "request body must be a JSON object"), {})
        msgs = _messages(req)
        if not msgs:
            return _Reply(400, _error_body(path, 400, "'messages' must be a non-empty list"), {})
        is_ollama = path == OLLAMA_CHAT_PATH
        is_anthropic = path == ANTHROPIC_CHAT_PATH
        if is_anthropic:
            problem = _anthropic_problem(req, msgs)
            if problem:
                return _Reply(400, _error_body(path, 400, problem), {})
        if is_ollama and req.get("stream") is not False:
            # Real Ollama streams NDJSON unless "stream": false is sent explicitly.
            msg = 'fakellm: send "stream": false (Ollama streams by default)'
            return _Reply(400, _error_body(path, 400, msg), {})
        if not is_ollama and req.get("stream"):
            return _Reply(400, _error_body(path, 400, "fakellm does not support streaming"), {})

        text = self._answer_text(req, msgs, path=path)
        truncated = fault is not None and fault.kind == "truncated"
        if truncated:
            text = text[: len(text) // 2]
        if fault is not None and fault.kind == "huge":
            text = (text + " ") * (HUGE_BYTES // (len(text) + 1) + 1)
        n_in = sum(_word_count(_content_text(m.get("content"))) for m in msgs)
        if is_anthropic:
            n_in += _word_count(_anthropic_system(req.get("system")))
        n_out = _word_count(text)
        model = req.get("model") if isinstance(req.get("model"), str) else self.models[0]
        reason = "length" if truncated else "stop"
        extra_headers = fault.headers if fault is not None else {}
        if is_ollama:
            resp: dict[str, Any] = {
                "model": model,
                "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message": {"role": "assistant", "content": text},
                "done": True,
                "done_reason": reason,
                "total_duration": 1_000_000,
                "load_duration": 0,
                "prompt_eval_count": n_in,
                "prompt_eval_duration": 500_000,
                "eval_count": n_out,
                "eval_duration": 500_000,
            }
        elif is_anthropic:
            resp = {
                "id": f"msg_fake{serial:08d}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": n_in,
                    "output_tokens": n_out,
                    **self._anthropic_cache_usage(req.get("system"), n_in),
                },
            }
        else:
            resp = {
                "id": f"chatcmpl-fake{serial:08d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": n_in,
                    "completion_tokens": n_out,
                    "total_tokens": n_in + n_out,
                    **self._openai_cache_usage(msgs),
                },
            }
        return _Reply(200, _json_bytes(resp), extra_headers, answered=True)

    def _seen_before(self, prefix: str) -> bool:
        """Whether this prompt start was sent before (and remember it)."""
        with self._lock:
            seen = prefix in self._cached_prefixes
            self._cached_prefixes.add(prefix)
        return seen

    def _openai_cache_usage(self, msgs: list[dict[str, Any]]) -> dict[str, Any]:
        """OpenAI's usage details: a system message sent before is read from the cache."""
        if not self.prompt_cache:
            return {}
        first = msgs[0] if msgs and msgs[0].get("role") == "system" else None
        prefix = _content_text(first.get("content")) if first else ""
        cached = _word_count(prefix) if prefix and self._seen_before(prefix) else 0
        return {"prompt_tokens_details": {"cached_tokens": cached}}

    def _anthropic_cache_usage(self, system: Any, n_in: int) -> dict[str, Any]:
        """Anthropic's cache counts, which input_tokens leaves out (so "input_tokens" in the
        returned mapping replaces the total `n_in`)."""
        if not self.prompt_cache:
            return {}
        marked = [
            i for i, b in enumerate(system or []) if isinstance(b, dict) and b.get("cache_control")
        ]
        prefix = _anthropic_system(system[: marked[-1] + 1]) if marked else ""
        words = _word_count(prefix)
        read = words if prefix and self._seen_before(prefix) else 0
        written = words - read
        return {
            "input_tokens": n_in - read - written,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        }

    def _streamed(self, fault: _Fault) -> _Reply:
        """A 200 whose body never ends, inflates to GZIP_BOMB_BYTES, or trickles."""
        if fault.kind == "gzip_bomb":
            bomb = _gzip_bomb()
            headers = {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}
            return _Reply(200, b"", {**headers, **fault.headers}, chunks=[bomb])
        if fault.kind == "trickle":
            headers = {"Content-Length": str(_TRICKLE_BYTES)}
            return _Reply(200, b"", {**headers, **fault.headers}, chunks=self._trickle(fault.hang))
        return _Reply(200, b"", fault.headers, chunks=self._endless())

    def _endless(self) -> Iterator[bytes]:
        piece = b" " * 65536
        while not self._closing.is_set():
            yield piece

    def _trickle(self, interval: float) -> Iterator[bytes]:
        for _ in range(_TRICKLE_BYTES):
            if self._closing.is_set():
                return
            yield b" "
            self._sleep(interval)

    def _answer_text(self, req: Mapping[str, Any], msgs: list[dict[str, Any]], *, path: str) -> str:
        system = "\n".join(
            _content_text(m.get("content")) for m in msgs if m.get("role") == "system"
        )
        user = _last_user(msgs)
        with self._lock:
            scripts = list(self._scripts)
        for scripted in scripts:
            if scripted.matches(msgs, req.get("model")):
                return scripted.text
        if path == ANTHROPIC_CHAT_PATH:
            system = _anthropic_system(req.get("system"))
            json_mode = ANTHROPIC_JSON_INSTRUCTION in system
            if json_mode:
                system = system[: system.index(ANTHROPIC_JSON_INSTRUCTION)]
                system = system.removesuffix("\n\n")
        elif path == OLLAMA_CHAT_PATH:
            fmt = req.get("format")
            json_mode = fmt == "json" or isinstance(fmt, dict)
        else:
            rf = req.get("response_format")
            json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
        return default_answer(system, user, json_mode=json_mode)

    def _ollama_tags(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": name if ":" in name else name + ":latest",
                    "model": name if ":" in name else name + ":latest",
                    "modified_at": "2024-01-01T00:00:00Z",
                    "size": 0,
                    "digest": hashlib.sha256(name.encode()).hexdigest(),
                    "details": {"format": "gguf", "family": "fake", "parameter_size": "0B"},
                }
                for name in self.models
            ]
        }

    def _openai_models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "fakellm"}
                for name in self.models
            ],
        }

    def _anthropic_models(self, record: RecordedRequest) -> _Reply:
        """Anthropic's list: one page of ``data[].id``, and 401 without an ``x-api-key``."""
        if not record.headers.get("x-api-key"):
            message = "x-api-key header is required"
            return _Reply(401, _error_body(ANTHROPIC_CHAT_PATH, 401, message), {})
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for name in self.models
        ]
        page = {"data": data, "has_more": False, "first_id": None, "last_id": None}
        if data:
            page.update(first_id=data[0]["id"], last_id=data[-1]["id"])
        return _Reply(200, _json_bytes(page), {})


@functools.cache
def _gzip_bomb() -> bytes:
    """GZIP_BOMB_BYTES of spaces, gzipped (made once, a megabyte at a time)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    megabyte = b" " * (1024 * 1024)
    parts = [packer.compress(megabyte) for _ in range(GZIP_BOMB_BYTES // len(megabyte))]
    return b"".join([*parts, packer.flush()])


def _check_kinds(kinds: Iterable[str]) -> None:
    for kind in kinds:
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(_FAULT_KINDS)}")


def _anthropic_problem(req: Mapping[str, Any], msgs: list[dict[str, Any]]) -> str | None:
    """Why the Messages API would refuse this request with 400, or None."""
    max_tokens = req.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    for m in msgs:
        if m.get("role") not in ("user", "assistant"):
            return (
                f"messages: Unexpected role {m.get('role')!r}. The Messages API accepts a "
                'top-level `system` parameter, not "system" as an input message role.'
            )
    system = req.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return "system: Input should be a valid string or list of text blocks"
    if req.get("stream"):
        return "fakellm does not support streaming"
    return None
