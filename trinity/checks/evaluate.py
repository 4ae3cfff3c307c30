"""Running the checks on an answer: every check of a block's CheckSpec, each failure told
in a few plain words a model and a site owner both understand ("212 words; at most 120").

Pure functions of the text and the spec: no model, no file, no clock. The order of the
failures is stable (the order of CheckSpec's fields), so a correction sent to a model and
a report compared between builds do not change for nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from trinity.checks.patterns import phrase
from trinity.checks.pii import find_pii
from trinity.checks.prose import count_words, repeated
from trinity.checks.spec import CheckFailure, CheckSpec, LinkRule, Pattern, Range
from trinity.llm.trim import unfinished_end

# How much of an answer a message quotes.
_EXCERPT_WORDS = 6
_EXCERPT_CHARS = 60


def _boilerplate(source: str) -> Pattern:
    return Pattern(source, re.compile(source, re.IGNORECASE))


# What models say that no site means to publish: talk about themselves, chat around the
# answer, and templates they did not fill in. Forbidden unless `boilerplate: allow`.
# Each with its clue: lower-case text that no match can lack.
_BOILERPLATE_SOURCES = (
    (r"\bas an AI\b", "as an ai"),
    (r"\bas a (?:large )?language model\b", "language model"),
    (r"\bmy (?:knowledge|training)(?: data)? cut-?off\b", "cut"),
    (
        r"\b(?:sure|certainly|of course|absolutely)\b[!,.]?\s+here(?:'s|\u2019s|\s+is|\s+are)\b",
        "here",
    ),
    (r"\bI hope (?:this|that) helps\b", "helps"),
    # "[Your Name]", "[Insert link here]", "[Company]": a bracket a template left to fill.
    (
        r"\[(?:your|insert|add|enter|company|name|date|link|url|email|phone)\b[^\]\n]{0,40}\]"
        r"(?!\()",
        "[",
    ),
    (r"\{\{[^{}\n]{0,80}\}\}", "{{"),
    (r"\blorem ipsum\b", "lorem ipsum"),
)  # fmt: skip
DEFAULT_BOILERPLATE: tuple[Pattern, ...] = tuple(
    _boilerplate(source) for source, _ in _BOILERPLATE_SOURCES
)
# Each pattern scans the whole answer (`\b` first: no fast search for a prefix), eight
# scans a quarter of every answer's checks; a clue is found in the lower-cased answer far
# faster, and a pattern whose clue is missing cannot match. Under IGNORECASE, these three
# (dotted capital I, dotless i, long s) also match an ASCII letter that lower() does not
# give: in an answer that holds one, every pattern runs.
_BOILERPLATE_CLUES = tuple(
    zip(DEFAULT_BOILERPLATE, (clue for _, clue in _BOILERPLATE_SOURCES), strict=True)
)
IGNORECASE_ODDITIES = frozenset("\u0130\u0131\u017f")


def evaluate(text: str, spec: CheckSpec, *, format: str = "markdown") -> list[CheckFailure]:
    """Every check of `spec` that `text` fails, in a stable order; [] when it passes all.
    `format` is the block's ("markdown", "text" or "json"); a json block's answer is data,
    so only `forbid` and `pii` apply to it (its schema is checked where it is parsed)."""
    return [failure for check in _applied(spec, format) for failure in check.run(text, spec)]


def checks_applied(spec: CheckSpec, *, format: str = "markdown") -> list[str]:
    """The names of the checks `evaluate` runs for `spec` on a block of `format`, in the
    order it runs them (what a report lists)."""
    return [check.name for check in _applied(spec, format)]


def _applied(spec: CheckSpec, format: str) -> Iterator[_Check]:
    # Only what is switched on runs: every answer of every build passes through here.
    return (
        check for check in _CHECKS if check.applies(spec) and (format != "json" or check.on_data)
    )


def _words(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    if spec.words is not None:
        yield from _out_of("words", count_words(text), spec.words)


def _chars(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    if spec.chars is not None:
        yield from _out_of("chars", len(text), spec.chars)


def _out_of(name: str, count: int, bounds: Range) -> Iterator[CheckFailure]:
    if bounds.min is not None and count < bounds.min:
        yield CheckFailure(name, f"{count} {name}; at least {bounds.min}")
    elif bounds.max is not None and count > bounds.max:
        yield CheckFailure(name, f"{count} {name}; at most {bounds.max}")


def _complete(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    unfinished = unfinished_end(text)
    if unfinished is None:
        return
    if unfinished.kind == "empty":
        message = "is empty"
    elif unfinished.kind == "empty item":
        message = f"ends with an empty list item {unfinished.text!r}"
    elif unfinished.kind == "heading":
        message = f"ends with a heading and nothing under it: {unfinished.text!r}"
    elif unfinished.kind == "open":
        message = f"ends with {unfinished.text!r} never closed"
    else:
        message = f"ends mid-sentence: {_last_words(unfinished.text)!r}"
    yield CheckFailure("complete", message)


def _mentions(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    for fact in spec.mentions:
        # A fact rendered from missing data is empty: nothing to look for.
        if fact.strip() and phrase(fact.strip()).search(text) is None:
            yield CheckFailure("mentions", f"does not mention {fact.strip()!r}")


def _forbid(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    for pattern in spec.forbid:
        yield from _found(pattern, text)
    if spec.boilerplate:
        lowered = _lowered_for_clues(text)
        for pattern, clue in _BOILERPLATE_CLUES:
            if lowered is None or clue in lowered:
                yield from _found(pattern, text)


def _found(pattern: Pattern, text: str) -> Iterator[CheckFailure]:
    match = pattern.regex.search(text)
    if match is not None:
        yield CheckFailure("forbid", f"contains {_excerpt(match.group())!r}")


def _lowered_for_clues(text: str) -> str | None:
    """`text` lower-cased, to look for clues in; None when clues cannot tell (it holds a
    letter that IGNORECASE matches to an ASCII one lower() does not give)."""
    if not text.isascii() and not IGNORECASE_ODDITIES.isdisjoint(text):
        return None
    return text.lower()


def _links(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    if spec.links is None:  # for the type checker: _CHECKS runs this only with links
        return
    for url in dict.fromkeys(find_links(text)):
        reason = _link_refused(url, spec.links)
        if reason is not None:
            yield CheckFailure("links", f"links to {_excerpt(url)} ({reason})")


_MARKDOWN_LINK = re.compile(r"\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\)[^()\s<>]*)*)")
_AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^<>\s]*)>")
# A URL written out: a scheme and "//", or one of the schemes that have none.
_BARE_URL = re.compile(
    r"(?<![\w/])(?:[A-Za-z][A-Za-z0-9+.-]{1,31}://|(?:mailto|javascript|data|tel):)[^\s<>\"'`]+"
)
# Punctuation after a URL ends the sentence, not the URL.
_URL_TAIL = ".,;:!?)]*_"


def find_links(text: str) -> Iterator[str]:
    """The targets of a text's Markdown links and images, autolinks and bare URLs."""
    for regex in (_MARKDOWN_LINK, _AUTOLINK):
        for match in regex.finditer(text):
            yield match.group(1)
        # Found once: blank them out before looking for bare URLs.
        text = regex.sub(lambda match: " " * len(match.group()), text)
    for match in _BARE_URL.finditer(text):
        yield match.group().rstrip(_URL_TAIL)


