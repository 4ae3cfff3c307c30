"""evaluate, compile_pattern and correction: every check of a CheckSpec, passing and
failing, told in words a model and a site owner both read."""

from __future__ import annotations

import re
import string
import sys
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity.checks import evaluate as evaluate_module
from trinity.checks.correction import correction
from trinity.checks.evaluate import (
    DEFAULT_BOILERPLATE,
    IGNORECASE_ODDITIES,
    evaluate,
    find_links,
)
from trinity.checks.patterns import compile_pattern
from trinity.checks.spec import CheckFailure, CheckSpec, LinkRule, Range

# Only the check under test: the others off.
NOTHING = CheckSpec(complete=False, boilerplate=False, repeats=False)


def failures(text: str, spec: CheckSpec, *, format: str = "markdown") -> list[str]:
    return [str(failure) for failure in evaluate(text, spec, format=format)]


def only(**checks: Any) -> CheckSpec:
    return replace(NOTHING, **checks)


# ---------------------------------------------------------------------------- words, chars


@pytest.mark.parametrize(
    ("text", "bounds", "expected"),
    [
        ("one two three", Range(min=2, max=3), []),
        ("one two three four", Range(max=3), ["words: 4 words; at most 3"]),
        ("one two", Range(min=3), ["words: 2 words; at least 3"]),
        # Markdown marks and dashes are not words.
        ("- one \u2014 two\n- three", Range(max=3), []),
        ("", Range(min=1), ["words: 0 words; at least 1"]),
    ],
)
def test_words(text: str, bounds: Range, expected: list[str]) -> None:
    assert failures(text, only(words=bounds)) == expected


def test_chars() -> None:
    assert failures("x" * 10, only(chars=Range(max=10))) == []
    assert failures("x" * 11, only(chars=Range(max=10))) == ["chars: 11 chars; at most 10"]
    assert failures("x", only(chars=Range(min=5))) == ["chars: 1 chars; at least 5"]


# ---------------------------------------------------------------------------- complete


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("It ends here.", id="sentence"),
        pytest.param('She said "go."', id="closing-quote"),
        pytest.param("Really? Yes!", id="question-exclamation"),
        pytest.param("Languages:\n\n- Python\n- Go\n- Rust", id="list-of-fragments"),
        pytest.param("Steps:\n\n1. Clone it.\n2. Run make.", id="list-of-sentences"),
        pytest.param("Hits:\n\n| tier | hits |\n|---|---|\n| memory | 10 |", id="table"),
        pytest.param("Run:\n\n```sh\nmake test\n```", id="closed-fence"),
        pytest.param("It ends here.\n\n", id="trailing-newlines"),
        pytest.param("Ce projet est \u00e9crit en Python.", id="unicode"),
    ],
)
def test_complete_passes(text: str) -> None:
    assert failures(text, only(complete=True)) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "Tidewater is fast. It moves sensor data from MQTT into",
            "ends mid-sentence: '...moves sensor data from MQTT into'",
            id="cut-sentence",
        ),
        pytest.param("It was cut", "ends mid-sentence: 'It was cut'", id="short-cut"),
        pytest.param(
            "What I learned:\n\n1. Metrics nobody reads are noise.\n2. Alerts need owners.\n3.",
            "ends with an empty list item '3.'",
            id="harbor-metrics",
        ),
        pytest.param("Items:\n\n- one\n-", "ends with an empty list item '-'", id="bare-dash"),
        pytest.param(
            "Steps:\n\n1. Clone it.\n2. Then run the",
            "ends mid-sentence: '2. Then run the'",
            id="item-cut-among-sentences",
        ),
        pytest.param("Tools:\n\n- Python,", "ends mid-sentence: '- Python,'", id="item-on-comma"),
        pytest.param(
            "Intro.\n\n## Next", "ends with a heading and nothing under it: '## Next'", id="heading"
        ),
        pytest.param("Run:\n\n```sh\nmake test", "ends with '```' never closed", id="open-fence"),
        pytest.param("It is **very fast.", "ends with '**' never closed", id="open-bold"),
        pytest.param("Three things:", "ends mid-sentence: 'Three things:'", id="colon"),
        pytest.param("", "is empty", id="empty"),
        pytest.param(" \n\t ", "is empty", id="whitespace"),
    ],
)
def test_complete_fails(text: str, message: str) -> None:
    assert failures(text, only(complete=True)) == [f"complete: {message}"]


