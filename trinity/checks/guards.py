"""Input guards: what a rendered prompt (and the data framed into it, which may come from
outside the site) holds that a model should not be handed: text written to take over
the model (prompt injection), and personal data.

The injection patterns are the well-known ways of addressing a model from inside its
input: telling it to ignore its instructions, giving it a new role or a jailbreak
persona, asking for its prompt, or a chat template's control tokens. Each names who it
speaks to ("your instructions", "act as if you were"), so that ordinary prose, like a
project that "acts as a gateway" or a summary of "previous releases", does not trip it.
"""

from __future__ import annotations

import re

from trinity.checks.pii import find_pii
from trinity.checks.spec import GuardFinding, GuardSpec

_JAILBROKEN = r"(?:unrestricted|unfiltered|uncensored|jailbroken|evil|DAN)"

INJECTION_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(source, re.IGNORECASE | re.MULTILINE)
    for source in (
        # "Ignore all previous instructions", "disregard the above rules".
        r"\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|my|of)\s+)*"
        r"(?:previous|above|prior|earlier|preceding|system|original)\s+"
        r"(?:instructions?|prompts?|rules|directions|directives|messages|context)\b",
        r"\bnew\s+instructions\s*:",
        # A new role: "you are now DAN", "from now on you will", "act as if you were".
        r"\byou\s+are\s+now\s+(?:an?\s+)?(?:in\s+)?(?:" + _JAILBROKEN + r"|developer\s+mode)\b",
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\b",
        r"\b(?:act|behave)\s+as\s+(?:if\s+you\s+(?:are|were)\b|an?\s+" + _JAILBROKEN + r"\b)",
        r"\bpretend\s+(?:to\s+be|you\s+are|that\s+you)\b",
        # Jailbreak personas.
        r"\bDAN\s+mode\b|\bdo\s+anything\s+now\b|\bjailbreak(?:ed|ing)?\b|\bdeveloper\s+mode\b",
        # Fishing for the prompt.
        r"\bsystem\s+prompt\b",
        r"\b(?:reveal|show|print|repeat|output|leak)\s+(?:me\s+)?(?:your|the)\s+"
        r"(?:(?:initial|original|hidden|secret)\s+)?(?:instructions|prompt)\b",
        # Chat template control tokens and instruction headers.
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?INST\]|<</?SYS>>",
        # The headers of instruction-tuning formats (Alpaca's "### Instruction:").
        r"^[ \t]*###[ \t]*(?:instruction|response)[ \t]*:?[ \t]*$",
    )
)
# Characters of context an excerpt shows on each side of what was found.
_CONTEXT = 24
_EXCERPT_CHARS = 80


def guard_input(text: str, spec: GuardSpec) -> list[GuardFinding]:
    """What the guards of `spec` find in `text`: injections first, then personal data,
    each in the order it appears; an action "off" finds nothing."""
    findings: list[GuardFinding] = []
    if spec.injection != "off":
        matches = sorted(
            (match for pattern in INJECTION_PATTERNS for match in pattern.finditer(text)),
            key=lambda match: match.start(),
        )
        findings.extend(
            GuardFinding("injection", _one_line(match.group()), spec.injection) for match in matches
        )
    if spec.pii != "off":
        pii = find_pii(text)
        # The excerpt shows where, never what: its own data and its neighbours' redacted.
        spans = [finding.span for finding in pii]
        for index, finding in enumerate(pii):
            start, end = finding.span
            before = text[max(start - _CONTEXT, spans[index - 1][1] if index else 0) : start]
            after_end = spans[index + 1][0] if index + 1 < len(pii) else len(text)
            after = text[end : min(end + _CONTEXT, after_end)]
            excerpt = f"{before}[redacted {finding.kind}]{after}"
            findings.append(GuardFinding("pii", _one_line(excerpt), spec.pii))
    return findings


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT_CHARS else flat[: _EXCERPT_CHARS - 3] + "..."


__all__ = ["INJECTION_PATTERNS", "guard_input"]
