"""Shared pytest fixtures for the Trinity test suite live here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakellm import FakeLLMServer


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started fake Ollama/OpenAI server on 127.0.0.1 (see tests/fakellm.py)."""
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()
