"""How messages show things to a user: a path as they know it, a near miss, an exception."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


def shown_path(path: Path | str) -> str:
    """A path as messages show it: relative to the working folder when inside it."""
    # abspath folds '..' without following symlinks, so paths read as the user wrote them.
    absolute = Path(os.path.abspath(path))  # noqa: PTH100
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for a warning), or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__
