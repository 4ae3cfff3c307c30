"""Logging: the public way in for code and scripts that use Trinity as a library."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """A logger under Trinity's hierarchy (`trinity.*`), for `get_logger(__name__)`."""
    return logging.getLogger(name if name.startswith("trinity") else f"trinity.{name}")
