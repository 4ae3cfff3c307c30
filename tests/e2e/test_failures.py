"""When things go wrong: hostile answers, malformed answers, a dead server, a foreign
output folder, Ctrl-C. The previous site must survive every one of them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.e2e.sitekit import (
    BLOCKS,
    ITEM_BLOCKS,
    RunResult,
    SiteProject,
    check_links,
    highlights_for,
    snapshot,
)


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


SHOWN_PER_REASON = 8  # the failure table lists this many blocks per reason, then "... and N more"


def failure_rows(result: RunResult) -> tuple[list[tuple[str, str]], int]:
    """The 'Blocks that failed' table on stderr: the (page, block) listed, and how many more."""
    assert "Blocks that failed" in result.stderr, result.describe()
    listed, more = [], 0
    for line in result.stderr.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if not cells:
            continue
        entry = re.fullmatch(r"(\S+): (\w+)", cells[0])
        if entry:
            listed.append((entry.group(1), entry.group(2)))
        elif found := re.fullmatch(r"\.\.\. and (\d+) more", cells[0]):
            more += int(found.group(1))
    return listed, more


def all_blocks(project: SiteProject) -> list[tuple[str, str]]:
    rows = [("index", "intro"), ("about", "about"), ("about", "now")]
    for slug in project.item_slugs:
        rows += [(f"projects/{slug}", block) for block in ITEM_BLOCKS]
    return rows


class _Unsafe(HTMLParser):
    """Collects everything in a page that could run script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed"):
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action", "formaction") and value is not None:
                scheme = re.sub(r"[\x00-\x20]", "", value).lower().split(":", 1)[0]
                if ":" in value and scheme in ("javascript", "vbscript", "data"):
                    self.problems.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag


HOSTILE_MARKDOWN = "\n\n".join(
    [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1)) and [y](JaVaScRiPt:alert(2)) and [z](java\tscript:alert(3))",
        '<a href="javascript:alert(4)">raw link</a> <img src=x onerror="alert(5)">',
        "![img](data:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==)",
        "[ok](https://example.com/safe)",
    ]
)


def test_hostile_answers_are_rendered_harmless(site_project: SiteProject) -> None:
    server = site_project.server
    server.clear_scripts()  # scripts match first come, first served: start afresh
    server.script("introduction for the home page", HOSTILE_MARKDOWN)  # markdown block
    server.script("is focusing on this year", "<script>alert(7)</script>")  # text block
    site_project.script_highlights(  # json block: its strings are data, never markup
        "Tidewater",
        json.dumps({"highlights": ["<script>alert(8)</script>", "javascript:alert(9)", "ok"]}),
    )
    for item in site_project.items[1:]:
        site_project.script_highlights(item["name"])

    result = site_project.build()

    assert_ok(result)
    for path in sorted(site_project.output.rglob("*.html")):
        html = path.read_text("utf-8")
        lowered = html.lower()
        assert "<script>alert" not in lowered, path
        assert 'href="javascript:' not in lowered.replace("\t", ""), path
        parser = _Unsafe()
        parser.feed(html)
        assert parser.problems == [], (path, parser.problems)
    # The answers were used, as text: escaped, not dropped.
    index = site_project.html("index.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert '<a href="https://example.com/safe">ok</a>' in index
    about = site_project.html("about/index.html")
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in about
    tidewater = site_project.html("projects/tidewater/index.html")
    assert "&lt;script&gt;alert(8)&lt;/script&gt;" in tidewater
    assert "javascript:alert(9)" in tidewater  # shown as text, not as a link
    assert check_links(site_project.output).broken == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ('{"highlights": ["unterminated', "not valid JSON"),
        ('{"highlights": "one long string"}', "does not match the block's schema"),
        ("Here are three highlights: fast, small, safe.", "not valid JSON"),
    ],
    ids=["invalid-json", "schema-mismatch", "prose"],
)
def test_malformed_json_answer_fails_the_build_and_is_not_cached(
    site_project: SiteProject, answer: str, reason: str
) -> None:
    server = site_project.server
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    site_project.add_item("Beacon", "A tiny status page generator.")
    site_project.script_highlights("Beacon", answer)
    new_blocks = len(ITEM_BLOCKS)  # Beacon's page brings its own blocks

    failed = site_project.build()

    assert failed.exit_code == 1, failed.describe()
    assert "Traceback" not in failed.output
    assert failure_rows(failed) == ([("projects/beacon", "highlights")], 0)
    assert reason in failed.flat
    assert f"1 of {BLOCKS + new_blocks} blocks could not be generated" in failed.flat
    assert server.chat_count == BLOCKS + new_blocks
    assert snapshot(site_project.output) == before
    assert site_project.leftovers() == []

    server.clear_scripts()
    for item in site_project.items:
        site_project.script_highlights(item["name"])

    fixed = site_project.build()

    assert_ok(fixed)
    new_requests = server.chat_requests[BLOCKS + new_blocks :]
    assert len(new_requests) == 1, "only the malformed block is asked again"
    assert "highlights of Beacon" in new_requests[0].body["messages"][-1]["content"]
    totals = site_project.report()["totals"]
    assert (totals["llm_calls"], totals["cache_hits"]) == (1, BLOCKS + new_blocks - 1)
    beacon = site_project.html("projects/beacon/index.html")
    for highlight in highlights_for("Beacon"):
        assert highlight in beacon


