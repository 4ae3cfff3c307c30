"""Deterministic repairs of an answer: the cheap fixes tried before a model is asked again.

Each fix has a name (the report lists the ones that changed an answer) and does one thing:

- "preamble": drop the chat around the answer, a first line such as "Sure! Here's the
  introduction:" or "Certainly, here is the About section." and a last line such as
  "I hope this helps!";
- "fence": unwrap an answer wholly wrapped in one code fence of Markdown, plain text or
  (for json blocks) JSON; a fence of any other language is the answer and stays;
- "headings": turn the headings of a Markdown answer into bold lines ("## Lessons" ->
  "**Lessons**"). A block sits under the heading its theme gives it, at a level the
  answer cannot know; bold keeps the words without breaking the page's outline;
- "repeats": drop each sentence said before (see trinity.checks.prose.repeated);
- "pii": redact personal data, when the block's `pii` is "redact";
- "trim": cut back to the last complete sentence or list item when the answer does not
  end on one, and to the `words`/`chars` maximum by whole sentences when it is over it.

A fix runs only where its check applies (a json block gets only "fence" and "pii"), and
the fixes are applied until none changes anything more, so repairing a repaired answer
changes nothing. An answer that passed every check is never made to fail one: if the
fixes would, it is returned as it was.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable

from trinity.checks.evaluate import evaluate
from trinity.checks.pii import redact_pii
from trinity.checks.prose import count_words, repeated, sentences, word_ends
from trinity.checks.spec import CheckSpec
from trinity.llm.trim import BLOCK_PREFIX, code_lines, trim_truncated, unfinished_end

# An interjection, then what the answer will be ("Sure! Here's the intro:"), or a line
# announcing it ("Here is a two-sentence introduction:").
_PREAMBLE = re.compile(
    r"[ \t]*(?:(?:sure|certainly|of course|absolutely|okay|ok|great)\b[!,.]*[ \t]*"
    r"(?:here(?:'s|\u2019s|[ \t]+is|[ \t]+are)\b.*|.*:)"
    r"|here(?:'s|\u2019s|[ \t]+is|[ \t]+are)\b.*:)[ \t]*",
    re.IGNORECASE,
)
_SIGN_OFF = re.compile(
    r"[ \t]*(?:I hope (?:this|that) helps|let me know if)\b.*",
    re.IGNORECASE,
)
# Longer than this, a first line is content, whatever it starts with.
_PREAMBLE_WORDS = 25
_WRAPPING_FENCE = re.compile(
    r"\s*(`{3,}|~{3,})[ \t]*([\w+-]*)[ \t]*\n(.*)\n[ \t]*\1[ \t]*\s*", re.DOTALL
)
_UNWRAPPED = {
    "markdown": ("", "markdown", "md", "text", "txt"),
    "text": ("", "text", "txt", "markdown", "md"),
    "json": ("", "json"),
}
_ATX_HEADING = re.compile(r"([ \t]{0,3})#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*")
# Rounds of fixes at most: each round only shortens the answer or marks it, so two settle
# any answer; the bound is a guard, not a tuning knob.
_ROUNDS = 4


def repair(text: str, spec: CheckSpec, *, format: str = "markdown") -> tuple[str, tuple[str, ...]]:
    """`text` with the cheap fixes applied, and the names of those that changed it."""
    fixes = _fixes(spec, format)
    repaired, names = text, dict[str, None]()
    for _ in range(_ROUNDS):
        before = repaired
        for name, fix in fixes:
            fixed = fix(repaired)
            if fixed != repaired:
                repaired = fixed
                names[name] = None
        if repaired == before:
            break
    if repaired == text or (
        evaluate(repaired, spec, format=format) and not evaluate(text, spec, format=format)
    ):
        return text, ()
    return repaired, tuple(names)


_Fix = Callable[[str], str]


def _fixes(spec: CheckSpec, format: str) -> list[tuple[str, _Fix]]:
    """The fixes that apply to a block of `format` checked by `spec`, in the order run."""
    fixes: list[tuple[str, _Fix]] = [("fence", lambda text: _unwrap_fence(text, format))]
    if spec.pii == "redact":
        fixes.append(("pii", redact_pii))
    if format == "json":
        return fixes
    if spec.boilerplate:
        fixes.insert(0, ("preamble", _strip_preamble))
    if format == "markdown":
        fixes.append(("headings", _demote_headings))
    if spec.repeats:
        fixes.append(("repeats", _drop_repeats))
    fixes.append(("trim", lambda text: _trim(text, spec)))
    return fixes


def _strip_preamble(text: str) -> str:
    """`text` without a first line announcing it or a last line signing off, when there
    is an answer besides them."""
    lines = text.strip().split("\n")
    if len(lines) > 1 and _is_chatter(lines[0], _PREAMBLE):
        lines = lines[1:]
    if len(lines) > 1 and _is_chatter(lines[-1], _SIGN_OFF):
        lines = lines[:-1]
    stripped = "\n".join(lines).strip()
    return stripped if stripped != text.strip() else text


def _is_chatter(line: str, pattern: re.Pattern[str]) -> bool:
    return count_words(line) <= _PREAMBLE_WORDS and pattern.fullmatch(line) is not None


def _unwrap_fence(text: str, format: str) -> str:
    """The inside of a code fence that wraps the whole answer, when its language is the
    block's own format and it holds no other fence."""
    match = _WRAPPING_FENCE.fullmatch(text)
    if match is None or match.group(2).lower() not in _UNWRAPPED.get(format, ("",)):
        return text
    inside = match.group(3)
    if any(code_lines(inside.split("\n"))):
        return text
    return inside.strip()


