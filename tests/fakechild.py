"""A stand-in for the embedded model's worker that breaks the rules, to test the build's
side of the wire against a child it cannot trust.

`ModelWorker(settings, BEHAVIOUR, python=fake_python(tmp_path))` runs this module instead
of the real worker (the factory name, sent in the greeting, picks the behaviour):

- "reverse": holds the first three requests, then answers them last first, after an
  answer for an id nobody asked about and one without an id; the "waited" it reports
  is nonsense for two of them.
- "oversized": answers the first request with a frame that claims a gigabyte.
- "not-json": answers the first request with bytes that are not JSON.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from trinity.llm.providers.worker import decode_request


def send(connection: Connection, message: dict[str, Any]) -> None:
    connection.send_bytes(json.dumps(message).encode("utf-8"))


def answer(ident: int, lead: str, waited: Any) -> dict[str, Any]:
    text = f"{lead} answered by a fake worker."
    return {"id": ident, "response": {"text": text, "model": "fake"}, "waited": waited}


def reverse(connection: Connection) -> None:
    held = []
    while len(held) < 3:
        message = json.loads(connection.recv_bytes())
        if "request" in message:
            held.append((message["id"], decode_request(message["request"]).lead))
    send(connection, answer(999, "Nobody", 0.0))
    send(connection, {"response": {"text": "No id", "model": "fake"}})
    for (ident, lead), waited in zip(reversed(held), ["NaN", -5, 0.25], strict=True):
        send(connection, answer(ident, lead, waited))


def main(fd: str) -> None:
    connection = Connection(int(fd))
    hello = json.loads(connection.recv_bytes())
    send(connection, {"ready": True})
    behaviour = hello["factory"]
    if behaviour == "reverse":
        reverse(connection)
    else:
        connection.recv_bytes()
        frame = struct.pack("!i", 2**30) if behaviour == "oversized" else b"\0\0\0\4{no}"
        connection._send(frame)  # type: ignore[attr-defined]  (the raw bytes, unframed)
    with contextlib.suppress(EOFError):
        connection.recv_bytes()  # until the build hangs up


def fake_python(folder: Path) -> str:
    """An "interpreter" for ModelWorker that runs this module with the worker's socket."""
    script = folder / "fake-python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tests.fakechild "$3"\n')
    script.chmod(0o755)
    return str(script)


if __name__ == "__main__":
    main(sys.argv[1])
