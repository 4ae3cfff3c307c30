"""The embedded model's worker process: llama.cpp runs there, never in the build.

Native code can die in ways Python cannot catch: a llama-cpp-python built with native CPU
tuning on one machine executes AMX or AVX-512 instructions on another and is killed by
SIGSEGV or SIGILL. In the build's own process that kills the build silently, with no log
and no message. So one child process owns the llama context; the build sends it requests
over a socket pair and reads the answers back. When the child dies, the build says so
(`ModelCrashed`: the signal, the likely cause, the fix), starts it again once, and fails
only the blocks it still owed; answers already received are cached by then.

The child decodes several blocks together (batched.py), so the wire is multiplexed: each
request carries an id, the child reads new requests between its decode steps and answers
each as it finishes, in any order. In the build, whichever caller is waiting reads for
all of them and hands each answer to the caller it belongs to (`ModelWorker`). A caller
that gives up (cancelled) tells the child to drop its request; an answer that still
comes for it is dropped by its id, so it never reaches another caller.

The wire format is length-prefixed JSON (multiprocessing's Connection framing over a
socket pair): nothing read back from the child is unpickled, and everything it sends is
checked (its size, its shape, its ids). The child gets no secrets: only the model's own
settings.

    parent                                  child (python -m trinity.llm.providers.worker FD)
    {"hello": settings, "factory", "path"}  ->
                                            <-  {"ready": true} | {"error": "..."}
    {"id": 1, "request": {...}}             ->
    {"id": 2, "request": {...}}             ->
    {"cancel": 1}                           ->
                                            <-  {"id": 2, "response": {...}, "waited": s}
                                                | {"id": 2, "error": "..."}
    (socket closed)                         ->  exits

The child writes Python's fatal-error trace (faulthandler: the native crash's signal and
the Python stack) and llama.cpp's own notes to a temporary file that the parent reads: a
crash's trace goes into the error log as one record, notes into the debug log.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import itertools
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from trinity.errors import ModelCrashed, ModelFailed
from trinity.llm.settings import LLMSettings
from trinity.llm.types import (
    LLMRequest,
    LLMResponse,
    Message,
    response_data,
    response_from_data,
)
from trinity.logs import get_logger
from trinity.messages import one_line

if TYPE_CHECKING:
    from trinity.llm.providers.batched import Engine, Outcome

log = get_logger(__name__)

# The function that loads the model in the child, as "module:function". It is given the
# model's LLMSettings and returns what local.Generator describes (llama_cpp.Llama).
DEFAULT_FACTORY = "trinity.llm.providers.local:load_llama"
# A crash costs one restart; a second one ends the model for the rest of the build.
RESTARTS = 1
# How long a worker may take to exit once asked (its socket closed) before it is killed.
EXIT_GRACE = 5.0
# How much of the child's trace file a crash record carries (its end: the fatal stack).
TRACE_LIMIT = 16_000
# The longest message the child may send: an answer of max_response_bytes with room for
# JSON's escapes. A longer one is a broken child, not an answer.
MAX_MESSAGE = 32 * 1024 * 1024
# The most characters of the child's own account of a failure that reach an error.
REASON_LIMIT = 2_000
# How much is read from the child's socket at once.
READ_SIZE = 256 * 1024

# Signals that mean native code faulted: most often a build for another CPU.
_FAULTS = frozenset({"SIGSEGV", "SIGILL", "SIGBUS", "SIGFPE", "SIGABRT"})
FIX_BUILD = (
    "most likely llama-cpp-python was built for another CPU (native tuning such as AMX); "
    "rebuild it portable with `make rebuild-llama`, then run `trinity doctor`"
)
FIX_MEMORY = "most likely the system ran out of memory; lower llm.context or free some memory"


# ---------------------------------------------------------------------------- the wire


def encode_request(request: LLMRequest) -> dict[str, Any]:
    """A request as JSON-ready data (what the child needs to generate, and only that)."""
    return {
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "top_p": request.top_p,
        "response_format": request.response_format,
        "json_schema": dict(request.json_schema) if request.json_schema is not None else None,
        "options": dict(request.options),
        "document": request.document,
        "lead": request.lead,
        "stop": list(request.stop),
    }


def decode_request(data: dict[str, Any]) -> LLMRequest:
    schema = data["json_schema"]
    return LLMRequest(
        model=data["model"],
        messages=tuple(Message(role, content) for role, content in data["messages"]),
        temperature=float(data["temperature"]),
        max_tokens=int(data["max_tokens"]),
        top_p=data["top_p"],
        response_format=data["response_format"],
        json_schema=MappingProxyType(schema) if schema is not None else None,
        options=MappingProxyType(data["options"]),
        document=data["document"],
        lead=data["lead"],
        stop=tuple(data["stop"]),
    )


def decode_response(data: Any) -> LLMResponse:
    """The child's answer (`response_data`'s shape); ModelFailed when it is not that."""
    response = response_from_data(data)
    if response is None:
        raise ModelFailed("the embedded model's worker sent a malformed answer")
    return response


def model_settings(settings: LLMSettings) -> dict[str, Any]:
    """What the child needs of the settings to load the model: no keys, no endpoints."""
    return {
        "model": settings.model,
        "context": settings.context,
        "threads": settings.threads,
        "sequences": settings.sequences,
        "style": settings.style,
        "base_dir": str(settings.base_dir),
    }


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode("utf-8")


def _decode(data: bytes) -> dict[str, Any]:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a message is not a JSON object")
    return message


def _send(connection: Connection, message: dict[str, Any]) -> None:
    connection.send_bytes(_encode(message))


def _receive(connection: Connection) -> dict[str, Any]:
    return _decode(connection.recv_bytes())


class Channel:
    """The build's end of the child's socket, for the event loop: whole messages out and
    in, with multiprocessing's framing (a 4-byte big-endian length, then the JSON).

    Reading waits for the socket without a thread, so a reader that is cancelled leaves
    nothing half read: the bytes stay in the buffer for the next one. A message longer
    than MAX_MESSAGE, or not JSON, is a broken child (ValueError).
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._buffer = bytearray()
        self._sending = anyio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        data = _encode(message)
        frame = memoryview(struct.pack("!i", len(data)) + data)
        # Shielded: a frame cut off in the middle would garble every message after it.
        with anyio.CancelScope(shield=True):
            async with self._sending:
                while frame:
                    try:
                        frame = frame[self.sock.send(frame) :]
                    except BlockingIOError:
                        await anyio.wait_writable(self.sock)

    async def receive(self) -> dict[str, Any]:
        """The next message; EOFError when the child has closed its end."""
        while (data := self._next_frame()) is None:
            await anyio.wait_readable(self.sock)
            try:
                chunk = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                continue
            if not chunk:
                raise EOFError("the worker closed its socket")
            self._buffer += chunk
        return _decode(data)

    def _next_frame(self) -> bytes | None:
        if len(self._buffer) < 4:
            return None
        (size,) = struct.unpack("!i", self._buffer[:4])
        if not 0 <= size <= MAX_MESSAGE:
            raise ValueError(f"a message of {size} bytes")
        if len(self._buffer) < 4 + size:
            return None
        data = bytes(self._buffer[4 : 4 + size])
        del self._buffer[: 4 + size]
        return data

    def close(self) -> None:
        # Wakes a reader waiting on the socket (ClosedResourceError) before it goes.
        anyio.notify_closing(self.sock)
        self.sock.close()


