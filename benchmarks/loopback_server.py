"""An OpenAI-compatible chat server on loopback that answers every request after a fixed delay.

`POST /v1/chat/completions` answers, `--latency` seconds after the request arrived, with
a short deterministic text made from the last message (`--style prose`, plain sentences,
or `--style markdown`, a model's usual Markdown: a paragraph with emphasis and code, a
list, and one with a link), `finish_reason` "stop" and token counts. It speaks HTTP/1.1
with keep-alive over asyncio streams and sleeps without blocking, so hundreds of requests
can wait at once and each one takes the latency and nothing more: what a client measures
beyond it is the client's own doing.

`GET /stats` returns what the server has seen: `requests`, `max_in_flight` (the most
requests waiting at once) and `span` (seconds from the first request's arrival to the
last answer's departure); `POST /stats/reset` sets them back to zero.

With `--rpm N` it enforces a rate limit as a provider does: at most N requests admitted
in any `--window` seconds (60), a request past it answered at once with 429, a
`Retry-After` and `x-ratelimit-remaining-requests: 0`. `/stats` then also says how many
were refused (`rate_limited`), the most admitted in any window (`max_in_window`), and how
many distinct prompts were answered and how many answers repeated one (`distinct`,
`repeated`).

Run it as a process of its own, so that it does not take the client's GIL; it prints its
port on stdout once it listens:

    python benchmarks/loopback_server.py --port 0 --latency 0.1

Other benchmark scripts start and stop it with `running_server` (benchmarks/ is not a
package: they put this file's folder on `sys.path` and import `loopback_server`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from machine import stop  # this folder is on sys.path, run as a script or imported

CHAT_PATH = "/v1/chat/completions"
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

FILLER = (
    "This paragraph was written by a loopback server that answers every request "
    "after the same delay, so that a benchmark can see the client's own costs."
)

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
    429: "Too Many Requests",
}
# The key of a payload under which `respond` hands back headers to send with it.
HEADERS = "__headers__"


class ChatServer:
    """The request handler and its counters."""

    def __init__(
        self,
        latency: float,
        words: int,
        style: str = "prose",
        rpm: int | None = None,
        window: float = 60.0,
    ) -> None:
        self.latency = latency
        self.words = words
        self.answer = ANSWER_STYLES[style]
        self.rpm = rpm
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.admitted: deque[float] = deque()  # arrivals in the current window
        self.arrivals: list[float] = []  # every admitted arrival, for max_in_window
        self.prompts: dict[str, int] = {}
        self.rate_limited = 0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_arrival: float | None = None
        self.last_departure: float | None = None

    def stats(self) -> dict[str, Any]:
        span = (
            self.last_departure - self.first_arrival
            if self.first_arrival is not None and self.last_departure is not None
            else 0.0
        )
        return {
            "requests": self.requests,
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight,
            "span": round(span, 6),
            "rate_limited": self.rate_limited,
            "max_in_window": self.max_in_window(),
            "distinct": len(self.prompts),
            "repeated": sum(count - 1 for count in self.prompts.values()),
        }

    def max_in_window(self) -> int:
        """The most admitted requests that arrived within any `window` seconds."""
        most, first = 0, 0
        for last, arrived in enumerate(self.arrivals):
            while arrived - self.arrivals[first] >= self.window:
                first += 1
            most = max(most, last - first + 1)
        return most

    def refusal(self, arrived: float) -> tuple[int, Any] | None:
        """A 429 when a request arriving now would pass `--rpm`; else None (admitted)."""
        if self.rpm is None:
            return None
        admitted = self.admitted
        while admitted and arrived - admitted[0] >= self.window:
            admitted.popleft()
        if len(admitted) < self.rpm:
            admitted.append(arrived)
            self.arrivals.append(arrived)
            return None
        self.rate_limited += 1
        wait = max(1, math.ceil(admitted[0] + self.window - arrived))
        return 429, {
            "error": {"message": "rate limit reached", "type": "requests"},
            HEADERS: {
                "Retry-After": str(wait),
                "x-ratelimit-limit-requests": str(self.rpm),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{wait}s",
            },
        }

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                request = await read_request(reader)
                if request is None:
                    break
                method, target, headers, body = request
                status, payload = await self.respond(method, target, body)
                # A chunked body was left unread: the connection cannot carry on.
                keep_alive = body is not None and headers.get("connection", "").lower() != "close"
                writer.write(encode_response(status, payload, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (
            ConnectionError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def respond(self, method: str, target: str, body: bytes | None) -> tuple[int, Any]:
        path = target.split("?", 1)[0]
        if body is None:
            return 411, {"error": {"message": "a body needs Content-Length"}}
        if method == "POST" and path == CHAT_PATH:
            return await self.chat(body)
        if method == "GET" and path == "/stats":
            return 200, self.stats()
        if method == "POST" and path == "/stats/reset":
            self.reset()
            return 200, self.stats()
        return 404, {"error": {"message": f"no route for {method} {path}"}}

    async def chat(self, body: bytes) -> tuple[int, Any]:
        arrived = time.monotonic()
        refused = self.refusal(arrived)
        if refused is not None:
            return refused
        if self.first_arrival is None:
            self.first_arrival = arrived
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            try:
                request = json.loads(body)
                messages = request["messages"]
                prompt = str(messages[-1]["content"])
            except (ValueError, KeyError, IndexError, TypeError):
                return 400, {"error": {"message": "expected a chat completions request"}}
            self.prompts[prompt] = self.prompts.get(prompt, 0) + 1
            # Sleep until the deadline, not for the latency: parsing is not added to it.
            await asyncio.sleep(max(0.0, arrived + self.latency - time.monotonic()))
            text = self.answer(prompt, self.words)
            prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
            return 200, {
                "id": f"chatcmpl-{self.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(request.get("model", "loopback")),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": max(1, prompt_chars // 4),
                    "completion_tokens": len(text.split()),
                    "total_tokens": max(1, prompt_chars // 4) + len(text.split()),
                },
            }
        finally:
            self.in_flight -= 1
            self.last_departure = time.monotonic()


def answer_text(prompt: str, words: int) -> str:
    """A deterministic answer of about `words` words that starts from the prompt.

    Written as a model's answer that passes the default checks is: complete sentences, no
    two alike (each filler sentence is numbered), so a build spends on its checks what a
    good answer costs, not on repairs and re-asks of a looping one.
    """
    seed = " ".join(prompt.split()[:12])
    filler = FILLER.rstrip(".").split()
    body = [filler[i % len(filler)] for i in range(max(0, words - len(seed.split())))]
    size = len(filler)
    sentences = [
        f"Part {n + 1}: {' '.join(body[start : start + size])}."
        for n, start in enumerate(range(0, len(body), size))
    ]
    return f"{seed.rstrip('.')}. {' '.join(sentences)}".strip()


def markdown_answer_text(prompt: str, words: int) -> str:
    """`answer_text`'s sentences laid out as a model writes Markdown: an opening paragraph
    with bold, emphasis and inline code, a bullet list, and a closing paragraph with a
    link, so that rendering an answer costs what a real one costs. About `words` words;
    complete, distinct sentences, as `answer_text`'s."""
    seed, *sentences = re.split(r"(?<=\.) (?=Part \d+:)", answer_text(prompt, words))
    if len(sentences) < 3:  # too few words for a list: one paragraph
        return " ".join([seed, *sentences])
    opening, *listed, closing = sentences
    opening = opening.replace("Part 1:", "**Part 1:**", 1).replace("loopback", "`loopback`", 1)
    items = [re.sub(r"^(Part \d+:)", r"- *\1*", sentence) for sentence in listed]
    closing = re.sub(r"^Part (\d+):", r"[Part \1](https://example.com/parts/\1):", closing)
    return "\n\n".join([f"{seed} {opening}", "\n".join(items), closing])