def _demote_headings(text: str) -> str:
    """Each Markdown heading outside code made a bold line of the same words."""
    lines = text.split("\n")
    for number, code in enumerate(code_lines(lines)):
        heading = None if code else _ATX_HEADING.fullmatch(lines[number])
        if heading is None:
            continue
        # Bold inside the heading would close the bold around it.
        words = heading.group(2).replace("**", "").strip("*_ \t")
        if words:
            lines[number] = f"{heading.group(1)}**{words}**"
    return "\n".join(lines)


def _drop_repeats(text: str) -> str:
    """`text` without the sentences it said before; a line left with nothing to say goes."""
    again = repeated(text)
    if not again:
        return text
    for sentence in reversed(again):
        start = sentence.start
        # The space before a dropped sentence goes with it.
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        text = text[:start] + text[sentence.end :]
    return _without_empty_lines(text, {sentence.line for sentence in again})


def _without_empty_lines(text: str, numbers: set[int]) -> str:
    """`text` less the lines of `numbers` that hold only a list marker or spaces now, and
    a blank line each leaves doubled."""
    lines = text.split("\n")
    kept: list[str] = []
    for number, line in enumerate(lines):
        prefix = BLOCK_PREFIX.match(line)
        if number in numbers and prefix is not None and prefix.end() == len(line):
            if (
                kept
                and not kept[-1].strip()
                and (number + 1 >= len(lines) or not lines[number + 1].strip())
            ):
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def _trim(text: str, spec: CheckSpec) -> str:
    """`text` cut back to whole sentences: to where it ends cleanly when `complete` fails,
    and to the `words` and `chars` maximum when over it (or, when no clean end is within
    it, to the last clean end). Unchanged when no cut helps."""
    incomplete = spec.complete and unfinished_end(text) is not None
    if not (incomplete or _over_max(len(text), count_words(text), spec)):
        return text
    ends = word_ends(text)
    points = _cut_points(text)
    # Counted before they are cut, cheaply: a cut at a sentence or line end splits no word.
    within = [end for end in points if not _over_max(end, bisect_right(ends, end), spec)]
    cut = _first_clean_cut(text, within)
    if cut is None and incomplete:
        cut = _first_clean_cut(text, points)
    return text if cut is None else cut


def _first_clean_cut(text: str, points: list[int]) -> str | None:
    """`text` cut at the first of `points` where it ends cleanly, or None."""
    for end in points:
        cut = text[:end].rstrip()
        if cut and unfinished_end(cut) is None:
            return cut
    return None


def _cut_points(text: str) -> list[int]:
    """Where `text` may be cut, latest first: where trim_truncated would end it, and after
    each sentence and each line."""
    points = {len(trim_truncated(text))}
    points.update(sentence.end for sentence in sentences(text))
    points.update(match.start() for match in re.finditer("\n", text))
    return sorted(points, reverse=True)


def _over_max(chars: int, words: int, spec: CheckSpec) -> bool:
    """Whether a text of `chars` characters and `words` words is over the maximum."""
    return any(
        bounds is not None and bounds.max is not None and count > bounds.max
        for count, bounds in ((chars, spec.chars), (words, spec.words))
    )


__all__ = ["repair"]
