"""The disk tier's generation: a random name in its folder, new whenever the cache is
emptied (`trinity cache clear`, or the folder deleted by hand).

A build that finds nothing changed keeps the previous site without reading the cache
(trinity.unchanged); the generation is what tells it that the answers that site was made
of are still the cache's, and that the user has not asked for new ones by emptying it.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

GENERATION_FILE = "generation"


def cache_generation(directory: Path) -> str | None:
    """The generation of the disk tier at `directory`, made if it has none; None when it
    cannot be read or made (then nothing is kept unread: the build reads the cache)."""
    path = directory / GENERATION_FILE
    with contextlib.suppress(OSError, UnicodeDecodeError):
        current = path.read_text("ascii").strip()
        if current:
            return current
    fresh = secrets.token_hex(16)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Written whole, then renamed: a reader never sees half a name.
        partial = directory / f".{GENERATION_FILE}.{fresh}"
        partial.write_text(fresh, "ascii")
        partial.replace(path)
    except OSError:
        return None
    return fresh


def forget_generation(directory: Path) -> None:
    """Drop the generation (the cache was emptied): the next build makes a new one."""
    with contextlib.suppress(OSError):
        (directory / GENERATION_FILE).unlink()


__all__ = ["GENERATION_FILE", "cache_generation", "forget_generation"]