# ---------------------------------------------------------------------------- crashes


def crash_error(returncode: int) -> ModelCrashed:
    """The error for a worker that died with `returncode`: what, the likely cause, the fix."""
    if returncode >= 0:
        summary = f"the embedded model's worker exited unexpectedly (exit code {returncode})"
        return ModelCrashed(summary, returncode=returncode)
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    if name in _FAULTS:
        summary, fix = f"the embedded model crashed ({name}) in llama.cpp", FIX_BUILD
    elif name == "SIGKILL":
        summary, fix = "the embedded model was killed (SIGKILL)", FIX_MEMORY
    else:
        summary, fix = f"the embedded model was stopped by {name}", ""
    return ModelCrashed(summary, fix=fix, returncode=returncode)


class _Restart(Exception):
    """The child died owing this request, and may be started again: ask the new one."""


@dataclass(eq=False)
class _Ticket:
    """One request the child owes: settled by its reply, or by the child's end."""

    ident: int
    wake: anyio.Event = field(default_factory=anyio.Event)
    reply: dict[str, Any] | None = None
    failure: ModelFailed | _Restart | None = None

    @property
    def settled(self) -> bool:
        return self.reply is not None or self.failure is not None

    def settle(
        self, reply: dict[str, Any] | None = None, failure: ModelFailed | _Restart | None = None
    ) -> None:
        self.reply, self.failure = reply, failure
        self.wake.set()

    def nudge(self) -> None:
        """Wake the caller so it looks again (to read for everyone, now that nobody does)."""
        self.wake.set()