ANSWER_STYLES: dict[str, Callable[[str, int], str]] = {
    "prose": answer_text,
    "markdown": markdown_answer_text,
}


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes | None] | None:
    """One request (method, target, lower-cased headers, body); None at end of stream.

    The body is None when the request has one without a Content-Length (chunked), which
    this small server does not read.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    if len(head) > MAX_HEAD:
        raise ConnectionError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        return method, target, headers, None
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ConnectionError("request body too large")
    body = await reader.readexactly(length) if length else b""
    return method, target, headers, body


def encode_response(status: int, payload: Any, keep_alive: bool) -> bytes:
    """The response; a payload's `HEADERS` entry (a dict) is sent as headers, not JSON."""
    extra = payload.pop(HEADERS, {}) if isinstance(payload, dict) else {}
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in extra.items())
        + "\r\n"
    )
    return head.encode("latin-1") + body


async def serve(
    host: str,
    port: int,
    latency: float,
    words: int,
    style: str,
    rpm: int | None = None,
    window: float = 60.0,
) -> None:
    chat = ChatServer(latency, words, style, rpm, window)
    server = await asyncio.start_server(chat.serve_connection, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


# ---------------------------------------------------------------------- for other scripts


@dataclass
class RunningServer:
    """A loopback server started by `running_server`."""

    port: int
    latency: float
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def reset(self) -> dict[str, Any]:
        return self._call("POST", "/stats/reset")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=b"" if method == "POST" else None)
            data: dict[str, Any] = json.loads(connection.getresponse().read())
            return data
        finally:
            connection.close()


@contextlib.contextmanager
def running_server(
    latency: float, *, words: int = 60, style: str = "prose", rpm: int | None = None
) -> Iterator[RunningServer]:
    """Start the server in a process of its own on a free loopback port; stop it after."""
    options = ["--latency", str(latency), "--words", str(words), "--style", style]
    if rpm is not None:
        options += ["--rpm", str(rpm)]
    process = subprocess.Popen(
        [sys.executable, __file__, "--port", "0", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            raise RuntimeError(f"the loopback server did not start (it said {line!r})")
        yield RunningServer(int(line), latency, process)
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--words", type=int, default=60, help="words in each answer")
    parser.add_argument("--style", choices=sorted(ANSWER_STYLES), default="prose")
    parser.add_argument("--rpm", type=int, default=None, help="requests per window, else 429")
    parser.add_argument("--window", type=float, default=60.0, help="the --rpm window, seconds")
    args = parser.parse_args()
    asyncio.run(
        serve(args.host, args.port, args.latency, args.words, args.style, args.rpm, args.window)
    )


if __name__ == "__main__":
    main()
