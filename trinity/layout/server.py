"""A built site served read-only on a loopback port, for the browser that checks it.

Pages are opened over HTTP rather than as file:// URLs, so that they load as they will
once published: root-relative links, fetches and the browser's same-origin rules work,
and every request the page makes is one we can see and answer.

The server binds 127.0.0.1 on a free port, answers GET and HEAD from the site's folders
only (http.server refuses paths that climb out of them; a build's staging folder first,
then the output folder it keeps unchanged pages in) and from `extra`, a few files held in
memory (the guardian's own harness page and axe-core, under names no site uses), logs
nothing, and runs in a daemon thread, so a forgotten `close()` cannot keep the process
alive.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import quote

LOOPBACK = "127.0.0.1"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    folders: tuple[str, ...] = ()
    # A burst of tabs connecting at once must not be refused (the default backlog is 5).
    request_queue_size = 64
    extra: Mapping[str, bytes] = MappingProxyType({})

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing: a browser that closes a connection early is no error of ours."""


class _QuietHandler(SimpleHTTPRequestHandler):
    """SimpleHTTPRequestHandler without the stderr log, keeping connections alive.

    HTTP/1.1 lets the browser reuse one connection for a page and its stylesheet (the
    handler sends Content-Length, which keep-alive needs). Every answer must be checked
    again before reuse: a page healed during a session keeps its name, and its
    Last-Modified may not change within the same second, so pages are never stored.
    """

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        if not self._send_extra(with_body=True):
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._send_extra(with_body=False):
            super().do_HEAD()

    def _send_extra(self, *, with_body: bool) -> bool:
        """Answer from `extra`, if the path is one of its files; whether it was."""
        path = self.path.split("?", 1)[0]
        body = self.server.extra.get(path)
        if body is None:
            return False
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(len(body)))
        # Named afresh for each session: its content never changes under its name.
        self.send_header("Cache-Control", "max-age=86400, immutable")
        super().end_headers()
        if with_body:
            self.wfile.write(body)
        return True

    def translate_path(self, path: str) -> str:
        """The file in the first of the site's folders that has it (else in the first)."""
        found = [self._in_folder(path, folder) for folder in self.server.folders]
        return next((candidate for candidate in found if Path(candidate).exists()), found[0])

    def _in_folder(self, path: str, folder: str) -> str:
        self.directory = folder
        return super().translate_path(path)

    def end_headers(self) -> None:
        if self.path.split("?", 1)[0].endswith((".html", "/")):
            self.send_header("Cache-Control", "no-store")
        else:
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: a check of a thousand pages must not print a thousand lines."""


class SiteServer:
    """`with SiteServer([site_dir]) as server: server.url_for("about/index.html")`.

    A file is served from the first of `folders` that has it. `extra` maps URL paths
    ("/harness.html") to files served from memory before the site's, typed by their
    suffix and cached by the browser (give them fresh names).
    """

    def __init__(self, folders: Sequence[Path], extra: Mapping[str, bytes] | None = None) -> None:
        if not folders:
            raise ValueError("a site server needs at least one folder")
        self.folders = tuple(folders)
        handler = partial(_QuietHandler, directory=str(self.folders[0]))
        self._server = _Server((LOOPBACK, 0), handler)
        self._server.folders = tuple(str(folder) for folder in self.folders)
        self._server.extra = MappingProxyType(dict(extra or {}))
        self.port = int(self._server.server_address[1])
        self.origin = f"http://{LOOPBACK}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="trinity-site-server",
            daemon=True,
        )
        self._thread.start()

    def url_for(self, page: str) -> str:
        """The URL of `page`, a file path relative to the site ("about/index.html")."""
        return f"{self.origin}/{quote(page.lstrip('/'))}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
