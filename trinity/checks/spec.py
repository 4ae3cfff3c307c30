"""What the checks are: the types a site owner's `checks:`, `guards:` and `judge:` settings
are read into (by trinity.config and trinity.site), and what a failed check reports.

Plain frozen data; the rules that run them live in trinity.checks.evaluate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

PiiAction = Literal["block", "redact", "warn"]
GuardAction = Literal["block", "warn", "off"]
PiiKind = Literal["email", "phone", "card", "national id"]


@dataclass(frozen=True)
class Range:
    """Inclusive bounds; None for no bound."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Pattern:
    """A `forbid` entry as written (`source`) and compiled: a plain phrase matches
    case-insensitively as words; `/.../` is a regular expression."""

    source: str
    regex: re.Pattern[str] = field(compare=False)


@dataclass(frozen=True)
class LinkRule:
    """Which links an answer may hold: URL schemes, and (when given) only these domains
    and their subdomains. Relative links are always allowed."""

    schemes: tuple[str, ...] = ("http", "https", "mailto")
    domains: tuple[str, ...] | None = None


@dataclass(frozen=True)
class CheckSpec:
    """The checks one block's answer must pass. Site-wide defaults (`checks:` in
    settings.yaml) are overlaid, key by key, by the block's own `checks:`."""

    words: Range | None = None
    chars: Range | None = None
    # Ends on a complete sentence (or a finished list item, table row, code fence), with
    # no dangling list marker such as a final "3.".
    complete: bool = True
    # Facts that must appear, already rendered from the page's data ("{{ item.language }}"
    # -> "Python"); matched case-insensitively.
    mentions: tuple[str, ...] = ()
    forbid: tuple[Pattern, ...] = ()
    # Model boilerplate ("As an AI", "Sure, here is", "[Your Name]", "lorem ipsum") is
    # forbidden too unless `boilerplate: allow`.
    boilerplate: bool = True
    links: LinkRule | None = None
    pii: PiiAction | None = None
    # No sentence said twice (base models loop).
    repeats: bool = True


@dataclass(frozen=True)
class GuardSpec:
    """Input guards, run on every rendered prompt (and the data framed into it)."""

    injection: GuardAction = "warn"
    pii: GuardAction = "warn"


@dataclass(frozen=True)
class JudgeSpec:
    """An LLM judge: a model (or alias) scores each answer that passed its checks against
    `criteria` and the page's facts, from 0 to 1; below `threshold` counts as a failed check."""

    model: str
    criteria: tuple[str, ...] = ()
    threshold: float = 0.7


@dataclass(frozen=True)
class CheckFailure:
    """One check an answer did not pass, in words a model and a site owner both read:
    `check` is its name ("words"), `message` what was wrong ("212 words; at most 120")."""

    check: str
    message: str

    def __str__(self) -> str:
        return f"{self.check}: {self.message}"


@dataclass(frozen=True)
class PiiFinding:
    """Personal data found in a text: what kind, and where (`span`, as in `text[start:end]`).
    The data itself is not kept, so a finding can be logged."""

    kind: PiiKind
    span: tuple[int, int]


@dataclass(frozen=True)
class GuardFinding:
    """What an input guard found in a rendered prompt: `kind` "injection" or "pii", a
    short `excerpt` around it (personal data in it redacted), and the `action` the site's
    `guards:` settings ask for ("block" fails the block; "warn" logs it)."""

    kind: Literal["injection", "pii"]
    excerpt: str
    action: Literal["block", "warn"]


__all__ = [
    "CheckFailure",
    "CheckSpec",
    "GuardAction",
    "GuardFinding",
    "GuardSpec",
    "JudgeSpec",
    "LinkRule",
    "Pattern",
    "PiiAction",
    "PiiFinding",
    "PiiKind",
    "Range",
]
