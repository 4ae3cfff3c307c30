"""The layout guardian's parts that need no browser: how the probe's answers are worded,
axe's summaries shortened, screenshots named, and the site served."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trinity.layout.axe import MAX_DETAIL, one_line_summary
from trinity.layout.browser import viewport
from trinity.layout.findings import CLIPPED, CONTRAST, HEADING_WRAP, OVERFLOW, TOO_LONG
from trinity.layout.gallery import screenshot_name
from trinity.layout.probe import ProbeAnswerError, probe_findings
from trinity.layout.server import SiteServer


def layout(kind: str, reason: str, measured: float, limit: float, tag: str = "p") -> dict[str, Any]:
    return {
        "kind": kind,
        "block": "intro",
        "element": f"main > {tag}",
        "tag": tag,
        "reason": reason,
        "measured": measured,
        "limit": limit,
    }


def answer(width: int, *records: dict[str, Any], axe: list[Any] | None = None) -> dict[str, Any]:
    return {"width": width, "viewport": width, "layout": list(records), "axe": axe or []}


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        (
            layout(HEADING_WRAP, "lines", 6, 3, tag="h2"),
            "h2 wraps to 6 lines at 390 px (the theme allows 3)",
        ),
        (
            layout(OVERFLOW, "page", 701.4, 390),
            "p sticks out of the page at 390 px (it reaches 701.4 px)",
        ),
        (
            layout(OVERFLOW, "box", 761, 640),
            "p sticks out of its 640 px box at 390 px (it needs 761 px)",
        ),
        (
            layout(CLIPPED, "y", 152, 40, tag="div"),
            "div cuts off its content at 390 px (152 px tall in a 40 px box)",
        ),
        (
            layout(TOO_LONG, "lines", 41.5, 20, tag="section"),
            "section runs to 41.5 lines at 390 px (its slot holds 20)",
        ),
    ],
)
def test_every_kind_is_told_in_one_sentence(record: dict[str, Any], detail: str) -> None:
    [finding] = probe_findings([answer(390, record)], "about/index.html")
    assert finding.detail == detail
    assert (finding.page, finding.width, finding.block) == ("about/index.html", 390, "intro")
    assert finding.measured == record["measured"]
    assert finding.limit == record["limit"]


def test_axe_records_become_findings_once_per_element() -> None:
    contrast = {
        "rule": "color-contrast",
        "element": "main > p",
        "block": None,
        "summary": "Fix any of the following:\n  Element has insufficient color contrast of 1.8",
        "contrast": 1.83,
        "expected": 4.5,
    }
    found = probe_findings(
        [answer(390, axe=[contrast])],
        "index.html",
        {"width": 390, "viewport": 390, "records": [contrast]},
    )
    assert len(found) == 1
    assert (found[0].kind, found[0].measured, found[0].limit) == (CONTRAST, 1.83, 4.5)
    assert found[0].detail == "Element has insufficient color contrast of 1.8"


@pytest.mark.parametrize(
    "raw",
    [
        [{"width": 390, "viewport": 980, "layout": [], "axe": []}],  # the wrong viewport
        [answer(390, layout("sideways", "page", 1, 1))],  # a kind probe.js never sends
        [{"width": 390}],  # a part missing
    ],
)
def test_an_answer_the_probe_never_gives_is_refused(raw: list[Any]) -> None:
    with pytest.raises(ProbeAnswerError):
        probe_findings(raw, "index.html")


def test_axe_summaries_keep_their_first_reason_on_one_line() -> None:
    summary = (
        "Fix any of the following:\n  Element does not have an alt attribute\n"
        "  aria-label attribute does not exist or is empty"
    )
    assert one_line_summary(summary) == "Element does not have an alt attribute"
    long = one_line_summary("Fix all of the following:\n  " + "x" * 1000)
    assert len(long) == MAX_DETAIL
    assert long.endswith("…")


def test_screenshot_names_are_safe() -> None:
    assert screenshot_name("about/index.html", 390) == "about--index-390.png"
    assert screenshot_name("index.html", 1280, "-before") == "index-1280-before.png"
    assert screenshot_name("a b/ü.html", 768) == "a_b--_-768.png"
    assert "/" not in screenshot_name("../../etc/passwd", 768, "-after")


def test_viewports_are_as_tall_as_their_devices() -> None:
    assert [viewport(width) for width in (390, 768, 1280)] == [(390, 844), (768, 1024), (1280, 800)]


# ---------------------------------------------------------------------- the server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SiteServer]:
    site = tmp_path / "site"
    (site / "about").mkdir(parents=True)
    (site / "about" / "index.html").write_text("<p>About</p>", encoding="utf-8")
    (site / "style.css").write_text("p { color: red }", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("not the site's", encoding="utf-8")
    with SiteServer([site], {"/.own/tool.js": b"var tool = 1;"}) as running:
        yield running


def get(server: SiteServer, path: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_server_serves_the_site_and_nothing_above_it(
    server: SiteServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status, headers, body = get(server, "/about/index.html")
    assert (status, body) == (200, b"<p>About</p>")
    assert headers["Cache-Control"] == "no-store"  # a page healed in place is fetched again
    assert get(server, "/style.css")[1]["Cache-Control"] == "no-cache"
    assert get(server, "/nothing.html")[0] == 404
    assert get(server, "/../secret.txt")[2] != b"not the site's"
    assert server.url_for("about/index.html") == f"{server.origin}/about/index.html"
    assert capsys.readouterr().err == ""  # no request log


def test_the_servers_own_files_are_served_from_memory(server: SiteServer) -> None:
    status, headers, body = get(server, "/.own/tool.js")
    assert (status, body) == (200, b"var tool = 1;")
    assert "javascript" in headers["Content-Type"]
    assert "immutable" in headers["Cache-Control"]


def test_a_file_comes_from_the_first_folder_that_has_it(tmp_path: Path) -> None:
    """A build's staging folder first, then the output folder holding the kept pages."""
    staging, output = tmp_path / "staging", tmp_path / "output"
    for folder, text in ((staging, "new"), (output, "old")):
        (folder / "kept").mkdir(parents=True)
        (folder / "index.html").write_text(text, encoding="utf-8")
    (output / "kept" / "index.html").write_text("kept", encoding="utf-8")
    with SiteServer([staging, output]) as running:
        assert get(running, "/index.html")[2] == b"new"
        assert get(running, "/kept/index.html")[2] == b"kept"
        assert get(running, "/missing.html")[0] == 404
