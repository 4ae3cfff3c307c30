"""The Chromium the layout guardian's tests drive.

`.ci/run` installs Chromium when it is missing and sets REQUIRE_CHROMIUM=1, so there the
browser tests fail rather than skip; a developer without a browser sees them skipped with
the reason, never a false pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trinity.errors import MissingDependencyError
from trinity.layout.browser import find_chromium

# .ci/run sets this, so that a CI machine without Chromium fails instead of skipping.
CHROMIUM_REQUIRED = os.environ.get("REQUIRE_CHROMIUM") == "1"


def require_chromium() -> Path:
    """The browser to drive; without one the test skips, or fails where CI needs it."""
    try:
        return find_chromium()
    except MissingDependencyError as exc:
        if CHROMIUM_REQUIRED:
            pytest.fail(f"no browser, and REQUIRE_CHROMIUM=1: {exc}")
        pytest.skip(f"no browser for the layout guardian (.ci/run installs one): {exc}")


# The `chromium` fixture (tests/conftest.py) skips or fails as above.
requires_chromium = pytest.mark.usefixtures("chromium")
