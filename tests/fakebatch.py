"""The batch endpoints of the fake LLM server (``FakeLLMServer.batches``).

OpenAI's Batch API::

    POST /v1/files                 multipart: file (JSONL), purpose=batch -> {"id": "file-..."}
    POST /v1/batches               {input_file_id, endpoint, completion_window: "24h"}
    GET  /v1/batches/{id}          status validating|in_progress|completed, request_counts
    GET  /v1/files/{id}/content    the output file, or the error file (JSONL)

Anthropic's Message Batches API (the ``anthropic-version`` header required)::

    POST /v1/messages/batches             {"requests": [{"custom_id", "params"}]}
    GET  /v1/messages/batches/{id}        processing_status in_progress|ended, request_counts,
                                          results_url once ended
    GET  /v1/messages/batches/{id}/results  JSONL of {"custom_id", "result": {...}}

Each request of a batch is answered by the server's own chat handler, as a live call to
the same path would be (same text, same usage numbers). Controls (thread-safe)::

    server.batches.delay = 5.0          # seconds a batch stays in progress (0: ends at
                                        # its first look); changing it applies to every batch
    server.batches.fail_next(3)         # the next 3 requests batched are errored
    server.batches.fail_next(2, kind="expired")
    server.batches.extra_lines = [b'{"custom_id": "x"...}', b"not json"]  # appended to
                                        # every results file
    server.batches.huge = True          # results files get one line of 60 MB
    server.batches.duplicate_text = "x" # results files end with the first request's
                                        # custom id again, answered "x"
    server.batches.results_url_host = "evil.example"  # Anthropic's results_url elsewhere
    server.batches.created              # batches created so far
    server.batches.requests_per_batch   # how many requests each batch held, in order
    server.batches.polls                # GET of a batch's status, so far
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tests.fakellm import FakeLLMServer, RecordedRequest, _Reply

FailKind = Literal["errored", "expired"]


@dataclass
class _Batch:
    provider: Literal["openai", "anthropic"]
    requests: list[tuple[str, Any]]
    created: float
    failures: dict[str, FailKind] = field(default_factory=dict)
    output: bytes | None = None
    errors: bytes | None = None


class FakeBatches:
    """The batch endpoints of one FakeLLMServer; see the module docstring."""

    def __init__(self, server: FakeLLMServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, _Batch] = {}
        self._fail: deque[FailKind] = deque()
        self.delay = 0.0
        self.extra_lines: list[bytes] = []
        self.huge = False
        self.duplicate_text: str | None = None
        self.results_url_host: str | None = None
        self.requests_per_batch: list[int] = []
        self.polls = 0

    @property
    def created(self) -> int:
        with self._lock:
            return len(self.requests_per_batch)

    def fail_next(self, count: int, kind: FailKind = "errored") -> None:
        with self._lock:
            self._fail.extend([kind] * count)

    def reset(self) -> None:
        with self._lock:
            self._files.clear()
            self._batches.clear()
            self._fail.clear()
            self.requests_per_batch.clear()
            self.polls = 0

    # ------------------------------------------------------------------ routing

    def handle(self, record: RecordedRequest) -> _Reply | None:
        """The reply to a batch request; None for a path that is not one."""
        path, method = record.path.rstrip("/"), record.method
        parts = path.split("/")
        if method == "POST" and path == "/v1/files":
            return self._upload(record)
        if method == "POST" and path == "/v1/batches":
            return self._create_openai(record)
        if method == "GET" and len(parts) == 4 and path.startswith("/v1/batches/"):
            return self._status_openai(parts[3])
        if method == "GET" and len(parts) == 5 and parts[2] == "files" and parts[4] == "content":
            return self._file(parts[3])
        if path.startswith("/v1/messages/batches"):
            if not record.headers.get("anthropic-version"):
                return self._reply(400, {"error": {"message": "anthropic-version is required"}})
            if method == "POST" and path == "/v1/messages/batches":
                return self._create_anthropic(record)
            if method == "GET" and len(parts) == 5:
                return self._status_anthropic(parts[4])
            if method == "GET" and len(parts) == 6 and parts[5] == "results":
                return self._results_anthropic(parts[4])
        return None

    def _reply(self, status: int, body: Any) -> _Reply:
        from tests.fakellm import _Reply

        return _Reply(status, json.dumps(body).encode(), {})

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    # ------------------------------------------------------------------ OpenAI

    def _upload(self, record: RecordedRequest) -> _Reply:
        kind = record.headers.get("content-type", "")
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {kind}\r\n\r\n".encode() + record.raw
        )
        fields: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return self._reply(400, {"error": {"message": "expected file and purpose=batch"}})
        file_id = self._new_id("file-")
        with self._lock:
            self._files[file_id] = fields["file"]
        return self._reply(200, {"id": file_id, "object": "file", "purpose": "batch"})

    def _create_openai(self, record: RecordedRequest) -> _Reply:
        body = record.body if isinstance(record.body, dict) else {}
        with self._lock:
            content = self._files.get(str(body.get("input_file_id")))
        if content is None:
            return self._reply(404, {"error": {"message": "no such input file"}})
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return self._reply(400, {"error": {"message": "bad endpoint or completion_window"}})
        requests = []
        for line in content.splitlines():
            item = json.loads(line)
            if item.get("method") != "POST" or item.get("url") != "/v1/chat/completions":
                return self._reply(400, {"error": {"message": "bad line"}})
            requests.append((item["custom_id"], item["body"]))
        batch_id = self._add("openai", requests, "batch_")
        return self._status_openai(batch_id, count=False)

    def _status_openai(self, batch_id: str, *, count: bool = True) -> _Reply:
        batch = self._look(batch_id, count)
        if batch is None:
            return self._reply(404, {"error": {"message": f"no batch {batch_id}"}})
        ended = self._ended(batch)
        failed = len(batch.failures) if ended else 0
        total = len(batch.requests)
        output_id = error_id = None
        if ended:
            self._finish(batch)
            output_id = f"out-{batch_id}"
            error_id = f"err-{batch_id}" if batch.failures else None
        return self._reply(
            200,
            {
                "id": batch_id,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "status": "completed" if ended else "in_progress",
                "output_file_id": output_id,
                "error_file_id": error_id,
                "request_counts": {
                    "total": total,
                    "completed": total - failed if ended else 0,
                    "failed": failed,
                },
            },
        )

    def _file(self, file_id: str) -> _Reply:
        from tests.fakellm import _Reply

        kind, _, batch_id = file_id.partition("-")
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.output is None:
            return self._reply(404, {"error": {"message": f"no file {file_id}"}})
        content = batch.output if kind == "out" else batch.errors or b""
        return _Reply(200, content, {"Content-Type": "application/jsonl"})

    # ------------------------------------------------------------------ Anthropic

    def _create_anthropic(self, record: RecordedRequest) -> _Reply:
        body = record.body if isinstance(record.body, dict) else {}
        items = body.get("requests")
        if not isinstance(items, list) or not items:
            return self._reply(400, {"error": {"message": "requests must be a non-empty list"}})
        requests = [(item["custom_id"], item["params"]) for item in items]
        batch_id = self._add("anthropic", requests, "msgbatch_")
        return self._status_anthropic(batch_id, count=False)

    def _status_anthropic(self, batch_id: str, *, count: bool = True) -> _Reply:
        batch = self._look(batch_id, count)
        if batch is None:
            return self._reply(404, {"type": "error", "error": {"message": f"no {batch_id}"}})
        ended = self._ended(batch)
        if ended:
            self._finish(batch)
        kinds = list(batch.failures.values()) if ended else []
        total = len(batch.requests)
        host = self.results_url_host or f"{self._server.host}:{self._server.port}"
        return self._reply(
            200,
            {
                "id": batch_id,
                "type": "message_batch",
                "processing_status": "ended" if ended else "in_progress",
                "request_counts": {
                    "processing": 0 if ended else total,
                    "succeeded": total - len(kinds) if ended else 0,
                    "errored": kinds.count("errored"),
                    "canceled": 0,
                    "expired": kinds.count("expired"),
                },
                "results_url": (
                    f"http://{host}/v1/messages/batches/{batch_id}/results" if ended else None
                ),
            },
        )

    def _results_anthropic(self, batch_id: str) -> _Reply:
        from tests.fakellm import _Reply

        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None or batch.output is None:
            return self._reply(404, {"type": "error", "error": {"message": "not ended"}})
        return _Reply(200, batch.output, {"Content-Type": "application/binary"})

    # ------------------------------------------------------------------ both

    def _add(
        self, provider: Literal["openai", "anthropic"], requests: list[Any], prefix: str
    ) -> str:
        batch_id = self._new_id(prefix)
        with self._lock:
            failures = {}
            for custom_id, _ in requests:
                if self._fail:
                    failures[custom_id] = self._fail.popleft()
            self._batches[batch_id] = _Batch(provider, requests, time.monotonic(), failures)
            self.requests_per_batch.append(len(requests))
        return batch_id

    def _look(self, batch_id: str, count: bool) -> _Batch | None:
        with self._lock:
            if count:
                self.polls += 1
            return self._batches.get(batch_id)

    def _ended(self, batch: _Batch) -> bool:
        return time.monotonic() >= batch.created + self.delay

    def _finish(self, batch: _Batch) -> None:
        """The batch's results, made once: each request answered by the chat handler."""
        with self._lock:
            if batch.output is not None:
                return
        lines, errors = [], []
        for custom_id, body in batch.requests:
            kind = batch.failures.get(custom_id)
            if batch.provider == "openai":
                line, error = self._openai_line(custom_id, body, kind)
            else:
                line, error = self._anthropic_line(custom_id, body, kind), None
            if line is not None:
                lines.append(line)
            if error is not None:
                errors.append(error)
        lines += self.extra_lines
        if self.duplicate_text is not None:
            lines.append(self._duplicate(batch, self.duplicate_text))
        if self.huge:
            lines.append(b'{"custom_id": "' + b"x" * (60 * 1024 * 1024) + b'"}')
        with self._lock:
            batch.output = b"\n".join(lines) + b"\n"
            batch.errors = b"\n".join(errors) + b"\n" if errors else None

    def _duplicate(self, batch: _Batch, text: str) -> bytes:
        """A second result for the batch's first request, answering `text`."""
        custom_id = batch.requests[0][0]
        usage = {"input_tokens": 1, "output_tokens": 1}
        if batch.provider == "anthropic":
            message = {"content": [{"type": "text", "text": text}], "usage": usage}
            result = {"type": "succeeded", "message": message}
            return json.dumps({"custom_id": custom_id, "result": result}).encode()
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        body = {"choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        response = {"status_code": 200, "body": body}
        return json.dumps({"custom_id": custom_id, "response": response, "error": None}).encode()

    def _answer(self, path: str, body: Any) -> Any:
        from tests.fakellm import RecordedRequest

        headers = {"anthropic-version": "2023-06-01"}
        record = RecordedRequest("POST", path, body, headers, json.dumps(body).encode())
        reply = self._server._chat(record, None, 0)
        assert not isinstance(reply, str)
        return reply.status, json.loads(reply.body)

    def _openai_line(
        self, custom_id: str, body: Any, kind: FailKind | None
    ) -> tuple[bytes | None, bytes | None]:
        if kind is not None:
            code = "batch_expired" if kind == "expired" else "server_error"
            error = {"code": code, "message": f"injected {kind}"}
            line = {"id": f"req-{custom_id[:8]}", "custom_id": custom_id, "response": None}
            return None, json.dumps({**line, "error": error}).encode()
        status, answer = self._answer("/v1/chat/completions", body)
        response = {"status_code": status, "request_id": "fake", "body": answer}
        line = {"id": f"req-{custom_id[:8]}", "custom_id": custom_id, "response": response}
        return json.dumps({**line, "error": None}).encode(), None

    def _anthropic_line(self, custom_id: str, body: Any, kind: FailKind | None) -> bytes:
        if kind == "expired":
            return json.dumps({"custom_id": custom_id, "result": {"type": "expired"}}).encode()
        if kind == "errored":
            error = {"type": "error", "error": {"type": "api_error", "message": "injected"}}
            result = {"type": "errored", "error": error}
            return json.dumps({"custom_id": custom_id, "result": result}).encode()
        status, answer = self._answer("/v1/messages", body)
        if status != 200:
            result = {"type": "errored", "error": answer}
        else:
            result = {"type": "succeeded", "message": answer}
        return json.dumps({"custom_id": custom_id, "result": result}).encode()
