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

The same rules tell whether a whole answer, one the model ended by itself, ends cleanly
(`unfinished_end`, the `complete` check of trinity.checks): there the end of the text is
the end of its last line, so a last list item is finished without a newline after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

# A list item's marker: "-", "*" or "+", or a number and "." or ")".
_MARKER = r"(?:[-*+]|\d{1,9}[.)])"
# Closing quotes (straight or curly), brackets, emphasis and code may follow the mark that
# ends a sentence.
SENTENCE_END = re.compile(r"[.!?][\"'\u2019\u201d)\]*_`]*(?=\s|$)")
# A line of markers and nothing else ("3.", "-", "> 2)", "---"): an item never written.
_BARE_MARKERS = re.compile(rf"[ \t]*(?:(?:>|{_MARKER})[ \t]*)+")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]|$)")
# What opens a line before its words: quote marks, a list marker, a heading's hashes.
BLOCK_PREFIX = re.compile(rf"[ \t]*(?:(?:>|{_MARKER}|#{{1,6}})(?:[ \t]+|$))*")
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
# Lines that open a block of their own, so the line before them belongs to another block.
_BLOCK_START = re.compile(rf"[ \t]*(?:{_MARKER}(?:[ \t]|$)|#{{1,6}}(?:[ \t]|$)|>|\||```|~~~)")
# Lines that end where they end: a list item with text, a table row.
_ITEM = re.compile(rf"[ \t]*(?:(?:>[ \t]*)*{_MARKER}[ \t]+\S|\|)")
# A list item with something written after its marker.
_LIST_ITEM = re.compile(rf"[ \t]*(?:>[ \t]*)*{_MARKER}[ \t]+\S")
_ITEM_MARKER = re.compile(rf"^[ \t]*(?:>[ \t]*)*{_MARKER}[ \t]", re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`]*`")
# Asterisks with a space on both sides ("2 * 3") are not emphasis.
_LONE_ASTERISKS = re.compile(r"(?<=\s)\*+(?=\s)")
_OPEN_LINK_TARGET = re.compile(r"\]\([^)]*$")


@dataclass(frozen=True)
class Unfinished:
    """How an answer fails to end: `kind` is "empty" (no words), "empty item" (a bare list
    marker, `text`), "heading" (`text`, with no section under it), "open" (`text` is the
    code fence or inline mark never closed) or "cut" (`text` is the last line, which
    ends mid-sentence)."""

    kind: Literal["empty", "empty item", "heading", "open", "cut"]
    text: str


def trim_truncated(text: str) -> str:
    """`text`, cut off by max_tokens, ended at its last clean end (see the module)."""
    for end in reversed(_clean_ends(text)):
        if _leaves_nothing_open(text[:end]):
            return text[:end]
    return _without_dangling_lines(text)


def _clean_ends(text: str) -> list[int]:
    """Where the text could end, in order: after sentences and after finished lines."""
    ends = {match.end() for match in SENTENCE_END.finditer(text)}
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


def unfinished_end(text: str) -> Unfinished | None:
    """How a whole answer (one its model stopped writing by itself) fails to end cleanly,
    or None when it ends on a sentence, a finished list item or table row, or a closed
    code fence, with nothing dangling and nothing left open (see the module).

    A list item needs no full stop (lists of fragments are common) unless the items
    before it in its list had one: then the last item was cut off too.
    """
    unfinished = _open_end(text)
    if unfinished is not None:
        return unfinished
    lines = text.rstrip().split("\n")
    last = lines[-1]
    if _ends_a_sentence(last) or _ends_itself(last) or _finished_item(lines):
        return None
    return Unfinished("cut", last.strip())


def _leaves_nothing_open(text: str) -> bool:
    """Whether `text` could be a whole answer: nothing dangles, nothing is left open."""
    return _open_end(text) is None


def _open_end(text: str) -> Unfinished | None:
    """What makes `text` unable to end where it does: no words at all, a last line that
    dangles, a code fence or an inline span still open."""
    # Trailing blank lines close no span: judge the text without them.
    lines = text.rstrip().split("\n")
    written = [line for line in lines if line.strip()]
    if not written:
        return Unfinished("empty", "")
    dangling = _dangling(written[-1])
    if dangling is not None:
        return dangling
    open_fence, last_block = _last_block(lines)
    if open_fence is not None:
        return Unfinished("open", open_fence)
    mark = _open_span(last_block)
    return None if mark is None else Unfinished("open", mark)


def _dangles(line: str) -> bool:
    """Whether a last line promises what never came: a list item or a section."""
    return _dangling(line) is not None


def _dangling(line: str) -> Unfinished | None:
    """A last line that dangles, told: a bare list marker or a heading; else None."""
    if _BARE_MARKERS.fullmatch(line):
        return Unfinished("empty item", line.strip())
    if _HEADING.match(line):
        return Unfinished("heading", line.strip())
    return None


def _ends_a_sentence(line: str) -> bool:
    written = line.rstrip()
    return any(match.end() == len(written) for match in SENTENCE_END.finditer(written))


def _finished_item(lines: list[str]) -> bool:
    """Whether the last line is a list item the model finished: it does not end on a
    comma, semicolon or colon, and no earlier item of its list ended a sentence."""
    last = lines[-1]
    if not _LIST_ITEM.match(last) or last.rstrip()[-1] in ",;:":
        return False
    earlier = []
    for line in reversed(lines[:-1]):
        if _LIST_ITEM.match(line):
            earlier.append(line)
        elif line.strip() and not line[0].isspace():
            break  # the list ended: a paragraph (continuation lines are indented)
    return not any(_ends_a_sentence(item) for item in earlier)


def _last_block(lines: list[str]) -> tuple[str | None, list[str]]:
    """The code fence still open at the end (or None), and the lines of the last block
    outside code: the ones inline spans must close in (a span never crosses a block)."""
    fence: str | None = None
    block: list[str] = []
    for line, open_after, code in _fence_states(lines):
        fence = open_after
        if code or not line.strip() or _BLOCK_START.match(line):
            block = []
        if line.strip() and not code:
            block.append(line)
    return fence, block


def code_lines(lines: list[str]) -> list[bool]:
    """For each line, whether it belongs to a fenced code block (its fences included)."""
    return [code for _, _, code in _fence_states(lines)]


def _fence_states(lines: list[str]) -> Iterator[tuple[str, str | None, bool]]:
    """Each line, the code fence still open after it (or None), and whether it is code."""
    fence: str | None = None
    for line in lines:
        found = _FENCE.match(line)
        if fence is not None:
            if found and _closes(fence, found.group(1), line[found.end() :]):
                fence = None
            yield line, fence, True
        elif found:
            fence = found.group(1)
            yield line, fence, True
        else:
            yield line, None, False


def _closes(opening: str, fence: str, rest: str) -> bool:
    """CommonMark: the same character, at least as many, and nothing after but spaces."""
    return fence[0] == opening[0] and len(fence) >= len(opening) and not rest.strip()


def _open_span(block: list[str]) -> str | None:
    """The mark of a code span, emphasis, link or table row a block leaves open ("`",
    "**", "*", "[", "](", "|"), or None when all are closed."""
    text = "\n".join(block)
    if text.count("`") % 2:
        return "`"
    # Inside code, as a list marker or between spaces, "*" and "[" are not Markdown.
    prose = _LONE_ASTERISKS.sub("", _ITEM_MARKER.sub("", _CODE_SPAN.sub("", text)))
    strong = prose.count("**")
    if strong % 2:
        return "**"
    if (prose.count("*") - 2 * strong) % 2:
        return "*"
    if prose.count("[") > prose.count("]"):
        return "["
    if _OPEN_LINK_TARGET.search(prose):
        return "]("
    last = block[-1].strip() if block else ""
    return "|" if last.startswith("|") and not last.endswith("|") else None


def _without_dangling_lines(text: str) -> str:
    """`text` less the blank lines, bare list markers and headings at its end."""
    lines = text.split("\n")
    while lines and (not lines[-1].strip() or _dangles(lines[-1])):
        lines.pop()
    return "\n".join(lines)


__all__ = [
    "BLOCK_PREFIX",
    "SENTENCE_END",
    "Unfinished",
    "code_lines",
    "trim_truncated",
    "unfinished_end",
]
