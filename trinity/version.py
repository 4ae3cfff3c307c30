"""Trinity's version, and the generator name written into every site and report.

Imports nothing, so `trinity --version` and the package `__init__` stay cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
GENERATOR = f"Trinity {__version__}"
