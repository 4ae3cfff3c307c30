"""Shared pytest fixtures for the Trinity test suite live here."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.environment import is_leaky_variable
from tests.fakellm import FakeLLMServer
from tests.redisserver import RedisServer, running_redis_server

if TYPE_CHECKING:
    from tests.e2e.sitekit import SiteProject


@pytest.fixture(autouse=True)
def _no_leaky_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's LLM_*, TRINITY_*, provider API keys (and colour) settings out.

    Tests that need one of these pass it explicitly (CliRunner `env=`, or `environ=`).
    """
    for name in list(os.environ):
        if is_leaky_variable(name):
            monkeypatch.delenv(name)


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and the like never leave the machine
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class ConnectLog:
    """Every in-process socket connect, in order: (host, port) for TCP, else the address."""

    def __init__(self) -> None:
        self.addresses: list[Any] = []

    def to_port(self, port: int) -> int:
        """How many connects tried `port` (on any loopback address)."""
        return sum(
            1 for a in self.addresses if isinstance(a, tuple) and len(a) >= 2 and a[1] == port
        )


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> ConnectLog:
    """Fail any in-process connection to a host other than 127.0.0.1 / ::1.

    Returns the log of connects made (a dead port cannot count what reaches it).
    """
    log = ConnectLog()
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise AssertionError(f"test tried to connect to {address!r}")
        log.addresses.append(address)
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            raise AssertionError(f"test tried to connect to {address!r}")
        log.addresses.append(address)
        return original_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return log


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started fake Ollama/OpenAI server on 127.0.0.1 (see tests/fakellm.py)."""
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_site_project(
    tmp_path: Path, fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., SiteProject]:
    """Factory: `make_site_project(name="site", provider="ollama")` -> a SiteProject.

    The project is the example `trinity init` writes, under tmp_path, with llm pointing at
    `fake_llm` (instead of the embedded model) and a json block `highlights` added to the
    projects collection, its answers scripted to match its schema. The working directory
    is tmp_path, so nothing relative can land in the repository.
    """
    from tests.e2e.sitekit import SiteProject

    monkeypatch.chdir(tmp_path)

    def make(name: str = "site", provider: str = "ollama") -> SiteProject:
        return SiteProject.create(tmp_path / name, fake_llm, provider=provider)

    return make


@pytest.fixture
def site_project(make_site_project: Callable[..., SiteProject]) -> SiteProject:
    """The example project, talking Ollama to the fake server."""
    return make_site_project()


@pytest.fixture
def openai_site_project(make_site_project: Callable[..., SiteProject]) -> SiteProject:
    """The example project, talking the OpenAI protocol to the fake server."""
    return make_site_project(provider="openai")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser the layout guardian's tests drive (tests/layoutkit.py)."""
    from tests.layoutkit import require_chromium

    return require_chromium()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests use their own key prefix or flush it."""
    with running_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's redis-server, emptied before and after the test."""
    with redis_server.client() as client:
        client.flushall()
    yield redis_server
    with redis_server.client() as client:
        client.flushall()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that kill or freeze it."""
    with running_redis_server(tmp_path / "redis") as server:
        yield server
