"""A real redis-server on a free loopback port, for the Redis tier's tests.

`.ci/run` installs redis-server when it is missing and sets REQUIRE_REDIS_SERVER=1, so
there the Redis tests fail rather than skip; a developer without it sees them skipped
with the reason, never a false pass.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")
# .ci/run sets this, so that a CI machine without redis-server fails instead of skipping.
REDIS_REQUIRED = os.environ.get("REQUIRE_REDIS_SERVER") == "1"


def require_redis_server() -> str:
    """The redis-server to start; without one the test skips, or fails where CI needs it.

    The one check every Redis test goes through: RedisServer calls it before it starts.
    """
    if REDIS_SERVER is not None:
        return REDIS_SERVER
    if REDIS_REQUIRED:
        pytest.fail("redis-server is not installed, and REQUIRE_REDIS_SERVER=1")
    pytest.skip("redis-server is not installed (.ci/run installs it)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process: no persistence, loopback only, its own port."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        executable = require_redis_server()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.password = password
        workdir.mkdir(parents=True, exist_ok=True)
        command = [
            executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--protected-mode", "no",
        ]  # fmt: skip
        if password is not None:
            command += ["--requirepass", password]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_until_ready()

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def _wait_until_ready(self, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    @property
    def environ(self) -> dict[str, str]:
        """The variables that point Trinity at this server."""
        env = {"CACHE_REDIS_HOST": self.host, "CACHE_REDIS_PORT": str(self.port)}
        if self.password is not None:
            env["CACHE_REDIS_PASSWORD"] = self.password
        return env

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): connections reset, new ones are refused."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_redis_server(workdir: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A started redis-server, stopped on the way out (what every Redis fixture yields)."""
    server = RedisServer(workdir, password=password)
    try:
        yield server
    finally:
        server.stop()
