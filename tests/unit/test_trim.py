"""trim_truncated: an answer cut off at max_tokens ends where it last made sense.

Examples first (the Harbor Metrics page that showed a bare "3." among them), then the
properties that hold for any text: the result is a prefix, trimming it again changes
nothing, it never ends in a bare list marker or a heading, and a model's finished
blocks are never dropped.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity.llm.trim import trim_truncated

# The "What I learned" block of the example's Harbor Metrics page, as the model's token
# limit left it: the last sentence end the old trim found was the list marker "3.".
HARBOR_LIST = (
    "Building Harbor Metrics taught me three things:\n\n"
    "1. Metrics nobody reads are noise.\n"
    "2. Alerts need an owner, and finding one will take\n"
)
HARBOR_PROSE = "Building Harbor Metrics taught me that dashboards are cheap."

# Said independently of the module: a last line that is only list (or quote) markers,
# or an ATX heading.
BARE_MARKER_LINE = re.compile(r"\s*(?:(?:[-*+>]|\d+[.)])\s*)+")
HEADING_LINE = re.compile(r"\s{0,3}#{1,6}(?:\s|$)")


def last_written_line(text: str) -> str | None:
    lines = [line for line in text.split("\n") if line.strip()]
    return lines[-1] if lines else None


def fence_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.lstrip().startswith("```"))


# ---------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(HARBOR_LIST + "3.", HARBOR_LIST, id="harbor-list-bare-marker"),
        pytest.param(HARBOR_LIST + "3. Keep the", HARBOR_LIST, id="harbor-list-unfinished-item"),
        pytest.param(
            HARBOR_PROSE + " Trust in them will take\n3.", HARBOR_PROSE, id="harbor-prose"
        ),
    ],
)
def test_the_harbor_metrics_answer(text: str, expected: str) -> None:
    assert trim_truncated(text) == expected


@pytest.mark.parametrize("marker", ["3.", "-", "*", "+", "3)", "12.", "  -", "> 2."])
def test_a_dangling_list_marker_is_dropped(marker: str) -> None:
    assert trim_truncated(f"Three things.\n{marker}") == "Three things."
    assert trim_truncated(f"- One\n- Two\n{marker}") == "- One\n- Two\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("One. Two is cut", "One.", id="cut"),
        pytest.param("No end at all", "No end at all", id="no-end"),
        pytest.param("Ask? Yes! And", "Ask? Yes!", id="question-exclamation"),
        pytest.param('He said "Hi." Then', 'He said "Hi."', id="closing-quote"),
        pytest.param("She said \u201cgo.\u201d Then", "She said \u201cgo.\u201d", id="curly-quote"),
        pytest.param("(See this.) More", "(See this.)", id="closing-bracket"),
        pytest.param("Version 3.5 is out", "Version 3.5 is out", id="decimal"),
        pytest.param("Ends here.", "Ends here.", id="complete"),
        pytest.param("First.\nSecond", "First.", id="newline"),
        pytest.param("", "", id="empty"),
    ],
)
def test_prose_ends_at_its_last_sentence(text: str, expected: str) -> None:
    assert trim_truncated(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("- alpha\n- beta\n- gam", "- alpha\n- beta\n", id="items-without-stops"),
        pytest.param(
            "Steps:\n\n1. Clone it.\n2. Run make. Then open",
            "Steps:\n\n1. Clone it.\n2. Run make.",
            id="item-cut-after-a-sentence",
        ),
        pytest.param("Intro.\n\n## Next steps\n\nFirst we", "Intro.\n", id="heading-and-a-cut"),
        pytest.param("Intro.\n\n## Next steps", "Intro.\n", id="heading-alone"),
        pytest.param("Intro.\n\n## Next steps\n", "Intro.\n", id="heading-and-newline"),
        pytest.param("Run it:\n\n```sh\nmake test. Then\n", "Run it:\n", id="open-fence"),
        pytest.param(
            "Code:\n\n```py\nx = 1\n```\nAnd then",
            "Code:\n\n```py\nx = 1\n```\n",
            id="closed-fence",
        ),
        pytest.param("Start here. See [the docs. More](http://exa", "Start here.", id="link-text"),
        pytest.param("Start here. See [the docs](http://a.b/c. d", "Start here.", id="link-target"),
        pytest.param("Done. **Important. Never", "Done.", id="bold"),
        pytest.param("Done. *Note. Never", "Done.", id="emphasis"),
        pytest.param("Run it. Use `make. test", "Run it.", id="code-span"),
        pytest.param("Price is 2 * 3. So", "Price is 2 * 3.", id="asterisk-between-spaces"),
        pytest.param("A ***big.*** deal and", "A ***big.***", id="bold-italic-closed"),
        pytest.param(
            "Hits:\n\n| Tier | Hits |\n|---|---|\n| memory | 10 |\n| redis | 4",
            "Hits:\n\n| Tier | Hits |\n|---|---|\n| memory | 10 |\n",
            id="table-row",
        ),
    ],
)
def test_markdown_is_never_left_half_open(text: str, expected: str) -> None:
    assert trim_truncated(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("3.", "", id="marker-only"),
        pytest.param("## Heading", "", id="heading-only"),
        pytest.param("Cut here\n\n-", "Cut here\n", id="words-then-marker"),
        pytest.param("Words and no end\n## H", "Words and no end", id="words-then-heading"),
    ],
)
def test_without_a_clean_end_only_dangling_lines_go(text: str, expected: str) -> None:
    assert trim_truncated(text) == expected


# ---------------------------------------------------------------------------- properties

# Text made of the characters Markdown structure is made of.
markdownish = st.text(alphabet="ab .!?:\n\t-*+#1)`[]()|>~\"'_", max_size=120)

sentence = st.lists(
    st.sampled_from(["boats", "Oslo", "3.5", "**bold**", "`make test`", "[docs](https://a.b)"]),
    min_size=1,
    max_size=5,
).map(lambda words: "It " + " ".join(words) + ".")
paragraph = st.lists(sentence, min_size=1, max_size=3).map(" ".join)
bullets = st.lists(sentence, min_size=1, max_size=4).map(
    lambda items: "\n".join(f"- {item}" for item in items)
)
numbered = st.lists(sentence, min_size=1, max_size=4).map(
    lambda items: "\n".join(f"{n}. {item}" for n, item in enumerate(items, 1))
)
code = st.sampled_from(["```sh\nmake test. Then\n```", "```\n# not a heading\n- nor an item\n```"])
section = st.tuples(st.sampled_from(["## Lessons", "### Next"]), paragraph).map("\n\n".join)
table = st.just("| tier | hits |\n|---|---|\n| memory | 10 |")
block = st.one_of(paragraph, bullets, numbered, code, section, table)
# A whole answer, as its blocks: an opening sentence, then finished blocks.
document = st.tuples(sentence, st.lists(block, max_size=5)).map(lambda p: [p[0], *p[1]])


@given(markdownish)
def test_the_result_is_a_prefix(text: str) -> None:
    assert text.startswith(trim_truncated(text))


@given(markdownish)
def test_trimming_twice_is_trimming_once(text: str) -> None:
    once = trim_truncated(text)
    assert trim_truncated(once) == once


@given(markdownish)
def test_the_result_never_ends_in_a_bare_marker_or_a_heading(text: str) -> None:
    last = last_written_line(trim_truncated(text))
    assert last is None or not BARE_MARKER_LINE.fullmatch(last)
    assert last is None or not HEADING_LINE.match(last)


@given(document)
def test_a_whole_answer_is_kept_whole(blocks: list[str]) -> None:
    answer = "\n\n".join(blocks)
    assert trim_truncated(answer) == answer


@given(document, st.data())
def test_a_cut_answer_keeps_every_block_the_model_finished(
    blocks: list[str], data: st.DataObject
) -> None:
    answer = "\n\n".join(blocks)
    cut = data.draw(st.integers(min_value=0, max_value=len(answer)), label="cut")
    text = answer[:cut]
    whole_blocks = ("\n\n".join(blocks[:k]) for k in range(len(blocks) + 1))
    finished = max((prefix for prefix in whole_blocks if len(prefix) <= cut), key=len)
    trimmed = trim_truncated(text)
    assert len(trimmed) >= len(finished.rstrip())
    assert fence_lines(trimmed) % 2 == 0
    last = last_written_line(trimmed)
    assert last is None or not (BARE_MARKER_LINE.fullmatch(last) or HEADING_LINE.match(last))