sentence = st.lists(
    st.sampled_from(["boats", "Oslo", "3.5", "**bold**", "`make test`", "[docs](https://a.b)"]),
    min_size=1,
    max_size=5,
).map(lambda words: "It " + " ".join(words) + ".")
fragment = st.sampled_from(["Python", "Go 1.22", "`asyncio`", "**PostgreSQL**"])
paragraph = st.lists(sentence, min_size=1, max_size=3).map(" ".join)
bullets = st.lists(sentence | fragment, min_size=1, max_size=4).map(
    lambda items: "\n".join(f"- {item}" for item in items)
)
code = st.sampled_from(["```sh\nmake test. Then\n```", "```\n# not a heading\n- nor an item\n```"])
section = st.tuples(st.sampled_from(["## Lessons", "### Next"]), paragraph).map("\n\n".join)
table = st.just("| tier | hits |\n|---|---|\n| memory | 10 |")
# A whole answer: an opening sentence, then finished blocks. A list of fragments may end
# one without a full stop, but not one whose other items are sentences.
document = st.tuples(sentence, st.lists(paragraph | code | section | table, max_size=4)).map(
    lambda parts: "\n\n".join([parts[0], *parts[1]])
)


@given(document, st.sampled_from(["", "\n\n- Python\n- Go"]))
def test_a_whole_answer_is_complete(answer: str, fragments: str) -> None:
    assert failures(answer + fragments, only(complete=True)) == []


@given(bullets)
def test_a_list_is_complete_unless_its_last_item_alone_lacks_a_stop(items: str) -> None:
    *earlier, last = items.split("\n")
    cut = any(item.endswith(".") for item in earlier) and not last.endswith(".")
    assert bool(failures("Intro.\n\n" + items, only(complete=True))) == cut


# ---------------------------------------------------------------------------- mentions


def test_mentions_are_found_in_any_case_and_spacing() -> None:
    spec = only(mentions=("Python", "streaming  ETL", ""))
    assert failures("A python library for Streaming\nETL work.", spec) == []


def test_each_missing_mention_fails() -> None:
    spec = only(mentions=("Python", "Go", "PostgreSQL"))
    assert failures("A good Python tool.", spec) == [
        "mentions: does not mention 'Go'",  # not in "good": whole words
        "mentions: does not mention 'PostgreSQL'",
    ]


def test_a_mention_with_punctuation_is_found() -> None:
    assert failures("Written in C++ and C#.", only(mentions=("C++", "C#", ".NET"))) == [
        "mentions: does not mention '.NET'"
    ]


# ---------------------------------------------------------------------------- forbid


def test_a_plain_phrase_is_words_in_any_case() -> None:
    pattern = compile_pattern("lorem ipsum")
    assert pattern.source == "lorem ipsum"
    assert pattern.regex.search("Some LOREM\n ipsum here")
    assert not pattern.regex.search("dolorem ipsumque")


def test_a_phrase_ending_in_punctuation_is_bounded_only_where_it_has_words() -> None:
    assert compile_pattern("[TODO]").regex.search("x[TODO]y")
    assert compile_pattern("etc.").regex.search("and so on, etc.")


def test_a_slashed_entry_is_a_regular_expression() -> None:
    pattern = compile_pattern("/fo+bar/")
    assert pattern.regex.search("a foooobar")
    assert not pattern.regex.search("FOOBAR")  # as written: case counts


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("/fo(o/", "not a valid regular expression"),
        ("/a*/", "matches an empty text"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("//", "an empty regular expression"),
    ],
)
def test_a_bad_entry_is_a_readable_value_error(source: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        compile_pattern(source)


def test_forbidden_patterns_fail_with_what_was_found() -> None:
    spec = only(forbid=(compile_pattern("lorem ipsum"), compile_pattern("/v\\d+/")))
    assert failures("Lorem Ipsum dolor, v2 soon.", spec) == [
        "forbid: contains 'Lorem Ipsum'",
        "forbid: contains 'v2'",
    ]
    assert failures("Plain words.", spec) == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("As an AI, I cannot know.", "As an AI"),
        ("As a large language model I think so.", "As a large language model"),
        ("Sure, here is the intro.", "Sure, here is"),
        ("Sure! Here's the intro.", "Sure! Here's"),
        ("Certainly! Here are the lessons.", "Certainly! Here are"),
        ("I hope this helps!", "I hope this helps"),
        ("Contact [Your Name] today.", "[Your Name]"),
        ("See [Insert link here].", "[Insert link here]"),
        ("Built in {{ item.language }}.", "{{ item.language }}"),
        ("Lorem ipsum dolor sit amet.", "Lorem ipsum"),
    ],
)
def test_model_boilerplate_is_forbidden_by_default(text: str, found: str) -> None:
    assert failures(text, only(boilerplate=True)) == [f"forbid: contains {found!r}"]
    assert failures(text, only(boilerplate=False)) == []


