"""Ending an answer that max_tokens cut off where it last made sense.

A model stopped by its token limit stops mid-word, and often mid-structure: a list marker
("3.") with no item after it, a heading with no section under it, a code fence, a link or
a bold span never closed. `trim_truncated` cuts such an answer back to its last clean end,
the latest of

- the end of a sentence: ".", "!" or "?", any closing quotes, brackets or emphasis, then
  a space or the end of the text;
- the end of a line the model finished, the newline kept: a line followed by a blank
  one, a code fence, or a list item or table row followed by a line that opens a block
  of its own (the next item, a heading, a quote, ...);
- the end of the text, when its last line is a code fence or a table row closed by "|";

at which nothing is left half done: the text does not end in a bare list marker or a
heading, and no code fence, code span, emphasis, link or table row is open.

An answer with no clean end keeps its words, less the bare list markers and headings it
ends in: a cut sentence is better than no text at all.

Trimming a trimmed text changes nothing: a line kept for having ended keeps its newline,
because without it "- beta" could as well be the start of "- beta version".
"""

from __future__ import annotations

import re
from itertools import pairwise

# A list item's marker: "-", "*" or "+", or a number and "." or ")".
_MARKER = r"(?:[-*+]|\d{1,9}[.)])"
# Closing quotes (straight or curly), brackets, emphasis and code may follow the mark that
# ends a sentence.
_SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]*_`]*(?=\s|$)")
# A line of markers and nothing else ("3.", "-", "> 2)", "---"): an item never written.
_BARE_MARKERS = re.compile(rf"[ \t]*(?:(?:>|{_MARKER})[ \t]*)+")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]|$)")
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
# Lines that open a block of their own, so the line before them belongs to another block.
_BLOCK_START = re.compile(rf"[ \t]*(?:{_MARKER}(?:[ \t]|$)|#{{1,6}}(?:[ \t]|$)|>|\||```|~~~)")
# Lines that end where they end: a list item with text, a table row.
_ITEM = re.compile(rf"[ \t]*(?:(?:>[ \t]*)*{_MARKER}[ \t]+\S|\|)")
_ITEM_MARKER = re.compile(rf"^[ \t]*(?:>[ \t]*)*{_MARKER}[ \t]", re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`]*`")
# Asterisks with a space on both sides ("2 * 3") are not emphasis.
_LONE_ASTERISKS = re.compile(r"(?<=\s)\*+(?=\s)")
_OPEN_LINK_TARGET = re.compile(r"\]\([^)]*$")


def trim_truncated(text: str) -> str:
    """`text`, cut off by max_tokens, ended at its last clean end (see the module)."""
    for end in reversed(_clean_ends(text)):
        if _leaves_nothing_open(text[:end]):
            return text[:end]
    return _without_dangling_lines(text)


def _clean_ends(text: str) -> list[int]:
    """Where the text could end, in order: after sentences and after finished lines."""
    ends = {match.end() for match in _SENTENCE_END.finditer(text)}
    ends.update(_finished_line_ends(text))
    if _ends_itself(text.rsplit("\n", 1)[-1]):
        ends.add(len(text))
    return sorted(ends)


def _finished_line_ends(text: str) -> list[int]:
    """The position after each newline that ends a line the model finished."""
    lines = text.split("\n")
    ends: list[int] = []
    offset = 0
    for line, following in pairwise(lines):
        offset += len(line) + 1
        if not line.strip():
            continue
        # The last line of an answer that ends in a newline is followed by "", a blank.
        if (
            not following.strip()
            or _FENCE.match(line)
            or (_ITEM.match(line) and _BLOCK_START.match(following))
        ):
            ends.append(offset)
    return ends


def _ends_itself(line: str) -> bool:
    """Whether a last line is whole without a newline: a code fence, a closed table row."""
    row = line.strip()
    return bool(_FENCE.match(line)) or (len(row) > 1 and row[0] == row[-1] == "|")


def _leaves_nothing_open(text: str) -> bool:
    """Whether `text` could be a whole answer: nothing dangles, nothing is left open."""
    # Trailing blank lines close no span: judge the text without them.
    lines = text.rstrip().split("\n")
    written = [line for line in lines if line.strip()]
    if not written or _dangles(written[-1]):
        return False
    open_fence, last_block = _last_block(lines)
    return open_fence is None and _spans_closed(last_block)


def _dangles(line: str) -> bool:
    """Whether a last line promises what never came: a list item or a section."""
    return bool(_BARE_MARKERS.fullmatch(line) or _HEADING.match(line))


def _last_block(lines: list[str]) -> tuple[str | None, list[str]]:
    """The code fence still open at the end (or None), and the lines of the last block
    outside code: the ones inline spans must close in (a span never crosses a block)."""
    fence: str | None = None
    block: list[str] = []
    for line in lines:
        found = _FENCE.match(line)
        if fence is not None:
            if found and _closes(fence, found.group(1), line[found.end() :]):
                fence = None
            continue
        if found:
            fence, block = found.group(1), []
            continue
        if not line.strip() or _BLOCK_START.match(line):
            block = []
        if line.strip():
            block.append(line)
    return fence, block


def _closes(opening: str, fence: str, rest: str) -> bool:
    """CommonMark: the same character, at least as many, and nothing after but spaces."""
    return fence[0] == opening[0] and len(fence) >= len(opening) and not rest.strip()


def _spans_closed(block: list[str]) -> bool:
    """Whether a block's code spans, emphasis, links and table row are all closed."""
    text = "\n".join(block)
    if text.count("`") % 2:
        return False
    # Inside code, as a list marker or between spaces, "*" and "[" are not Markdown.
    prose = _LONE_ASTERISKS.sub("", _ITEM_MARKER.sub("", _CODE_SPAN.sub("", text)))
    strong = prose.count("**")
    if strong % 2 or (prose.count("*") - 2 * strong) % 2:
        return False
    if prose.count("[") > prose.count("]"):
        return False
    if _OPEN_LINK_TARGET.search(prose):
        return False
    last = block[-1].strip() if block else ""
    return not (last.startswith("|") and not last.endswith("|"))


def _without_dangling_lines(text: str) -> str:
    """`text` less the blank lines, bare list markers and headings at its end."""
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or _dangles(lines[-1])):
        lines.pop()
    return "\n".join(lines)


__all__ = ["trim_truncated"]
