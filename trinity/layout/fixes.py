"""The fixes the layout guardian makes without a model: its own CSS for a block (applied
so that it wins over the theme's rules) and truncation with an ellipsis, the last resort.

Every fix here is a pure function of its inputs, so a rebuild that replays the fixes a
block got makes the same page, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trinity.layout.findings import BLOCK_ATTRIBUTE, HEADING_WRAP

ELLIPSIS = "…"
# Where the guardian's CSS goes: the end of <head>, after the theme's stylesheets, so that
# at equal weight it comes later; every rule is !important as well, so it wins.
_HEAD_END = re.compile(r"</head\s*>", re.IGNORECASE)
_BODY_START = re.compile(r"<body\b[^>]*>", re.IGNORECASE)

# Long words, URLs and identifiers wrap anywhere; nothing in the block may keep its text
# on one line, insist on a width wider than its box, or hide what overflows it.
_WRAP_RULES = (
    "overflow-wrap: anywhere !important; word-break: break-word !important; "
    "white-space: normal !important; min-width: 0 !important; max-width: 100% !important; "
    "overflow: visible !important; text-overflow: clip !important; "
    "height: auto !important; max-height: none !important;"
)
# Code and tables keep their layout and scroll inside their own box instead.
_SCROLL_RULES = "white-space: pre-wrap !important; overflow-x: auto !important;"
# A heading that wraps to too many lines is set smaller and tighter.
_HEADING_RULES = "font-size: 0.8em !important; line-height: 1.15 !important;"


def block_selector(block: str) -> str:
    """The CSS selector of a block's wrapper (the name quoted as a CSS string)."""
    quoted = block.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ")
    return f'[{BLOCK_ATTRIBUTE}="{quoted}"]'


def guardian_css(fixes: Mapping[str, Iterable[str]]) -> str:
    """The guardian's own layout fixes: block name -> the kinds of finding it fixes there."""
    rules = []
    for block in sorted(fixes):
        kinds = set(fixes[block])
        if not kinds:
            continue
        wrapper = block_selector(block)
        # html body ... raises the specificity above any rule a theme writes for the block.
        scope = f"html body {wrapper}"
        rules.append(f"{scope}, {scope} * {{ {_WRAP_RULES} }}")
        rules.append(f"{scope} pre, {scope} table {{ {_SCROLL_RULES} }}")
        if HEADING_WRAP in kinds:
            headings = ", ".join(f"{scope} h{n}" for n in range(1, 7))
            rules.append(f"{scope}:is(h1, h2, h3, h4, h5, h6), {headings} {{ {_HEADING_RULES} }}")
    return "\n".join(rules)


def inject_css(html: str, css: str) -> str:
    """`html` with `css` in a <style> of its own at the end of <head> (else at the start of
    <body>, else first); unchanged when there is no CSS."""
    if not css:
        return html
    style = f'<style data-trinity-guard="">\n{_safe_css(css)}\n</style>'
    heads = list(_HEAD_END.finditer(html))
    if heads:
        at = heads[-1].start()
        return html[:at] + style + "\n" + html[at:]
    body = _BODY_START.search(html)
    if body is not None:
        return html[: body.end()] + style + html[body.end() :]
    return style + html


def _safe_css(css: str) -> str:
    """CSS that cannot close its <style> element (block names come from content files)."""
    return re.sub(r"</(style)", r"<\\/\1", css, flags=re.IGNORECASE)


@dataclass(frozen=True)
class BlockLayout:
    """How the guardian changed a block's box: the theme's healing class on its wrapper
    (`heal_class`, None: not used) and the kinds of finding its own CSS fixes (`css`)."""

    heal_class: str | None = None
    css: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return self.heal_class is not None or bool(self.css)

    def as_json(self) -> list[object]:
        return [self.heal_class, sorted(self.css)]


_WORD = re.compile(r"\S+")
# Words as a reader counts them: a list's "-" or "1." is not one.
_COUNTED = re.compile(r"\w+")
# Punctuation that would dangle before an ellipsis: comma, colons, hyphen, en and em dash.
_TRAILING = " ,;:-\u2013\u2014"
_LINK_TARGET = "]("


def truncate_words(text: str, words: int) -> str:
    """At most `words` words of `text` (one paragraph), and an ellipsis when cut."""
    found = list(_WORD.finditer(text))
    if len(found) <= words:
        return text
    kept = text[: found[max(words, 1) - 1].end()].rstrip(_TRAILING)
    return kept + ELLIPSIS


def shorten_long_words(text: str, chars: int) -> str:
    """Every word longer than `chars` cut to `chars` with an ellipsis. A Markdown link's
    target is left alone: it is not shown, and cut it would no longer lead anywhere."""

    def cut(match: re.Match[str]) -> str:
        word = match.group(0)
        if len(word) <= chars or _LINK_TARGET in word:
            return word
        return word[: max(chars - 1, 1)] + ELLIPSIS

    return _WORD.sub(cut, text)


def count_words(text: str) -> int:
    """Words as a reader counts them (the budgets of fixes are in these)."""
    return len(_COUNTED.findall(text))


def truncate_lines(text: str, words: int) -> str:
    """`text` cut after the line that reaches `words` words, with an ellipsis at its end.
    Whole lines are kept, so a list keeps whole items and its Markdown stays intact."""
    lines = text.splitlines()
    total = 0
    for index, line in enumerate(lines[:-1]):
        total += len(_COUNTED.findall(line))
        if total >= words:
            return "\n".join(lines[: index + 1]).rstrip() + " " + ELLIPSIS
    return text


__all__ = [
    "ELLIPSIS",
    "BlockLayout",
    "block_selector",
    "count_words",
    "guardian_css",
    "inject_css",
    "shorten_long_words",
    "truncate_lines",
    "truncate_words",
]