@pytest.mark.parametrize(
    "text",
    [
        "Tidewater is a streaming ETL library, and it is sure to help.",
        "See [your dashboard](https://example.com/d) for details.",  # a link, not a blank
        "Certainly the fastest of them.",
        "I hope to finish it this year.",
        "We keep [redacted email] out.",
    ],
)
def test_ordinary_prose_is_not_boilerplate(text: str) -> None:
    assert failures(text, only(boilerplate=True)) == []


def test_the_default_boilerplate_is_a_tuple_of_patterns() -> None:
    assert len(DEFAULT_BOILERPLATE) >= 8
    assert all(pattern.regex.flags for pattern in DEFAULT_BOILERPLATE)


def test_the_letters_ignorecase_matches_to_ascii_ones_beyond_lower_are_known() -> None:
    """The clues (`_lowered_for_clues`) hold only while no other letter matches an ASCII
    one under IGNORECASE than what lower() gives: a newer Unicode could add one."""
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    found = {
        match
        for letter in string.ascii_letters
        for match in re.findall(letter, everything, re.IGNORECASE)
        if match.lower() != letter.lower()
    }
    assert found == IGNORECASE_ODDITIES


boilerplate_ish = st.lists(
    st.sampled_from(
        [
            "As an AI", "aS aN a\u0131", "as a large language model", "my knowledge cut-off",
            "Sure! Here's", "certainly\nhere are", "I hope this helps", "I hope that hELPS",
            "[Your Name]", "[insert link here](x)", "{{ name }}", "Lorem \u0130psum",
            "lorem ip\u017fum", " ", "\n", ".", "a", "\u2019", "here", "cut", "helps", "[",
            "{{", "Ünïcode",
        ]
    ),
    max_size=12,
).map("".join)  # fmt: skip


@given(st.one_of(boilerplate_ish, st.text()))
def test_the_clues_never_hide_a_boilerplate_match(text: str) -> None:
    with mock.patch.object(evaluate_module, "_lowered_for_clues", lambda text: None):
        every_pattern_run = failures(text, only(boilerplate=True))
    assert failures(text, only(boilerplate=True)) == every_pattern_run


# ---------------------------------------------------------------------------- links


def test_links_of_every_form_are_found() -> None:
    text = (
        'See [docs](https://a.example/x_(y) "t"), ![img](/logo.png), <ftp://files.example/f>, '
        "and https://b.example/page. Or mailto:me@c.example, [top](#top)."
    )
    assert list(find_links(text)) == [
        "https://a.example/x_(y)",
        "/logo.png",
        "#top",
        "ftp://files.example/f",
        "https://b.example/page",
        "mailto:me@c.example",
    ]


def test_allowed_schemes_and_relative_links_pass() -> None:
    spec = only(links=LinkRule())
    text = "See [home](/), [top](#top), [a](page.html), https://x.example and <mailto:a@b.example>."
    assert failures(text, spec) == []


def test_a_scheme_not_allowed_fails() -> None:
    spec = only(links=LinkRule())
    assert failures("Get it at [x](ftp://x) or javascript:alert(1) now.", spec) == [
        "links: links to ftp://x (scheme not allowed)",
        "links: links to javascript:alert(1 (scheme not allowed)",
    ]


def test_domains_allow_themselves_and_their_subdomains() -> None:
    spec = only(links=LinkRule(domains=("example.com",)))
    assert failures("[a](https://example.com/x) and https://docs.EXAMPLE.com/y.", spec) == []
    assert failures("Go to <https://evil.example> or https://notexample.com.", spec) == [
        "links: links to https://evil.example (domain not allowed)",
        "links: links to https://notexample.com (domain not allowed)",
    ]
    assert failures("Mail [me](mailto:a@evil.example).", spec) == [
        "links: links to mailto:a@evil.example (domain not allowed)"
    ]


def test_a_link_is_told_once_and_a_broken_url_is_named() -> None:
    spec = only(links=LinkRule())
    assert failures("ftp://x and ftp://x again.", spec) == [
        "links: links to ftp://x (scheme not allowed)"
    ]
    assert failures("See http://[::1 for it.", spec) == [
        "links: links to http://[::1 (not a valid URL)"
    ]


def test_no_link_rule_checks_no_link() -> None:
    assert failures("[x](ftp://x)", NOTHING) == []


# ---------------------------------------------------------------------------- pii


@pytest.mark.parametrize("action", ["block", "redact"])
def test_pii_fails_when_blocked_or_left_unredacted(action: str) -> None:
    text = "Mail a@b.io or c@d.io, call +1 415-555-0132."
    assert failures(text, only(pii=action)) == [
        "pii: contains an email address",
        "pii: contains a phone number",
    ]


