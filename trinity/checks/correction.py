"""What a chat model is told when its answer failed its checks (interim wording)."""

from __future__ import annotations

from collections.abc import Sequence

from trinity.checks.spec import CheckFailure


def correction(failures: Sequence[CheckFailure]) -> str:
    """The user turn that follows a failed answer: each failed check, plainly."""
    listed = "\n".join(f"- {failure}" for failure in failures)
    return f"Your answer failed these checks:\n{listed}\nWrite it again so that it passes them."
