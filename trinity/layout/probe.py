"""The in-page check (probe.js) and what its answers mean.

probe.js measures a page at each width and returns bare facts: a kind, the element's
path and tag, the block it is in, and the numbers, and axe-core's failing nodes. Here
they become Findings, each with the sentence a reader of the report sees ("h2 wraps to
6 lines at 390 px (the theme allows 3)"), worded in one place rather than in JavaScript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from trinity.layout.axe import axe_findings
from trinity.layout.findings import (
    BLOCK_ATTRIBUTE,
    CLIPPED,
    HEADING_WRAP,
    KINDS,
    OVERFLOW,
    TOO_LONG,
    Finding,
    LayoutLimits,
)


class ProbeAnswerError(ValueError):
    """probe.js answered something it never returns (a page replaced a builtin it uses)."""


@cache
def probe_source() -> str:
    """probe.js: an expression whose value is the probe function (page.evaluate calls it)."""
    return resources.files("trinity.layout").joinpath("probe.js").read_text(encoding="utf-8")


def probe_arguments(
    limits: LayoutLimits,
    viewports: Sequence[tuple[int, int]],
    axe_viewport: tuple[int, int],
    axe_rules: Sequence[str],
) -> dict[str, Any]:
    """The argument of probe.js's "measure" call: the viewports (width, height) in the
    order to measure them, where and what axe is to judge, the limits, the block
    attribute and the class to leave out of element paths. `axe_arguments` turns it into
    the "axe" call's."""
    return {
        "mode": "measure",
        "widths": [list(size) for size in viewports],
        "axeWidth": axe_viewport[0],
        "axeViewport": list(axe_viewport),
        "axeRules": list(axe_rules),
        "limits": limits.as_json(),
        "attribute": BLOCK_ATTRIBUTE,
        "ignoreClass": limits.heal_class,
    }


def axe_arguments(measure_arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {**measure_arguments, "mode": "axe"}


def measured(raw: Any) -> tuple[list[Any], bool]:
    """The "measure" call's answer: its results by width, and whether axe is needed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("results"), list):
        raise ProbeAnswerError(f"the probe answered {type(raw).__name__}, not its results")
    return raw["results"], bool(raw.get("axeNeeded"))


def probe_findings(results: Sequence[Any], page: str, axe_answer: Any = None) -> list[Finding]:
    """The probe's answers as Findings, width by width: the "measure" call's results and
    the "axe" call's answer, if there was one. ProbeAnswerError when they are not what
    probe.js returns, or the page did not have the width asked for."""
    try:
        findings: list[Finding] = []
        for answer in results:
            width = _width(answer)
            findings += [_finding(item, page, width) for item in answer["layout"]]
            findings += axe_findings(answer["axe"], page, width)
        if axe_answer is not None:
            findings += axe_findings(axe_answer["records"], page, _width(axe_answer))
        return _once(findings)
    except ProbeAnswerError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeAnswerError(f"the probe's answer is not what probe.js returns: {exc!r}") from exc


def _once(findings: list[Finding]) -> list[Finding]:
    """Each element's finding of a kind once per width (axe may judge a node again that
    an earlier verdict already settled: it looks inside every node it is given)."""
    seen: set[tuple[int, str, str]] = set()
    unique = []
    for finding in findings:
        key = (finding.width, finding.kind, finding.element)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def _width(answer: Mapping[str, Any]) -> int:
    width = int(answer["width"])
    if int(answer["viewport"]) != width:
        raise ProbeAnswerError(f"the viewport was {answer['viewport']} px wide, not {width} px")
    return width


def _finding(item: Mapping[str, Any], page: str, width: int) -> Finding:
    kind = str(item["kind"])
    if kind not in KINDS:
        raise ValueError(f"the probe returned an unknown kind {kind!r}")
    block = item["block"]
    measured = _number(item.get("measured"))
    limit = _number(item.get("limit"))
    return Finding(
        page=page,
        width=width,
        kind=kind,
        block=None if block is None else str(block),
        element=str(item["element"]),
        detail=_detail(kind, str(item["tag"]), str(item["reason"]), measured, limit, width),
        measured=measured,
        limit=limit,
    )


def _detail(
    kind: str, tag: str, reason: str, measured: float | None, limit: float | None, width: int
) -> str:
    """One sentence that says what is wrong and by how much."""
    have, allowed = _shown(measured), _shown(limit)
    if kind == OVERFLOW and reason == "page":
        return f"{tag} sticks out of the page at {width} px (it reaches {have} px)"
    if kind == OVERFLOW:
        return f"{tag} sticks out of its {allowed} px box at {width} px (it needs {have} px)"
    if kind == CLIPPED:
        extent = "tall" if reason == "y" else "wide"
        return (
            f"{tag} cuts off its content at {width} px ({have} px {extent} in a {allowed} px box)"
        )
    if kind == HEADING_WRAP:
        return f"{tag} wraps to {have} lines at {width} px (the theme allows {allowed})"
    if kind == TOO_LONG:
        return f"{tag} runs to {have} lines at {width} px (its slot holds {allowed})"
    return f"{tag}: {kind} at {width} px"


def _shown(value: float | None) -> str:
    """A number as a sentence shows it: 6, not 6.0; one decimal when it has one."""
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