def test_one_failed_request_keeps_the_other_answers(site_project: SiteProject) -> None:
    server = site_project.server
    server.fail_next(1, 500)

    failed = site_project.build()

    assert failed.exit_code == 1, failed.describe()
    listed, more = failure_rows(failed)
    assert (len(listed), more) == (1, 0)
    assert listed[0] in all_blocks(site_project)
    assert "HTTP 500" in failed.flat
    assert not site_project.output.exists(), "a failed first build writes no output"
    assert site_project.leftovers() == []

    fixed = site_project.build()

    assert_ok(fixed)
    assert server.chat_count == BLOCKS + 1, "the answers that arrived were cached"


def test_template_error_while_rendering(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    templates = site_project.root / "templates"
    templates.mkdir()
    (templates / "page.html").write_text(
        '{% extends "base.html" %}\n{% block content %}\n{{ blocks.abuot }}\n{% endblock %}\n',
        "utf-8",
    )

    broken = site_project.build()

    assert broken.exit_code == 2, broken.describe()
    assert "Traceback" not in broken.output
    assert "templates/page.html, line 3" in broken.flat
    assert "abuot" in broken.flat
    assert snapshot(site_project.output) == before
    assert site_project.leftovers() == []
    assert site_project.server.chat_count == BLOCKS  # the answers came from the cache

    (templates / "page.html").unlink()
    assert_ok(site_project.build())
    assert site_project.server.chat_count == BLOCKS


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return port


@pytest.mark.parametrize("how", ["closed-port", "server-stopped"])
def test_server_down_leaves_the_previous_site_untouched(
    site_project: SiteProject, how: str
) -> None:
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    inode = site_project.output.stat().st_ino
    if how == "closed-port":
        # A new URL is a new cache key: every block must be asked for again.
        site_project.update_settings("llm", api_url=f"http://127.0.0.1:{_closed_port()}")
        args: tuple[str, ...] = ()
    else:
        site_project.server.close()
        args = ("--no-cache",)

    started = time.monotonic()
    result = site_project.build(*args)

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 20
    listed, more = failure_rows(result)
    assert len(listed) == SHOWN_PER_REASON  # one reason: a dead server is one group
    assert set(listed) < set(all_blocks(site_project))
    assert more == BLOCKS - SHOWN_PER_REASON
    assert "cannot reach" in result.flat
    assert f"{BLOCKS} of {BLOCKS} blocks could not be generated" in result.flat
    assert f"{site_project.output} was left as it was" in result.flat
    assert snapshot(site_project.output) == before
    assert site_project.output.stat().st_ino == inode
    assert site_project.leftovers() == []


def test_server_down_in_a_subprocess(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    site_project.server.close()

    result = site_project.run("build", "--project", site_project.root, "--no-cache")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    listed, more = failure_rows(result)
    assert len(listed) + more == BLOCKS
    assert snapshot(site_project.output) == before
    assert site_project.leftovers() == []


def test_foreign_output_folder_is_refused(site_project: SiteProject) -> None:
    site_project.output.mkdir()
    (site_project.output / "thesis.tex").write_text("years of work\n", "utf-8")
    before = snapshot(site_project.output)

    result = site_project.build()

    assert result.exit_code == 2, result.describe()
    assert "Traceback" not in result.output
    # The working folder is the project's parent: the folder is shown relative to it.
    assert "build.output_dir: site/output is not empty and was not written by Trinity" in (
        result.flat
    )
    assert snapshot(site_project.output) == before
    assert site_project.server.chat_count == 0
    assert site_project.leftovers() == []


def test_foreign_output_option_is_refused(site_project: SiteProject, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export PATH\n", "utf-8")

    result = site_project.build("--output", home)

    assert result.exit_code == 2, result.describe()
    assert "not written by Trinity" in result.flat
    assert snapshot(home) == {".bashrc": b"export PATH\n"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".home.")] == []
    assert site_project.server.chat_count == 0


def test_foreign_output_folder_outside_the_working_folder_is_shown_in_full(
    site_project: SiteProject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "notes.txt").write_text("mine\n", "utf-8")

    result = site_project.build("--output", elsewhere)

    assert result.exit_code == 2, result.describe()
    assert f"build.output_dir: {elsewhere} is not empty" in result.flat
    assert snapshot(elsewhere) == {"notes.txt": b"mine\n"}
    assert site_project.server.chat_count == 0


def test_empty_output_folder_is_accepted(site_project: SiteProject) -> None:
    site_project.output.mkdir()

    assert_ok(site_project.build())

    assert (site_project.output / "index.html").is_file()


def test_stale_files_are_removed_from_trinity_output(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    (site_project.output / "old-page").mkdir()
    (site_project.output / "old-page" / "index.html").write_text("stale", "utf-8")

    assert_ok(site_project.build())

    assert not (site_project.output / "old-page").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_interrupted_build_leaves_the_previous_site_untouched(
    site_project: SiteProject,
) -> None:
    server = site_project.server
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    inode = site_project.output.stat().st_ino
    requests = server.chat_count
    server.latency = 2.0

    proc = site_project.popen("build", "--project", site_project.root, "--no-cache")
    try:
        deadline = time.monotonic() + 30
        while server.chat_count == requests:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the build never started generating"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    result = RunResult(proc.returncode, stdout, stderr)
    assert result.exit_code == 130, result.describe()
    assert "Traceback" not in result.output
    assert "Interrupted" in result.stderr
    assert snapshot(site_project.output) == before
    assert site_project.output.stat().st_ino == inode
    assert site_project.leftovers() == []
