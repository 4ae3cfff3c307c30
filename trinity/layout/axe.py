"""The accessibility checks axe-core makes for the guardian: contrast, tap targets, alt text.

axe-core comes with the `axe-playwright-python` package (the guard extra), which bundles
it as `axe.min.js`; only that file is used, so its version is whatever that package
ships. The script is injected into each page once (an init script of the browser
context) and run by probe.js with only the three rules below; each node axe reports
becomes one Finding, tied to its block by the same attribute as the layout probe's.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from trinity.errors import MissingDependencyError
from trinity.layout.findings import (
    CONTRAST,
    IMAGE_ALT,
    TAP_TARGET,
    Finding,
)

# axe's rule -> the kind of finding it gives.
RULE_KINDS = {"color-contrast": CONTRAST, "target-size": TAP_TARGET, "image-alt": IMAGE_ALT}
AXE_PACKAGE = "axe_playwright_python"
# The longest detail kept from axe's summary: enough for the reason, not for a paragraph.
MAX_DETAIL = 300
_FIX_HEADER = re.compile(r"Fix (?:any|all) of the following:")


@cache
def axe_source() -> str:
    """axe.min.js as bundled by axe-playwright-python; MissingDependencyError without it."""
    spec = importlib.util.find_spec(AXE_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingDependencyError(
            "the layout guardian needs axe-core, from the axe-playwright-python package, "
            "which is not installed; install the guard extra (`pip install 'trinity[guard]'`)"
        )
    return (Path(spec.origin).parent / "axe.min.js").read_text(encoding="utf-8")


def axe_findings(raw: Sequence[Mapping[str, Any]], page: str, width: int) -> list[Finding]:
    """What probe.js's runAxe returned at `width`, as Findings (each node once)."""
    findings: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for item in raw:
        kind = RULE_KINDS[str(item["rule"])]
        element = str(item["element"])
        if (kind, element) in seen:
            continue
        seen.add((kind, element))
        block = item["block"]
        contrast = item.get("contrast") if kind == CONTRAST else None
        expected = item.get("expected") if kind == CONTRAST else None
        findings.append(
            Finding(
                page=page,
                width=width,
                kind=kind,
                block=None if block is None else str(block),
                element=element,
                detail=one_line_summary(str(item["summary"])),
                measured=None if contrast is None else float(contrast),
                limit=None if expected is None else float(expected),
            )
        )
    return findings


def one_line_summary(summary: str) -> str:
    """axe's failure summary on one line: its first reason, without the "Fix any of the
    following:" header (the others are alternatives: "or give it a title", and so on),
    cut to MAX_DETAIL characters."""
    lines = (line.strip() for line in summary.splitlines())
    reasons = [line for line in lines if line and not _FIX_HEADER.fullmatch(line)]
    text = reasons[0] if reasons else " ".join(summary.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1].rstrip() + "…"
