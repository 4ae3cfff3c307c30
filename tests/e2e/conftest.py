"""No connection made in these tests may leave the loopback interface."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _loopback_only(loopback_only: None) -> None:
    """Fail any in-process connection to a host other than 127.0.0.1 / ::1."""
