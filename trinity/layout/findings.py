"""What the layout guardian looks for and what it finds: a theme's limits and one finding.

A finding is tied to the block that caused it: the nearest element around it (or itself)
that carries `data-trinity-block="<block name>"`, which themes put on each block's wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# The widths every page is checked at: a phone, a tablet, a laptop (CSS pixels).
WIDTHS = (390, 768, 1280)
# The attribute that names the block an element belongs to.
BLOCK_ATTRIBUTE = "data-trinity-block"

# What can be found, and whether the guardian can heal it (a block's text or its box
# can be changed; a theme's colours, images and scripts are the theme's to fix).
OVERFLOW = "overflow"  # an element's content sticks out of its box (or the page's)
CLIPPED = "clipped"  # an element's content is cut off by its box (overflow: hidden)
HEADING_WRAP = "heading-wrap"  # a heading wraps to more lines than the theme allows
TOO_LONG = "too-long"  # a block is far longer than its slot
CONTRAST = "contrast"  # text below WCAG AA contrast
TAP_TARGET = "tap-target"  # a link or button smaller than 24 px at 390 px
IMAGE_ALT = "image-alt"  # an image without alt text
CONSOLE_ERROR = "console-error"  # the page logged an error
ASSET_FAILED = "asset-failed"  # one of the site's own files did not load

KINDS = (
    OVERFLOW,
    CLIPPED,
    HEADING_WRAP,
    TOO_LONG,
    CONTRAST,
    TAP_TARGET,
    IMAGE_ALT,
    CONSOLE_ERROR,
    ASSET_FAILED,
)
HEALABLE = frozenset({OVERFLOW, CLIPPED, HEADING_WRAP, TOO_LONG})


@dataclass(frozen=True)
class SlotLimits:
    """How much a block's slot holds: lines of a heading in it, lines of the whole block
    (its height over its text's line height); None is no limit."""

    heading_lines: int | None = 3
    block_lines: int | None = None

    def as_json(self) -> dict[str, int | None]:
        return {"heading_lines": self.heading_lines, "block_lines": self.block_lines}


@dataclass(frozen=True)
class LayoutLimits:
    """A theme's limits (`guard:` in theme.yaml): the default slot, slots by block name,
    and the class its CSS heals overflow with (None: it has none)."""

    default: SlotLimits = SlotLimits()
    slots: Mapping[str, SlotLimits] = field(default_factory=lambda: MappingProxyType({}))
    heal_class: str | None = None

    def slot(self, block: str | None) -> SlotLimits:
        if block is None:
            return self.default
        return self.slots.get(block, self.default)

    def as_json(self) -> dict[str, Any]:
        """What the in-page probe reads."""
        return {
            "default": self.default.as_json(),
            "slots": {name: slot.as_json() for name, slot in self.slots.items()},
        }


@dataclass(frozen=True)
class Finding:
    """One layout problem on one page at one width.

    `page` is the page's file relative to the site root ("about/index.html"); `block` the
    block it belongs to (None: the theme's own markup); `element` a short CSS path of the
    element; `measured` and `limit` the numbers behind it where there are any (lines,
    pixels, a contrast ratio).
    """

    page: str
    width: int
    kind: str
    block: str | None
    element: str
    detail: str
    measured: float | None = None
    limit: float | None = None

    @property
    def healable(self) -> bool:
        return self.block is not None and self.kind in HEALABLE

    def as_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "width": self.width,
            "kind": self.kind,
            "block": self.block,
            "element": self.element,
            "detail": self.detail,
            "measured": self.measured,
            "limit": self.limit,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        """A finding as `as_json` wrote it; KeyError/TypeError/ValueError when it is not."""
        kind = str(data["kind"])
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        block = data["block"]
        return cls(
            page=str(data["page"]),
            width=int(data["width"]),
            kind=kind,
            block=None if block is None else str(block),
            element=str(data["element"]),
            detail=str(data["detail"]),
            measured=_number(data.get("measured")),
            limit=_number(data.get("limit")),
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# How the guard may run: heal what it finds, or also fail the build on what is left.
MODES = ("heal", "strict")


@dataclass(frozen=True)
class GuardOptions:
    """How the guard runs: `mode` heal (report what is left) or strict (fail the build on
    it), the browser (None: found as trinity.layout.browser.find_chromium says), and
    whether to keep screenshots of the pages with findings, before and after.

    Here, beside the findings, and not in trinity.guardian: the command line reads them
    for every guarded build, also one that finds nothing changed and loads nothing else.
    """

    mode: str = "heal"
    chromium: str | None = None
    screenshots: bool = False
    widths: tuple[int, ...] = WIDTHS
    parallel: int = 4
