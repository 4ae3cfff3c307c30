"""`forbid` entries, compiled: a plain phrase or a `/regular expression/`.

A site owner writes "As an AI" and means those words in any case, not "as an aid"; a
phrase is therefore matched case-insensitively, as whole words, with any run of
whitespace between its words (a model's line break falls anywhere). Between slashes, the
text is a Python regular expression, matched as written (`(?i)` makes it ignore case).
"""

from __future__ import annotations

import functools
import re

from trinity.checks.spec import Pattern


def compile_pattern(source: str) -> Pattern:
    """`source` as a Pattern; ValueError saying why when it cannot be one (an empty
    phrase, a regular expression that does not compile or that matches nothing at all)."""
    if len(source) >= 2 and source.startswith("/") and source.endswith("/"):
        return Pattern(source, _compile_regex(source[1:-1]))
    if not source.strip():
        raise ValueError("must not be empty")
    return Pattern(source, re.compile(_phrase_regex(source), re.IGNORECASE))


@functools.lru_cache(maxsize=1024)
def phrase(text: str) -> re.Pattern[str]:
    """`text` found as a reader finds it: any case, any spacing, whole words (a `mentions`
    entry; "Go" is not in "good")."""
    return re.compile(_phrase_regex(text), re.IGNORECASE)


def _phrase_regex(phrase: str) -> str:
    """A regex for `phrase` as whole words: no word character may touch either end where
    the phrase itself begins or ends with one ("[Your Name]" has no such edge)."""
    words = phrase.split()
    body = r"\s+".join(re.escape(word) for word in words)
    start = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
    end = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
    return start + body + end


def _compile_regex(expression: str) -> re.Pattern[str]:
    if not expression:
        raise ValueError("an empty regular expression; write one between the slashes")
    try:
        regex = re.compile(expression)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {_reason(exc)}") from None
    if regex.search(""):
        # It would match at the start of every answer and forbid them all.
        raise ValueError("matches an empty text, so it would forbid every answer")
    return regex


def _reason(exc: re.error) -> str:
    return exc.msg if exc.pos is None else f"{exc.msg} at position {exc.pos}"


__all__ = ["compile_pattern", "phrase"]
