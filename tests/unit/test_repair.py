"""repair: each cheap fix, named when it changed the answer, only where its check applies;
repairing twice is repairing once, and a passing answer is never made to fail."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity.checks.evaluate import evaluate
from trinity.checks.repair import repair
from trinity.checks.spec import CheckSpec, LinkRule, Range

DEFAULTS = CheckSpec()
NOTHING = CheckSpec(complete=False, boilerplate=False, repeats=False)


def only(**checks: Any) -> CheckSpec:
    return replace(NOTHING, **checks)


# ---------------------------------------------------------------------------- preamble


@pytest.mark.parametrize(
    "preamble",
    [
        "Sure! Here's a two-sentence introduction:",
        "Sure, here is the About section.",
        "Certainly! Here are the lessons:",
        "Of course. Here is the summary:",
        "Here is a short summary:",
        "Okay, the paragraph follows:",
    ],
)
def test_a_preamble_line_is_dropped(preamble: str) -> None:
    answer = "Tidewater streams sensor data into PostgreSQL."
    assert repair(f"{preamble}\n\n{answer}", DEFAULTS) == (answer, ("preamble",))


def test_a_sign_off_line_is_dropped() -> None:
    answer = "Tidewater streams sensor data into PostgreSQL."
    text = f"{answer}\n\nI hope this helps! Let me know if you need more."
    assert repair(text, DEFAULTS) == (answer, ("preamble",))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Sure, here is the intro:", id="only-a-preamble"),
        pytest.param("Of course, Tidewater is written in Python.\n\nIt is fast.", id="content"),
        pytest.param("Here is why it matters.\n\nIt is fast.", id="no-colon"),
    ],
)
def test_what_is_not_a_droppable_preamble_stays(text: str) -> None:
    assert repair(text, only(boilerplate=True))[0] == text


def test_no_preamble_is_dropped_when_boilerplate_is_allowed() -> None:
    text = "Sure! Here's the intro:\n\nIt is fast."
    assert repair(text, NOTHING) == (text, ())


# ---------------------------------------------------------------------------- fence


@pytest.mark.parametrize("language", ["", "markdown", "md", "text"])
def test_a_wrapping_fence_is_unwrapped(language: str) -> None:
    text = f"```{language}\nTidewater is **fast**.\n\n- It streams.\n```"
    assert repair(text, NOTHING) == ("Tidewater is **fast**.\n\n- It streams.", ("fence",))


def test_a_json_answer_is_unwrapped_from_its_fence() -> None:
    text = '```json\n{"name": "Tidewater"}\n```'
    assert repair(text, DEFAULTS, format="json") == ('{"name": "Tidewater"}', ("fence",))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("```python\nprint('hi')\n```", id="code-in-another-language"),
        pytest.param("```\na\n```\n\nThen.\n\n```\nb\n```", id="two-fences"),
        pytest.param("Run:\n\n```sh\nmake\n```", id="fence-inside"),
    ],
)
def test_code_that_is_the_answer_stays_fenced(text: str) -> None:
    assert repair(text, NOTHING) == (text, ())


# ---------------------------------------------------------------------------- headings


def test_headings_become_bold_lines() -> None:
    text = "# Tidewater\n\nIt is fast.\n\n### What **I** learned ###\n\nA lot."
    assert repair(text, NOTHING) == (
        "**Tidewater**\n\nIt is fast.\n\n**What I learned**\n\nA lot.",
        ("headings",),
    )


def test_headings_in_code_and_text_blocks_stay() -> None:
    code = "Config:\n\n```yaml\n# a comment\n```"
    assert repair(code, NOTHING) == (code, ())
    assert repair("# Not markdown here.", NOTHING, format="text") == ("# Not markdown here.", ())


# ---------------------------------------------------------------------------- repeats


def test_repeated_sentences_are_dropped() -> None:
    text = (
        "Tidewater moves sensor data fast. It is small. Tidewater moves sensor data fast.\n\n"
        "Tidewater moves  SENSOR data fast.\n\n- It is a Python library.\n- It is a Python library."
    )
    assert repair(text, only(repeats=True)) == (
        "Tidewater moves sensor data fast. It is small.\n\n- It is a Python library.",
        ("repeats",),
    )


def test_short_sentences_said_twice_stay() -> None:
    assert repair("It works. It works.", only(repeats=True)) == ("It works. It works.", ())


# ---------------------------------------------------------------------------- pii


def test_pii_is_redacted_only_when_asked() -> None:
    text = "Mail mara@example.com for details."
    assert repair(text, only(pii="redact")) == ("Mail [redacted email] for details.", ("pii",))
    assert repair(text, only(pii="block")) == (text, ())
    assert repair(text, only(pii="warn")) == (text, ())


# ---------------------------------------------------------------------------- trim


def test_an_unfinished_answer_is_cut_to_its_last_sentence() -> None:
    assert repair("It is fast. It moves sensor data from", DEFAULTS) == ("It is fast.", ("trim",))


def test_the_harbor_metrics_list_loses_its_empty_item() -> None:
    text = "Three things:\n\n1. Metrics nobody reads are noise.\n2. Alerts need an owner.\n3."
    assert repair(text, DEFAULTS) == (text.removesuffix("\n3."), ("trim",))


def test_an_answer_over_its_maximum_is_cut_by_whole_sentences() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert repair(text, only(words=Range(max=7))) == ("One two three. Four five six.", ("trim",))
    assert repair(text, only(chars=Range(max=20))) == ("One two three.", ("trim",))


def test_a_cut_to_the_maximum_ends_cleanly() -> None:
    text = "Steps:\n\n1. Clone it now.\n2. Run the tests.\n3. Ship it today."
    assert repair(text, only(words=Range(max=8))) == (
        "Steps:\n\n1. Clone it now.\n2. Run the tests.",
        ("trim",),
    )


def test_an_incomplete_answer_with_no_clean_end_within_the_maximum_still_loses_its_end() -> None:
    text = "It is a long first sentence. Cut"
    spec = replace(DEFAULTS, words=Range(max=2))
    assert repair(text, spec) == ("It is a long first sentence.", ("trim",))


def test_no_clean_end_leaves_the_answer_as_it_is() -> None:
    assert repair("no end at all", DEFAULTS) == ("no end at all", ())


# ---------------------------------------------------------------------------- together


def test_fixes_combine_and_are_named_in_order() -> None:
    text = (
        "Sure! Here's the summary:\n\n```markdown\n## Tidewater\n\nIt streams sensor data fast. "
        "It streams sensor data fast. Mail a@b.io. It was\n```"
    )
    spec = replace(DEFAULTS, pii="redact")
    repaired, names = repair(text, spec)
    assert repaired == "**Tidewater**\n\nIt streams sensor data fast. Mail [redacted email]."
    assert names == ("preamble", "fence", "pii", "headings", "repeats", "trim")
    assert evaluate(repaired, spec) == []


def test_a_json_answer_gets_only_fence_and_pii() -> None:
    text = '```json\n{"a": "Sure! Here is a@b.io", "b": "x. x. x."}\n```'
    spec = replace(DEFAULTS, pii="redact", words=Range(max=1))
    assert repair(text, spec, format="json") == (
        '{"a": "Sure! Here is [redacted email]", "b": "x. x. x."}',
        ("fence", "pii"),
    )


def test_a_passing_answer_is_never_made_to_fail() -> None:
    # Demoting the heading would make the answer longer than its chars maximum.
    text = "# Tidewater\n\nFast."
    spec = replace(DEFAULTS, chars=Range(max=len(text)))
    assert evaluate(text, spec) == []
    assert repair(text, spec) == (text, ())


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "\u65e5\u672c\u8a9e\u3002", "\U0001f600"])
def test_odd_input_is_repaired_without_error(text: str) -> None:
    repaired, _ = repair(text, DEFAULTS)
    assert repair(repaired, DEFAULTS)[0] == repaired


def test_a_huge_answer_is_repaired() -> None:
    # No timing asserted (CI shares the CPU): this only has to finish.
    text = " ".join(f"Sentence number {n} is here." for n in range(5_000)) + " And then"
    repaired, names = repair(text, replace(DEFAULTS, words=Range(max=100)))
    assert names == ("trim",)
    assert repaired.endswith("Sentence number 19 is here.")


# ---------------------------------------------------------------------------- properties

pieces = st.sampled_from(
    [
        "Sure! Here's the intro:",
        "It streams sensor data fast.",
        "It is small.",
        "# Tidewater",
        "## What I learned",
        "- It is a Python library.",
        "1. Metrics are noise.",
        "3.",
        "-",
        "```",
        "```markdown",
        "Mail a@b.io now.",
        "I hope this helps!",
        "It was cut and",
        "**bold",
        "| a | b |",
        "",
    ]
)
answers = st.lists(pieces, max_size=10).map("\n".join)
specs = st.builds(
    CheckSpec,
    words=st.none() | st.builds(Range, max=st.integers(0, 30)),
    chars=st.none() | st.builds(Range, max=st.integers(0, 200)),
    complete=st.booleans(),
    boilerplate=st.booleans(),
    links=st.none() | st.just(LinkRule()),
    pii=st.sampled_from([None, "block", "redact", "warn"]),
    repeats=st.booleans(),
)
formats = st.sampled_from(["markdown", "text", "json"])
FAST = settings(max_examples=300, database=None, deadline=None)


@FAST
@given(answers, specs, formats)
def test_repairing_twice_is_repairing_once(text: str, spec: CheckSpec, format: str) -> None:
    once, _ = repair(text, spec, format=format)
    assert repair(once, spec, format=format) == (once, ())


@FAST
@given(answers, specs, formats)
def test_a_passing_answer_still_passes(text: str, spec: CheckSpec, format: str) -> None:
    if evaluate(text, spec, format=format) == []:
        repaired, _ = repair(text, spec, format=format)
        assert evaluate(repaired, spec, format=format) == []


@FAST
@given(answers, specs, formats)
def test_names_are_given_only_for_a_change(text: str, spec: CheckSpec, format: str) -> None:
    repaired, names = repair(text, spec, format=format)
    assert (repaired != text) == bool(names)
    allowed = {"fence", "pii"} if format == "json" else set()
    assert not allowed or set(names) <= allowed


# Text made of the characters Markdown structure is made of, and the words boilerplate is.
markdownish = st.text(alphabet="ab .!?:\n\t-*+#1)`[]()|>~\"'_@", max_size=120)


@FAST
@given(markdownish, specs, formats)
def test_repairing_any_text_twice_is_repairing_once(
    text: str, spec: CheckSpec, format: str
) -> None:
    once, _ = repair(text, spec, format=format)
    assert repair(once, spec, format=format) == (once, ())