def test_pii_warn_and_no_pii_setting_never_fail() -> None:
    text = "Mail a@b.io."
    assert failures(text, only(pii="warn")) == []
    assert failures(text, NOTHING) == []
    assert failures("Tidewater (2025) runs on port 8080.", only(pii="block")) == []


# ---------------------------------------------------------------------------- repeats


def test_a_sentence_said_twice_fails_once() -> None:
    text = (
        "It moves sensor data fast. It is small.\n\n"
        "It moves  SENSOR data fast. It moves sensor data fast."
    )
    assert failures(text, only(repeats=True)) == [
        "repeats: repeats the sentence 'It moves SENSOR data fast.'"
    ]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("It works. It works. Thank you. Thank you.", id="short-sentences"),
        pytest.param("```py\nx = compute(a, b, c)\nx = compute(a, b, c)\n```", id="code"),
        pytest.param("| a b c d | x |\n|---|---|\n| a b c d | x |", id="table"),
        pytest.param("It moves sensor data fast. It moves sensor data faster.", id="different"),
    ],
)
def test_what_is_not_a_repeated_sentence(text: str) -> None:
    assert failures(text, only(repeats=True)) == []


# ---------------------------------------------------------------------------- all together


def test_failures_come_in_the_order_of_the_spec() -> None:
    spec = CheckSpec(
        words=Range(max=5),
        mentions=("Python",),
        forbid=(compile_pattern("cloud"),),
        links=LinkRule(),
        pii="block",
    )
    said = "Sure, here is a cloud tool at ftp://x for a@b.io."
    text = f"{said} {said} And"
    assert [failure.check for failure in evaluate(text, spec)] == [
        "words",
        "complete",
        "mentions",
        "forbid",
        "forbid",
        "links",
        "pii",
        "repeats",
    ]


def test_a_json_answer_gets_only_forbid_and_pii() -> None:
    spec = CheckSpec(words=Range(max=1), mentions=("Python",), links=LinkRule(), pii="block")
    text = '{"name": "Tidewater", "url": "ftp://x", "contact": "a@b.io", "note": "lorem ipsum"}'
    assert failures(text, spec, format="json") == [
        "forbid: contains 'lorem ipsum'",
        "pii: contains an email address",
    ]
    assert failures('{"name": "Tidewater"}', spec, format="json") == []


def test_a_good_answer_passes_the_default_checks() -> None:
    text = (
        "Tidewater is a Python library I started in 2025. It streams sensor data from MQTT "
        "into PostgreSQL.\n\n- Small: one process.\n- Fast: batches of 10k rows."
    )
    assert evaluate(text, CheckSpec(mentions=("Python",), links=LinkRule())) == []


def test_a_huge_answer_is_checked() -> None:
    # No timing asserted (CI shares the CPU): this only has to finish.
    text = " ".join(f"Sentence number {n} is here." for n in range(20_000))
    spec = CheckSpec(words=Range(max=100), mentions=("absent",), links=LinkRule(), pii="block")
    assert [failure.check for failure in evaluate(text, spec)] == ["words", "mentions"]


@given(st.text(max_size=200))
def test_any_text_is_checked_without_error(text: str) -> None:
    spec = CheckSpec(
        words=Range(1, 50), chars=Range(max=100), mentions=("x",), links=LinkRule(), pii="block"
    )
    for failure in evaluate(text, spec):
        assert failure.message and "\n" not in failure.message


# ---------------------------------------------------------------------------- correction


def test_the_correction_states_each_failure_then_asks_again() -> None:
    told = correction(
        [
            CheckFailure("words", "212 words; at most 120"),
            CheckFailure("chars", "14 chars; at least 20"),
            CheckFailure("mentions", "does not mention 'Python'"),
            CheckFailure("complete", "ends with an empty list item '3.'"),
            CheckFailure("judge", "scored 0.4, below 0.7"),
        ]
    )
    assert told == (
        "Your answer has 212 words; at most 120 are allowed.\n"
        "Your answer has 14 chars; at least 20 are needed.\n"
        "Your answer does not mention 'Python'.\n"
        "Your answer ends with an empty list item '3.'.\n"
        "judge: scored 0.4, below 0.7.\n"
        "Write the answer again, following these rules. Reply with the answer only."
    )


def test_every_check_reads_as_a_sentence_in_the_correction() -> None:
    spec = CheckSpec(words=Range(max=3), mentions=("Go",), links=LinkRule(), pii="block")
    found = evaluate("Sure, here is ftp://x for a@b.io and", spec)
    lines = correction(found).split("\n")
    assert len(lines) == len(found) + 1
    assert all(line.startswith("Your answer ") for line in lines[:-1])
