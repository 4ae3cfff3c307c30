"""The embedded model's worker process: llama.cpp runs there, never in the build.

Native code can die in ways Python cannot catch: a llama-cpp-python built with native CPU
tuning on one machine executes AMX or AVX-512 instructions on another and is killed by
SIGSEGV or SIGILL. In the build's own process that kills the build silently, with no log
and no message. So one child process owns the llama context; the build sends it requests
over a socket pair and reads the answers back. When the child dies, the build says so
(`ModelCrashed`: the signal, the likely cause, the fix), starts it again once, and fails
only the blocks it still owed; answers already received are cached by then.

The wire format is length-prefixed JSON (multiprocessing's Connection framing over a
socket pair): nothing read back from the child is unpickled. The child gets no secrets:
only the model's own settings.

    parent                                  child (python -m trinity.llm.providers.worker FD)
    {"hello": settings, "factory", "path"}  ->
                                            <-  {"ready": true} | {"error": "..."}
    {"request": {...}}                      ->
                                            <-  {"response": {...}} | {"error": "..."}
    (socket closed)                         ->  exits

The child writes Python's fatal-error trace (faulthandler: the native crash's signal and
the Python stack) and llama.cpp's own notes to a temporary file that the parent reads: a
crash's trace goes into the error log as one record, notes into the debug log.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

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
        "style": settings.style,
        "base_dir": str(settings.base_dir),
    }


def _send(connection: Connection, message: dict[str, Any]) -> None:
    connection.send_bytes(json.dumps(message).encode("utf-8"))


def _receive(connection: Connection) -> dict[str, Any]:
    message = json.loads(connection.recv_bytes())
    if not isinstance(message, dict):
        raise ValueError("a message is not a JSON object")
    return message


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


@dataclass
class _Process:
    """One running child: the process, our end of its socket, and its trace file."""

    popen: subprocess.Popen[bytes]
    connection: Connection
    trace: IO[bytes]
    ready: bool = False
    notes: str = ""  # what the child wrote to its trace file, read when it ended

    def read_trace(self) -> str:
        try:
            size = self.trace.seek(0, os.SEEK_END)
            self.trace.seek(max(0, size - TRACE_LIMIT))
            return self.trace.read().decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self) -> int | None:
        """Ask the child to exit (its socket closes), kill it if it lingers; its status."""
        self.connection.close()
        try:
            returncode = self.popen.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            returncode = self.popen.wait()
        self._keep_notes()
        return returncode

    def kill(self) -> None:
        """Stop at once (a cancelled request: its answer would reach the next one)."""
        self.popen.kill()
        self.connection.close()
        self.popen.wait()
        self._keep_notes()

    def _keep_notes(self) -> None:
        if not self.trace.closed:
            self.notes = self.read_trace()
            self.trace.close()


class ModelWorker:
    """The parent's side: starts the child, sends it one request at a time, restarts once.

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
        self._lock = anyio.Lock()

    def start(self) -> None:
        """Start the child if none runs; it loads the model at once, while we go on."""
        if self._process is None and self._dead is None:
            self._process = self._spawn()

    async def generate(self, request: LLMRequest) -> LLMResponse:
        """The child's answer to `request`; ModelFailed (or ModelCrashed) when it has none.

        `queued` on the answer is the time spent waiting (for the model to load, and for
        the requests ahead of this one), apart from the time spent generating.
        """
        asked = self.timer()
        async with self._lock:
            while True:
                process = await self._ready_process()
                began = self.timer()
                try:
                    reply = await self._exchange(process, {"request": encode_request(request)})
                except ModelCrashed as crash:
                    if not self._restart(crash):
                        raise
                    continue
                response = decode_response(reply.get("response"))
                return replace(response, queued=max(0.0, began - asked))

    async def ready(self) -> None:
        """Wait until the model is loaded (raises as generate would if it cannot be)."""
        async with self._lock:
            await self._ready_process()

    async def aclose(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            returncode = await anyio.to_thread.run_sync(process.close)
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
            try:
                await self._exchange(process, None)
            except ModelCrashed as crash:
                if not self._restart(crash):
                    raise
                continue
            except ModelFailed as failure:
                # A model that cannot load will not load on a second try either.
                self._dead = failure
                await self._drop(process)
                raise
            process.ready = True
            return process

    async def _exchange(self, process: _Process, message: dict[str, Any] | None) -> dict[str, Any]:
        """Send `message` (None: only read) and read the reply, on a worker thread.

        If this task is cancelled while the child generates, the child is killed: its
        answer would otherwise be read as the answer to the next request.
        """
        try:
            reply = await anyio.to_thread.run_sync(
                _roundtrip, process.connection, message, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            self._process = None
            process.kill()
            raise
        except (EOFError, OSError, ValueError):
            raise await self._crashed(process) from None
        if "error" in reply:
            raise ModelFailed(f"the embedded model failed: {reply['error']}")
        return reply

    async def _crashed(self, process: _Process) -> ModelCrashed:
        """The error for a child that died: why, logged once with its trace."""
        self._process = None
        returncode = await anyio.to_thread.run_sync(process.close)
        crash = crash_error(returncode if returncode is not None else 1)
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
        await anyio.to_thread.run_sync(process.close)

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
        connection = Connection(ours.detach())
        self.started += 1
        hello = {
            "hello": model_settings(self.settings),
            "factory": self.factory,
            # The child finds the factory's module where this process would (a test's).
            "path": [entry for entry in sys.path if entry],
        }
        with contextlib.suppress(OSError):  # it died at once: the first read reports how
            _send(connection, hello)
        return _Process(popen, connection, trace)


def _roundtrip(connection: Connection, message: dict[str, Any] | None) -> dict[str, Any]:
    if message is not None:
        _send(connection, message)
    return _receive(connection)


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
        style=data["style"],
        base_dir=Path(data["base_dir"]),
    )


def serve(connection: Connection) -> None:
    """The child's loop: load the model, then answer requests until the socket closes."""
    from trinity.llm.providers.local import ModelRunner

    hello = _receive(connection)
    sys.path.extend(entry for entry in hello["path"] if entry not in sys.path)
    try:
        settings = _child_settings(hello["hello"])
        runner = ModelRunner(settings, loader=_load_factory(hello["factory"]))
        runner.load()
    except Exception as exc:  # anything the loader raises is the user's answer
        _send(connection, {"error": f"cannot load the model: {one_line(exc)}"})
        return
    _send(connection, {"ready": True})
    while True:
        try:
            message = _receive(connection)
        except EOFError:
            return  # the build is done with us
        try:
            response = runner.generate(decode_request(message["request"]))
        except Exception as exc:
            _send(connection, {"error": one_line(exc)})
        else:
            _send(connection, {"response": response_data(response)})


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