@dataclass(eq=False)
class _Process:
    """One running child: the process, our end of its socket, its trace file, and the
    requests it owes."""

    popen: subprocess.Popen[bytes]
    channel: Channel
    trace: IO[bytes]
    ready: bool = False
    notes: str = ""  # what the child wrote to its trace file, read when it ended
    owed: dict[int, _Ticket] = field(default_factory=dict)
    reading: bool = False  # one caller reads for all at a time
    gone: anyio.Event | None = None  # set once it is known why the child is gone
    ended: ModelFailed | _Restart | None = None  # that reason: what every owed request gets

    def read_trace(self) -> str:
        try:
            size = self.trace.seek(0, os.SEEK_END)
            self.trace.seek(max(0, size - TRACE_LIMIT))
            return self.trace.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def wait(self) -> int | None:
        """Wait for the child to exit once its socket is closed, kill it if it lingers;
        its status (a blocking call: run it on a thread)."""
        try:
            returncode = self.popen.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            returncode = self.popen.wait()
        if not self.trace.closed:
            self.notes = self.read_trace()
            self.trace.close()
        return returncode

    async def close(self) -> int | None:
        """Ask the child to exit (its socket closes); its status once it has."""
        self.channel.close()
        return await anyio.to_thread.run_sync(self.wait)

    def end(self, why: ModelFailed | _Restart) -> None:
        """The child is gone for `why`: every request it still owes ends with it."""
        self.ended = why
        if self.gone is None:
            self.gone = anyio.Event()
        self.gone.set()
        owed, self.owed = self.owed, {}
        for ticket in owed.values():
            ticket.settle(failure=why)


