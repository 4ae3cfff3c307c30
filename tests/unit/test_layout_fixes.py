"""layout.fixes and the pure parts of the guardian: truncation, the guardian's CSS, the
ladder of steps, the budgets, and the guard record read back from disk (not trusted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity.guardian import (
    GUARD_FILE,
    BlockFixes,
    Fix,
    PageRecord,
    fix_limit,
    next_fix,
    read_guard_record,
)
from trinity.layout.findings import (
    CLIPPED,
    HEADING_WRAP,
    OVERFLOW,
    TOO_LONG,
    Finding,
    LayoutLimits,
)
from trinity.layout.fixes import (
    ELLIPSIS,
    block_selector,
    guardian_css,
    inject_css,
    shorten_long_words,
    truncate_lines,
    truncate_words,
)
from trinity.version import GENERATOR

LONG_WORD = "x" * 60


# -------------------------------------------------------------------------- truncation


def test_truncate_words_keeps_the_first_words_and_marks_the_cut() -> None:
    heading = " ".join(f"word{n}" for n in range(25))
    first_eight = "word0 word1 word2 word3 word4 word5 word6 word7"
    assert truncate_words(heading, 8) == first_eight + ELLIPSIS
    assert truncate_words("Short and sweet", 8) == "Short and sweet"


def test_truncate_words_drops_trailing_punctuation_before_the_ellipsis() -> None:
    assert truncate_words("one, two, three, four", 2) == "one, two" + ELLIPSIS


def test_shorten_long_words_cuts_only_words_past_the_limit() -> None:
    text = f"A name {LONG_WORD} and a [link](https://example.com/{LONG_WORD}) here."
    cut = shorten_long_words(text, 20)
    assert f"{'x' * 19}{ELLIPSIS}" in cut
    assert LONG_WORD not in cut.split("](")[0]  # the shown word was cut...
    assert f"(https://example.com/{LONG_WORD})" in cut  # ...the link's target was not
    assert shorten_long_words("nothing long here", 20) == "nothing long here"


def test_truncate_lines_keeps_whole_list_items() -> None:
    items = "\n".join(f"- item number {n}" for n in range(40))
    cut = truncate_lines(items, 30)
    lines = cut.splitlines()
    assert len(lines) == 10  # 3 words a line: the tenth line reaches 30
    assert lines[-1] == f"- item number 9 {ELLIPSIS}"
    assert all(line.startswith("- item number") for line in lines)


def test_truncate_lines_leaves_a_short_text_alone() -> None:
    assert truncate_lines("one line\nand another", 100) == "one line\nand another"


@given(st.text(), st.integers(min_value=1, max_value=50))
def test_truncation_is_idempotent(text: str, limit: int) -> None:
    """A rebuild replays the fixes: applied twice, each must give what it gave once."""
    for cut in (truncate_words, shorten_long_words, truncate_lines):
        once = cut(text, limit)
        assert cut(once, limit) == once or cut is truncate_lines


# --------------------------------------------------------------------------------- CSS


def test_guardian_css_targets_the_block_and_wins_with_important() -> None:
    css = guardian_css({"features": [OVERFLOW], "title": [HEADING_WRAP], "none": []})
    assert 'html body [data-trinity-block="features"]' in css
    assert "overflow-wrap: anywhere !important" in css
    assert "white-space: normal !important" in css
    assert "font-size: 0.8em !important" in css  # only the heading's block gets smaller type
    features_rules = [line for line in css.splitlines() if '"features"' in line]
    assert not any("font-size" in line for line in features_rules)
    assert '"none"' not in css


def test_a_block_name_cannot_break_out_of_its_selector_or_the_style_element() -> None:
    assert block_selector('a"]{}') == '[data-trinity-block="a\\"]{}"]'
    css = guardian_css({"</style>x": [OVERFLOW]})
    html = inject_css("<html><head></head><body></body></html>", css)
    assert html.count("</style>") == 1


def test_inject_css_goes_at_the_end_of_head_else_the_start_of_body() -> None:
    page = "<html><head><link rel=stylesheet href=s.css></head><body><p>x</p></body></html>"
    injected = inject_css(page, "p { color: red }")
    guard_at = injected.index("data-trinity-guard")
    assert injected.index("s.css") < guard_at < injected.index("</head>")
    bare = inject_css("<body class=a><p>x</p></body>", "p {}")
    assert bare.startswith("<body class=a><style data-trinity-guard")
    assert inject_css("<p>x</p>", "") == "<p>x</p>"


# ------------------------------------------------------------------------------ ladder


def test_the_ladder_goes_content_theme_guardian_truncate() -> None:
    themed = LayoutLimits(heal_class="heal")
    done: list[str] = []
    while (step := next_fix(OVERFLOW, done, themed)) is not None:
        done.append(step)
    assert done == ["content", "theme", "guardian", "truncate"]


def test_a_theme_without_a_healing_class_skips_its_step() -> None:
    assert next_fix(CLIPPED, ["content"], LayoutLimits()) == "guardian"


def test_a_block_too_long_is_asked_for_less_then_cut() -> None:
    assert next_fix(TOO_LONG, [], LayoutLimits(heal_class="h")) == "content"
    assert next_fix(TOO_LONG, ["content"], LayoutLimits(heal_class="h")) == "truncate"
    # A cut not short enough is made again (shorter: its budget comes from the measure).
    assert next_fix(TOO_LONG, ["content", "truncate"], LayoutLimits()) == "truncate"
    assert next_fix(OVERFLOW, ["content", "guardian", "truncate"], LayoutLimits()) is None


def finding(kind: str, measured: float | None = None, limit: float | None = None) -> Finding:
    return Finding("index.html", 390, kind, "b", "h2", "detail", measured, limit)


def test_budgets_scale_with_how_far_past_the_limit_the_block_went() -> None:
    heading = " ".join(["word"] * 25)
    assert fix_limit(HEADING_WRAP, heading, [finding(HEADING_WRAP, 7, 3)]) == 8
    assert fix_limit(HEADING_WRAP, heading, [finding(HEADING_WRAP, 25, 3)]) == 3
    text = " ".join(["word"] * 400)
    # 40 lines where 20 fit: half the words, less a margin.
    assert fix_limit(TOO_LONG, text, [finding(TOO_LONG, 40, 20)]) == 180
    assert fix_limit(OVERFLOW, LONG_WORD, [finding(OVERFLOW)]) == 20


def test_the_correction_for_a_heading_says_how_many_words() -> None:
    failure = Fix(HEADING_WRAP, "content", 8).failure()
    assert failure.check == "layout"
    assert "at most 8 words" in failure.message


# ----------------------------------------------------------------------------- record


def write_record(output: Path, data: object) -> Path:
    path = output / GUARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_a_record_round_trips(tmp_path: Path) -> None:
    record = PageRecord(checked="abc", findings=[finding(OVERFLOW, 500.0, 390.0)])
    record.blocks["b"] = BlockFixes(
        "digest", [Fix(OVERFLOW, "content", 20), Fix(OVERFLOW, "guardian")]
    )
    path = write_record(
        tmp_path, {"generator": GENERATOR, "pages": {"index.html": record.as_json()}}
    )
    read = read_guard_record(path)
    assert read["index.html"].as_json() == record.as_json()


def page_entry(fixes: list[list[object]]) -> dict[str, object]:
    return {"checked": None, "findings": [], "blocks": {"b": {"answer": "d", "fixes": fixes}}}


@pytest.mark.parametrize(
    "pages",
    [
        {"index.html": page_entry(fixes=[["overflow", "rm -rf", 0]])},
        {"index.html": {"checked": None, "findings": [{"kind": "evil"}], "blocks": {}}},
        {"index.html": page_entry(fixes=[["too-long", "theme", 0]])},
        {"index.html": page_entry(fixes=[["overflow", "content", "20"]])},
        {"index.html": page_entry(fixes=[["overflow", "truncate", -3]])},
        {"index.html": page_entry(fixes=[["heading-wrap", "truncate", True]])},
        {"index.html": "not a mapping"},
        [],
    ],
)
def test_a_planted_or_damaged_record_is_ignored_whole(tmp_path: Path, pages: object) -> None:
    path = write_record(tmp_path, {"generator": GENERATOR, "pages": pages})
    assert read_guard_record(path) == {}


def test_a_record_of_another_version_or_none_at_all_is_empty(tmp_path: Path) -> None:
    assert read_guard_record(tmp_path / "missing.json") == {}
    path = write_record(tmp_path, {"generator": "Trinity 0.0.1", "pages": {}})
    assert read_guard_record(path) == {}
    path.write_text("{not json")
    assert read_guard_record(path) == {}