def _link_refused(url: str, rule: LinkRule) -> str | None:
    """Why `rule` refuses `url`, or None; relative links ("/about", "#top") pass."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a valid URL"
    if not parts.scheme:
        return None
    if parts.scheme.lower() not in {scheme.lower() for scheme in rule.schemes}:
        return "scheme not allowed"
    if parts.scheme.lower() == "mailto":
        host = parts.path.rpartition("@")[2].lower() or None
    if rule.domains is not None and host is not None and not _in_domains(host, rule.domains):
        return "domain not allowed"
    return None


def _in_domains(host: str, domains: tuple[str, ...]) -> bool:
    host = host.rstrip(".").lower()
    return any(
        host == domain or host.endswith("." + domain)
        for domain in (domain.strip(".").lower() for domain in domains)
    )


def _pii(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    # "warn" never fails (the caller logs find_pii's findings); "redact" is repaired
    # before the checks run, so what is still found fails as under "block".
    if spec.pii not in ("block", "redact"):
        return
    for kind in dict.fromkeys(finding.kind for finding in find_pii(text)):
        yield CheckFailure("pii", f"contains {_PII_NAMES[kind]}")


_PII_NAMES = {
    "email": "an email address",
    "phone": "a phone number",
    "card": "a card number",
    "national id": "a national id number",
}


def _repeats(text: str, spec: CheckSpec) -> Iterator[CheckFailure]:
    # Each sentence told once, however often it came back.
    again: dict[str, str] = {}
    for sentence in repeated(text):
        again.setdefault(sentence.key, sentence.text)
    for said in again.values():
        yield CheckFailure("repeats", f"repeats the sentence {_excerpt(said)!r}")


def _excerpt(text: str) -> str:
    """`text` on one line, shortened to what a message can quote."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 3] + "..."


def _last_words(line: str) -> str:
    words = line.split()
    tail = " ".join(words[-_EXCERPT_WORDS:])
    return tail if len(words) <= _EXCERPT_WORDS else "..." + tail


@dataclass(frozen=True)
class _Check:
    """A check: its name, whether a spec switches it on, what it finds, and whether it
    runs on a json block's answer too (which is data: only forbid and pii)."""

    name: str
    applies: Callable[[CheckSpec], bool]
    run: Callable[[str, CheckSpec], Iterator[CheckFailure]]
    on_data: bool = False


# In the order of CheckSpec's fields: failures come in this order.
_CHECKS: tuple[_Check, ...] = (
    _Check("words", lambda spec: spec.words is not None, _words),
    _Check("chars", lambda spec: spec.chars is not None, _chars),
    _Check("complete", lambda spec: spec.complete, _complete),
    _Check("mentions", lambda spec: bool(spec.mentions), _mentions),
    _Check("forbid", lambda spec: bool(spec.forbid) or spec.boilerplate, _forbid, on_data=True),
    _Check("links", lambda spec: spec.links is not None, _links),
    # "warn" runs too: it fails nothing, the build tells what it found (trinity.review).
    _Check("pii", lambda spec: spec.pii is not None, _pii, on_data=True),
    _Check("repeats", lambda spec: spec.repeats, _repeats),
)


__all__ = ["DEFAULT_BOILERPLATE", "checks_applied", "evaluate", "find_links"]
