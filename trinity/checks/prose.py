"""The words and sentences of an answer, where they are: what the `words` and `repeats`
checks count and compare, and what repair drops or cuts at.

Sentences are read line by line (model answers do not hard-wrap their paragraphs), after
a line's quote marks, list marker or heading hashes, and never inside a code block or a
table: code repeats itself legitimately, and a table row is not a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from trinity.llm.trim import BLOCK_PREFIX, SENTENCE_END, code_lines

# Sentences shorter than this ("Thank you.", "It works.") may well be said twice.
MIN_REPEATED_WORDS = 4
# A word holds at least one letter or digit: a dash "\u2014" is not one.
_WORD = re.compile(r"\S*\w\S*")


@dataclass(frozen=True)
class Sentence:
    """A sentence of `text` as `text[start:end]`, on line number `line`."""

    start: int
    end: int
    text: str
    line: int

    @property
    def key(self) -> str:
        """The sentence as compared for repeats: case and spacing do not count."""
        return " ".join(self.text.casefold().split())

    @property
    def words(self) -> int:
        return count_words(self.text)


def count_words(text: str) -> int:
    """The words in `text`, as a reader counts them: a line's list marker, quote marks
    and heading hashes are not words, nor is a dash."""
    return len(word_ends(text))


def word_ends(text: str) -> list[int]:
    """Where each word of `text` (as count_words counts them) ends, in order: the words
    before a cut at a sentence or line end are the ends up to it."""
    ends: list[int] = []
    offset = 0
    for line in text.split("\n"):
        prefix = BLOCK_PREFIX.match(line)
        start = offset + (prefix.end() if prefix else 0)
        ends.extend(match.end() for match in _WORD.finditer(text, start, offset + len(line)))
        offset += len(line) + 1
    return ends


def sentences(text: str) -> list[Sentence]:
    """The sentences of `text` in order, outside code blocks and tables."""
    found: list[Sentence] = []
    lines = text.split("\n")
    offset = 0
    for number, (line, code) in enumerate(zip(lines, code_lines(lines), strict=True)):
        if not code and not line.lstrip().startswith("|"):
            found.extend(_line_sentences(line, offset, number))
        offset += len(line) + 1
    return found


def repeated(text: str) -> list[Sentence]:
    """The sentences of `text` said before, every time after the first (a base model that
    loops); short sentences do not count (see MIN_REPEATED_WORDS)."""
    seen: set[str] = set()
    again: list[Sentence] = []
    for sentence in sentences(text):
        key = sentence.key
        # Words are counted only for a sentence said before: sentences alike in `key` are
        # alike in words, and most answers repeat nothing.
        if key in seen and sentence.words >= MIN_REPEATED_WORDS:
            again.append(sentence)
        seen.add(key)
    return again


def _line_sentences(line: str, offset: int, number: int) -> Iterator[Sentence]:
    prefix = BLOCK_PREFIX.match(line)
    start = prefix.end() if prefix else 0
    ends = [match.end() for match in SENTENCE_END.finditer(line, start)]
    written = len(line.rstrip())
    if written > (ends[-1] if ends else start):
        ends.append(written)
    for end in ends:
        # Each sentence starts at its first character, after the spaces that follow the last.
        start += len(line[start:end]) - len(line[start:end].lstrip())
        if end > start:
            yield Sentence(offset + start, offset + end, line[start:end], number)
        start = end


__all__ = ["MIN_REPEATED_WORDS", "Sentence", "count_words", "repeated", "sentences", "word_ends"]
