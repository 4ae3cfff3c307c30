"""find_pii and redact_pii: each kind of personal data found by shape and checksum, and
the numbers a portfolio is full of (years, versions, ports, prices) left alone."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity.checks.pii import find_pii, redact_pii
from trinity.checks.spec import PiiFinding


def kinds(text: str) -> list[str]:
    return [finding.kind for finding in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        pytest.param(
            "Write to mara.quinn+site@example.co.uk today.",
            "mara.quinn+site@example.co.uk",
            id="email",
        ),
        pytest.param("Call +1 415-555-0132 now.", "+1 415-555-0132", id="phone-international"),
        pytest.param("Call (415) 555-0132 now.", "(415) 555-0132", id="phone-us-parentheses"),
        pytest.param("Ring +44 20 7946 0958 after six.", "+44 20 7946 0958", id="phone-uk"),
        pytest.param("Card 4111 1111 1111 1111 on file.", "4111 1111 1111 1111", id="card-spaces"),
        pytest.param("Card 4111-1111-1111-1111 on file.", "4111-1111-1111-1111", id="card-dashes"),
        pytest.param("Card 4111111111111111 on file.", "4111111111111111", id="card-together"),
        pytest.param("Amex 3782 822463 10005 on file.", "3782 822463 10005", id="card-amex"),
        pytest.param("SSN 123-45-6789 on file.", "123-45-6789", id="ssn"),
        pytest.param("NINO AB 12 34 56 C on file.", "AB 12 34 56 C", id="nino"),
        pytest.param("NINO AB123456C on file.", "AB123456C", id="nino-together"),
        pytest.param(
            "Pay GB82 WEST 1234 5698 7654 32 now.", "GB82 WEST 1234 5698 7654 32", id="iban-uk"
        ),
        pytest.param("Pay DE89370400440532013000 now.", "DE89370400440532013000", id="iban-de"),
    ],
)
def test_each_kind_is_found_where_it_is(text: str, found: str) -> None:
    [finding] = find_pii(text)
    start, end = finding.span
    assert text[start:end] == found


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("a@b.io", "email"),
        ("+1 415-555-0132", "phone"),
        ("4111 1111 1111 1111", "card"),
        ("123-45-6789", "national id"),
        ("AB 12 34 56 C", "national id"),
        ("GB82 WEST 1234 5698 7654 32", "national id"),
    ],
)
def test_each_kind_is_named_and_redacted(text: str, kind: str) -> None:
    assert kinds(text) == [kind]
    assert redact_pii(f"see {text} here") == f"see [redacted {kind}] here"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Tidewater started in 2025; Quill CLI in 2024.", id="years"),
        pytest.param("It ran from 2019-2023 and 1999\u20132024.", id="year-ranges"),
        pytest.param("Python 3.11.4 and Node 20.10.0 on Ubuntu 22.04.", id="versions"),
        pytest.param("Serve on port 8080 or 127.0.0.1:5432.", id="ports-and-addresses"),
        pytest.param("It costs $1,299.99, or \u20ac1.299,99, or 129999 cents.", id="prices"),
        pytest.param("ISBN 978-3-16-148410-0.", id="isbn"),
        pytest.param("Released on 2023-10-12 at 10:30, build 20231012.", id="dates"),
        pytest.param("Years 2019 2020 2021 2022.", id="a-list-of-years"),
        pytest.param("Card 4111 1111 1111 1112 fails Luhn.", id="card-bad-checksum"),
        pytest.param("SSN 000-12-3456, 666-12-3456, 912-34-5678.", id="ssn-never-issued"),
        pytest.param("IBAN GB82 WEST 1234 5698 7654 33.", id="iban-bad-checksum"),
        pytest.param("NINO GB 12 34 56 C.", id="nino-never-issued"),
        pytest.param("Clone git@github.com:mara/tidewater.git to start.", id="ssh-remote"),
        pytest.param(
            "Call 020 7946 0958 (no country code: read as a US number).", id="uk-national"
        ),
        pytest.param("A 1234567890123456789012 digit run.", id="long-digit-run"),
    ],
)
def test_numbers_that_are_not_personal_data_are_left_alone(text: str) -> None:
    assert find_pii(text) == []
    assert redact_pii(text) == text


def test_findings_come_in_order_and_never_overlap() -> None:
    text = "Mail a@b.io, call +1 415-555-0132, card 4111 1111 1111 1111, ssn 123-45-6789."
    findings = find_pii(text)
    assert [f.kind for f in findings] == ["email", "phone", "card", "national id"]
    spans = [f.span for f in findings]
    assert spans == sorted(spans)
    assert all(a[1] <= b[0] for a, b in pairwise(spans))
    assert redact_pii(text) == (
        "Mail [redacted email], call [redacted phone], card [redacted card], "
        "ssn [redacted national id]."
    )


@pytest.mark.parametrize(
    "text", ["", "   \n\t", "\u00e9\u00e8 \u65e5\u672c\u8a9e \U0001f600", "@", "++1"]
)
def test_odd_input_finds_nothing(text: str) -> None:
    assert find_pii(text) == []
    assert redact_pii(text) == text


def test_a_huge_text_is_scanned() -> None:
    # No timing asserted (CI shares the CPU): this only has to finish.
    text = "Tidewater moves sensor data from MQTT into PostgreSQL in 2025. " * 3000
    at = len(text) + len("Mail ")
    assert find_pii(text + "Mail a@b.io.") == [PiiFinding("email", (at, at + len("a@b.io")))]


@given(st.text(alphabet="ab@.+-() 0123456789\n", max_size=80))
def test_redacting_twice_is_redacting_once(text: str) -> None:
    once = redact_pii(text)
    assert redact_pii(once) == once
    assert find_pii(once) == []
