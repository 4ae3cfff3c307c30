"""How the shared tiers (Redis, disk) store a value: UTF-8 JSON bytes, never a pickle.

Anything that does not decode as JSON is a miss: a pickled value, a truncated write, bytes
another program left under our key.
"""

from __future__ import annotations

import json
from typing import Any


def encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(raw: Any) -> Any | None:
    """The value `raw` holds, or None when it is not JSON bytes."""
    if not isinstance(raw, bytes):
        return None
    try:
        return json.loads(raw)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