class ModelWorker:
    """The parent's side: starts the child, keeps many requests in flight, restarts once.

    `factory` is the "module:function" that loads the model in the child (tests give one
    that crashes for real). `python` is the interpreter the child runs under.
    """

    def __init__(
        self,
        settings: LLMSettings,
        factory: str = DEFAULT_FACTORY,
        *,
        restarts: int = RESTARTS,
        python: str = sys.executable,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.restarts_left = restarts
        self.python = python
        self.timer = timer
        self.started = 0  # processes started, restarts included
        self._process: _Process | None = None
        self._dead: ModelFailed | None = None
        self._loading = anyio.Lock()
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Start the child if none runs; it loads the model at once, while we go on."""
        if self._process is None and self._dead is None:
            self._process = self._spawn()

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """The child's answer to `request`; ModelFailed (or ModelCrashed) when it has none.

        `queued` on the answer is the time spent waiting (for the model to load, and in
        the child for a free sequence), apart from the time spent generating.
        """
        asked = self.timer()
        body = encode_request(request)
        while True:
            process = await self._ready_process()
            began = self.timer()
            try:
                reply = await self._ask(process, body)
            except _Restart:
                continue
            response = decode_response(reply.get("response"))
            waited = _seconds(reply.get("waited"))
            return replace(response, queued=max(0.0, began - asked) + waited)

    async def ready(self) -> None:
        """Wait until the model is loaded (raises as generate would if it cannot be)."""
        await self._ready_process()

    async def aclose(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.end(ModelFailed("the embedded model's worker was closed"))
            returncode = await process.close()
            notes = process.notes
            if notes:
                log.debug("llama.cpp: %s", notes)
            if returncode not in (0, None):
                log.warning("on closing: %s", crash_error(returncode).summary)

    # ------------------------------------------------------------------ internals

    async def _ready_process(self) -> _Process:
        """The running child with its model loaded, starting (or restarting) it as needed."""
        while True:
            if self._dead is not None:
                raise _again(self._dead)
            self.start()
            process = self._process
            assert process is not None
            if process.ready:
                return process
            async with self._loading:  # one caller reads the child's greeting
                if process.ready or process is not self._process:
                    continue
                try:
                    greeting = await process.channel.receive()
                except (EOFError, OSError, ValueError) as exc:
                    crash = await self._crashed(process, _broken(exc))
                    if not self._restart(crash):
                        raise crash from None
                    continue
                if greeting.get("ready") is not True:
                    # A model that cannot load will not load on a second try either.
                    self._dead = _child_failure(greeting.get("error"))
                    await self._drop(process)
                    raise _again(self._dead)
                process.ready = True
                return process

    async def _ask(self, process: _Process, body: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its reply; _Restart when the child died owing it."""
        ticket = _Ticket(next(self._ids))
        process.owed[ticket.ident] = ticket
        try:
            # A child gone cannot take the request, but the answers it wrote before it
            # went may still be unread: reading on delivers them, then finds its end.
            with contextlib.suppress(OSError, anyio.ClosedResourceError):
                await process.channel.send({"id": ticket.ident, "request": body})
            await self._await(process, ticket)
        except anyio.get_cancelled_exc_class():
            if process.owed.pop(ticket.ident, None) is not None and process.gone is None:
                # The child frees its sequence; an answer already on its way is dropped.
                with contextlib.suppress(OSError, anyio.ClosedResourceError):
                    await process.channel.send({"cancel": ticket.ident})
            raise
        if isinstance(ticket.failure, _Restart):
            raise _Restart
        if ticket.failure is not None:
            raise _again(ticket.failure)
        assert ticket.reply is not None
        if "error" in ticket.reply:
            raise _child_failure(ticket.reply["error"])
        return ticket.reply

    async def _await(self, process: _Process, ticket: _Ticket) -> None:
        """Wait until `ticket` is settled, reading for every caller while nobody else does."""
        while not ticket.settled:
            if process.reading:
                await ticket.wake.wait()
                ticket.wake = anyio.Event()
                continue
            process.reading = True
            try:
                await self._read_until(process, ticket)
            finally:
                process.reading = False
                # Someone must read on: the callers still waiting wake, and the first of
                # them takes it over (all, as any one of them may be going, cancelled).
                for waiting in process.owed.values():
                    waiting.nudge()

    async def _read_until(self, process: _Process, ticket: _Ticket) -> None:
        """Read the child's answers, each to its caller, until `ticket` has its own."""
        while not ticket.settled:
            try:
                message = await process.channel.receive()
            except (EOFError, OSError, ValueError, anyio.ClosedResourceError) as exc:
                await self._lost(process, _broken(exc))
                return
            self._deliver(process, message)

    def _deliver(self, process: _Process, message: dict[str, Any]) -> None:
        ident = message.get("id")
        ticket = process.owed.pop(ident, None) if type(ident) is int else None
        if ticket is None:
            # A cancelled request's answer (or garbage): it belongs to nobody waiting.
            log.debug("dropped an answer from the embedded model that nobody waits for")
            return
        ticket.settle(reply=message)

    async def _lost(self, process: _Process, broken: str | None = None) -> None:
        """The child died, or `broken` the protocol: every request it owed ends, to be
        asked again of a new child if one may be started, else failed with why."""
        if process.gone is None:  # the first to find it gone finds out why
            process.gone = anyio.Event()
            # Shielded: the callers waiting on `gone` need the answer even if we are not.
            with anyio.CancelScope(shield=True):
                crash = await self._crashed(process, broken)
            process.end(_Restart() if self._restart(crash) else crash)
        else:
            await process.gone.wait()
            assert process.ended is not None
            process.end(process.ended)

    async def _crashed(self, process: _Process, broken: str | None = None) -> ModelCrashed:
        """The error for a child that died (or broke the protocol, `broken`, and is killed
        for it: nothing more it says can be trusted): why, logged once with its trace."""
        if self._process is process:
            self._process = None
        if broken is not None:
            process.popen.kill()
        returncode = await process.close()
        if broken is None:
            crash = crash_error(returncode if returncode is not None else 1)
        else:
            crash = ModelCrashed(f"the embedded model's worker {broken}", returncode=returncode)
        log.error(
            "%s",
            crash,
            extra={
                "event": "model_crashed",
                "returncode": returncode,
                "trace": process.notes,
            },
        )
        return crash

    def _restart(self, crash: ModelCrashed) -> bool:
        """Whether a new child may be started after `crash` (at most `restarts` times)."""
        if self.restarts_left <= 0:
            self._dead = crash
            return False
        self.restarts_left -= 1
        log.warning("the embedded model's worker died; starting it again (once per build)")
        return True

    async def _drop(self, process: _Process) -> None:
        if self._process is process:
            self._process = None
        await process.close()

    def _spawn(self) -> _Process:
        ours, theirs = socket.socketpair()
        trace = tempfile.TemporaryFile(prefix="trinity-model-")  # noqa: SIM115 (the child's)
        try:
            popen = subprocess.Popen(
                [self.python, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=trace,
                stderr=trace,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            trace.close()
            raise ModelFailed(f"cannot start the embedded model's worker: {exc}") from None
        finally:
            theirs.close()
        self.started += 1
        hello = {
            "hello": model_settings(self.settings),
            "factory": self.factory,
            # The child finds the factory's module where this process would (a test's).
            "path": [entry for entry in sys.path if entry],
        }
        data = _encode(hello)
        with contextlib.suppress(OSError):  # it died at once: the first read reports how
            ours.sendall(struct.pack("!i", len(data)) + data)
        return _Process(popen, Channel(ours), trace)


def _broken(exc: Exception) -> str | None:
    """What a failed read says of the child: None when it is gone (the socket closed),
    else how it broke the protocol (a message too long, or not a JSON object)."""
    if isinstance(exc, ValueError):
        return f"sent a malformed message ({one_line(exc)})"
    return None


def _child_failure(error: Any) -> ModelFailed:
    """What the child said went wrong: text, on one line and not too long for one."""
    said = " ".join(error.split())[:REASON_LIMIT] if isinstance(error, str) else ""
    return ModelFailed(f"the embedded model failed: {said or 'no reason given'}")


def _seconds(value: Any) -> float:
    """A duration the child reports; 0 for anything that is not a finite, positive number."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return 0.0


def _again(error: ModelFailed) -> ModelFailed:
    """A fresh instance of `error` for another caller (an exception carries its traceback)."""
    if isinstance(error, ModelCrashed):
        return ModelCrashed(error.summary, fix=error.fix, returncode=error.returncode)
    return ModelFailed(str(error))


# ---------------------------------------------------------------------------- the child


def _load_factory(name: str) -> Callable[[LLMSettings], Any]:
    module, _, function = name.partition(":")
    loaded = getattr(importlib.import_module(module), function)
    if not callable(loaded):
        raise TypeError(f"{name} is not callable")
    return loaded  # type: ignore[no-any-return]


def _child_settings(data: dict[str, Any]) -> LLMSettings:
    return LLMSettings(
        provider="local",
        api_url="",
        model=data["model"],
        context=int(data["context"]),
        threads=data["threads"],
        sequences=int(data["sequences"]),
        style=data["style"],
        base_dir=Path(data["base_dir"]),
    )


def serve(connection: Connection) -> None:
    """The child's loop: load the model, then answer requests until the socket closes."""
    from trinity.llm.providers.batched import engine_for
    from trinity.llm.providers.local import ModelRunner

    hello = _receive(connection)
    sys.path.extend(entry for entry in hello["path"] if entry not in sys.path)
    try:
        settings = _child_settings(hello["hello"])
        engine = engine_for(ModelRunner(settings, loader=_load_factory(hello["factory"])))
    except Exception as exc:  # anything the loader raises is the user's answer
        _send(connection, {"error": f"cannot load the model: {one_line(exc)}"})
        return
    _send(connection, {"ready": True})
    answer(connection, engine)


def answer(connection: Connection, engine: Engine) -> None:
    """Take requests and answer them as they finish, until the build hangs up.

    Between two steps of the engine (one decode of every running sequence) whatever the
    build sent is read, so a new block takes a sequence as soon as one is free; with
    nothing to do, the child sleeps until a message comes.
    """
    try:
        while _take_messages(connection, engine, wait=not engine.busy):
            for outcome in engine.step():
                _send(connection, _reply(outcome))
    finally:
        engine.close()


def _take_messages(connection: Connection, engine: Engine, *, wait: bool) -> bool:
    """Hand every message that has come to the engine (waiting for one if `wait`);
    False once the build has closed its end."""
    timeout = None if wait else 0.0
    while connection.poll(timeout):
        try:
            message = _receive(connection)
        except EOFError:
            return False
        if "cancel" in message:
            engine.cancel(int(message["cancel"]))
        else:
            engine.submit(int(message["id"]), decode_request(message["request"]))
        timeout = 0.0
    return True


def _reply(outcome: Outcome) -> dict[str, Any]:
    if outcome.response is None:
        return {"id": outcome.ident, "error": outcome.error or "no answer"}
    return {
        "id": outcome.ident,
        "response": response_data(outcome.response),
        "waited": outcome.waited,
    }


def main(argv: list[str]) -> None:
    # Ctrl-C reaches every process of the terminal's group: the build decides what to do
    # with us (it closes our socket), so an interrupt must not look like a crash here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    connection = Connection(int(argv[0]))
    try:
        serve(connection)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the build went away
    finally:
        connection.close()


if __name__ == "__main__":
    main(sys.argv[1:])
