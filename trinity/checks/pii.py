"""Personal data in a text: email addresses, phone numbers, card numbers and national ids,
found (`find_pii`) and redacted (`redact_pii`).

Each kind is matched by its shape and, where it has one, its checksum, so that the
numbers a portfolio is full of (years, versions, ports, prices, ISBNs) are not taken for
personal data:

- emails: a regular expression (a local part, "@", a domain with a letter TLD), not an
  SSH remote such as git@github.com:owner/repo;
- phones: Google's libphonenumber (the `phonenumbers` package), numbers it holds VALID for
  their region; a number written without "+" and a country code is read as a US number
  (the region most English text means), so "+44 20 7946 0958" is found and a bare
  "020 7946 0958" is not;
- cards: 13 to 19 digits, together or in the groups cards print (by spaces or dashes),
  that pass the Luhn check;
- national ids: a US Social Security number written 123-45-6789 (no 000, 666 or 9xx
  area, no 00 group, no 0000 serial), a UK National Insurance number (AB 12 34 56 C), and
  an IBAN that passes its mod-97 check.

Where two kinds match the same characters, the first of email, card, national id, phone
wins: libphonenumber is the most lenient of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from trinity.checks.spec import PiiFinding, PiiKind

# The region a phone number without a country code is read in.
PHONE_REGION = "US"

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?![\w-]|:[\w/~])"
)
# 13 to 19 digits, written together or grouped as cards print them (4-4-4-4, 4-4-4-4-3,
# 4-6-5), and not part of a longer number.
_CARD = re.compile(
    r"(?<![\w.,-])(?:\d{13,19}|\d{4}(?:([ -])\d{4}){3}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{5})"
    r"(?![\w-]|[.,]\d)"
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])")
# HMRC's rules: neither of the first two letters is D, F, I, Q, U or V, the second is not
# O, and some prefixes are never issued.
_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)
# A country code, two check digits, then 11 to 30 letters and digits, in groups of four.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


def find_pii(text: str) -> list[PiiFinding]:
    """The personal data in `text`, in the order it appears; no two findings overlap."""
    kept: list[PiiFinding] = []
    for kind, spans in _DETECTORS:
        for span in spans(text):
            if not any(_overlap(span, found.span) for found in kept):
                kept.append(PiiFinding(kind, span))
    return sorted(kept, key=lambda finding: finding.span)


def redact_pii(text: str) -> str:
    """`text` with each finding replaced by "[redacted email]", "[redacted phone]" etc."""
    for finding in reversed(find_pii(text)):
        start, end = finding.span
        text = f"{text[:start]}[redacted {finding.kind}]{text[end:]}"
    return text


def _emails(text: str) -> Iterator[tuple[int, int]]:
    return (match.span() for match in _EMAIL.finditer(text))


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        if _luhn_valid(re.sub(r"[ -]", "", match.group())):
            yield match.span()


def _national_ids(text: str) -> Iterator[tuple[int, int]]:
    yield from (match.span() for match in _SSN.finditer(text))
    yield from (match.span() for match in _NINO.finditer(text))
    for match in _IBAN.finditer(text):
        if _iban_valid(match.group().replace(" ", "")):
            yield match.span()


# Seven digits, with the separators numbers are written with between them: the fewest a
# valid phone number has, country code included (Niue's "+683 4002").
_PHONE_DIGITS = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6}")


def _phones(text: str) -> Iterator[tuple[int, int]]:
    # The matcher is slow, and most prompts and answers hold no run of digits that long:
    # those it never sees. Imported here, only by builds whose checks or guards look for PII.
    if _PHONE_DIGITS.search(text) is None:
        return
    from phonenumbers import Leniency, PhoneNumberMatcher

    for match in PhoneNumberMatcher(text, PHONE_REGION, leniency=Leniency.VALID):
        yield match.start, match.end


_DETECTORS: tuple[tuple[PiiKind, Callable[[str], Iterator[tuple[int, int]]]], ...] = (
    ("email", _emails),
    ("card", _cards),
    ("national id", _national_ids),
    ("phone", _phones),
)


def _luhn_valid(digits: str) -> bool:
    """The card-number checksum: doubling every second digit from the right."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    """ISO 13616: the first four characters moved to the end, letters as 10..35, mod 97 is 1."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


__all__ = ["PHONE_REGION", "find_pii", "redact_pii"]
