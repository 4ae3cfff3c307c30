"""Properties of site.slug_problem: an accepted slug can never name a path outside output/."""

from __future__ import annotations

import os
import posixpath
from pathlib import PurePosixPath

from hypothesis import example, given, settings
from hypothesis import strategies as st

from trinity.site import RESERVED_SLUG_ROOTS, Page, slug_problem

BASE = "/srv/out"
FAST = settings(max_examples=200, database=None, deadline=None)

# Characters that make paths interesting: separators, dots, escapes, look-alikes.
NASTY = st.sampled_from(
    [
        *"abz09-_",
        ".",
        "/",
        "\\",
        "%",
        "%2e",
        "%2f",
        ":",
        "~",
        " ",
        "\t",
        "\n",
        "\x00",
        "A",
        "\u2024",  # one dot leader
        "\uff0e",  # fullwidth full stop
        "\u2215",  # division slash
        "é",
        "\u0131",  # dotless i
        "K",  # Kelvin sign, lowercases to 'k'
        "static",
        "index",
        "..",
        "../",
        "/..",
    ]
)
NASTY_SLUGS = st.lists(NASTY, max_size=12).map("".join)


def page_for(slug: str) -> Page:
    return Page(slug=slug, title="t", template="page.html", blocks=())


def assert_contained(slug: str) -> None:
    target = os.path.normpath(posixpath.join(BASE, page_for(slug).output_path))
    assert target == BASE or target.startswith(BASE + "/"), (slug, target)
    assert target.endswith("/index.html")
    assert ".." not in slug
    assert not slug.startswith("/")
    assert "\\" not in slug
    assert "\x00" not in slug
    assert PurePosixPath(slug).parts[0] not in RESERVED_SLUG_ROOTS


@FAST
@given(st.text())
@example("")
@example("..")
@example("a/../../etc")
@example("/etc/passwd")
@example("a\\..\\b")
@example("a\x00b")
@example("index\n")
def test_any_accepted_text_stays_inside_the_output_folder(slug: str) -> None:
    if slug_problem(slug) is None:
        assert_contained(slug)


@FAST
@given(NASTY_SLUGS)
def test_nasty_accepted_slugs_stay_inside_the_output_folder(slug: str) -> None:
    if slug_problem(slug) is None:
        assert_contained(slug)
    else:
        assert isinstance(slug_problem(slug), str)


SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)


@FAST
@given(st.lists(SEGMENT, min_size=1, max_size=4))
def test_well_formed_slugs_are_accepted(segments: list[str]) -> None:
    slug = "/".join(segments)
    if segments[0] in RESERVED_SLUG_ROOTS:
        assert slug_problem(slug) is not None
    else:
        assert slug_problem(slug) is None
        assert_contained(slug)


@FAST
@given(st.lists(SEGMENT, min_size=1, max_size=3), st.sampled_from(["..", ".", "", "A", "\\"]))
def test_one_bad_segment_spoils_the_slug(segments: list[str], bad: str) -> None:
    slug = "/".join([*segments, bad, *segments])
    assert slug_problem(slug) is not None
