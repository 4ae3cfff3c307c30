"""When things go wrong: hostile answers, malformed answers, a dead server, a foreign
output folder, Ctrl-C. The previous site must survive every one of them."""

from __future__ import annotations

import functools
import itertools
import json
import re
import socket
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import trinity.build
from tests.conftest import ConnectLog
from tests.e2e.sitekit import (
    BLOCKS,
    ITEM_BLOCKS,
    RunResult,
    SiteProject,
    check_links,
    highlights_for,
    interrupt_when,
    snapshot,
)
from trinity.llm.client import AsyncLLMClient


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


def failure_groups(result: RunResult) -> dict[str, tuple[list[tuple[str, str]], int]]:
    """The 'Blocks that failed' table by reason: the (page, block) listed, and how many more."""
    assert "Blocks that failed" in result.stderr, result.describe()
    groups: dict[str, tuple[list[tuple[str, str]], int]] = {}
    reason = ""
    for line in result.stderr.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) != 2 or cells[0] == "blocks":
            continue
        if cells[1]:
            reason = cells[1]  # a group's reason is on its first row; Rich leaves the rest blank
        listed, more = groups.get(reason, ([], 0))
        if entry := re.fullmatch(r"(\S+): (\w+)", cells[0]):
            listed.append((entry.group(1), entry.group(2)))
        elif found := re.fullmatch(r"\.\.\. and (\d+) more", cells[0]):
            more += int(found.group(1))
        groups[reason] = (listed, more)
    return groups


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


# Each paragraph ends on a full stop: a complete answer, published as it came (not trimmed
# or asked again by the `complete` check), so what is proved is that it is escaped.
HOSTILE_MARKDOWN = "\n\n".join(
    [
        "<script>alert(1)</script>.",
        "[x](javascript:alert(1)) and [y](JaVaScRiPt:alert(2)) and [z](java\tscript:alert(3)).",
        '<a href="javascript:alert(4)">raw link</a> <img src=x onerror="alert(5)">.',
        "![img](data:text/html;base64,PHNjcmlwdD5hbGVydCg2KTwvc2NyaXB0Pg==).",
        "[ok](https://example.com/safe).",
    ]
)


def test_hostile_answers_are_rendered_harmless(site_project: SiteProject) -> None:
    server = site_project.server
    server.clear_scripts()  # scripts match first come, first served: start afresh
    server.script("introduction for the home page", HOSTILE_MARKDOWN)  # markdown block
    now = "<script>alert(7)</script> is what I am focusing on this year."  # 5 words or more
    server.script("is focusing on this year", now)  # text block
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

    site_project.rescript_highlights()

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


@pytest.mark.parametrize(
    ("fault", "args", "reason", "requests"),
    [
        # Not worth retrying: the block fails at its first and only request.
        ((1, 400), (), "HTTP 400", BLOCKS),
        # Worth retrying, but it fails all three attempts; one request at a time, so the
        # three faults queued at the server all fall on the first block's attempts.
        ((3, 500), ("--concurrency", "1"), "HTTP 500", BLOCKS + 2),
    ],
    ids=["bad-request", "500-three-times"],
)
def test_one_failed_block_keeps_the_other_answers(
    site_project: SiteProject,
    fault: tuple[int, int],
    args: tuple[str, ...],
    reason: str,
    requests: int,
) -> None:
    server = site_project.server
    server.fail_next(*fault)

    failed = site_project.build(*args)

    assert failed.exit_code == 1, failed.describe()
    listed, more = failure_rows(failed)
    assert (len(listed), more) == (1, 0)
    assert listed[0] in all_blocks(site_project)
    assert reason in failed.flat
    assert server.chat_count == requests
    assert not site_project.output.exists(), "a failed first build writes no output"
    assert site_project.leftovers() == []

    fixed = site_project.build()

    assert_ok(fixed)
    assert server.chat_count == requests + 1, "the answers that arrived were cached"
    totals = site_project.report()["totals"]
    assert (totals["llm_calls"], totals["cache_hits"]) == (1, BLOCKS - 1)


def test_one_server_error_is_retried_transparently(site_project: SiteProject) -> None:
    server = site_project.server
    server.fail_next(1, 500)

    result = site_project.build()

    assert_ok(result)
    assert server.chat_count == BLOCKS + 1
    assert server.answered_count == BLOCKS
    totals = site_project.report()["totals"]
    assert (totals["llm_calls"], totals["failed"], totals["attempts"]) == (
        BLOCKS,
        0,
        BLOCKS + 1,
    )
    attempts = sorted(b["attempts"] for b in site_project.report()["blocks"])
    assert attempts == [1] * (BLOCKS - 1) + [2]


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


BREAKER_THRESHOLD = 5  # llm.breaker.failure_threshold by default
CONCURRENCY = 4  # llm.concurrency in the example


@pytest.mark.parametrize("how", ["closed-port", "server-stopped"])
def test_server_down_leaves_the_previous_site_untouched(
    site_project: SiteProject, how: str, loopback_only: ConnectLog
) -> None:
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    inode = site_project.output.stat().st_ino
    if how == "closed-port":
        # A new URL is a new cache key: every block must be asked for again.
        port = _closed_port()
        site_project.update_settings("llm", api_url=f"http://127.0.0.1:{port}")
        args: tuple[str, ...] = ()
    else:
        port = site_project.server.port
        site_project.server.close()
        # Nothing cached to fall back on: every block must be asked for again.
        assert_ok(site_project.cli("cache", "clear", "--project", site_project.root))
        args = ()
    connects = loopback_only.to_port(port)

    started = time.monotonic()
    result = site_project.build(*args)

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 20
    # Every block is listed once, under one of two reasons: the connection errors until
    # the breaker opened, then the open breaker (each group lists 8, then "and N more").
    groups = failure_groups(result)
    assert 1 <= len(groups) <= 2, groups
    for reason, (listed, more) in groups.items():
        assert "cannot reach" in reason or "circuit breaker" in reason, reason
        assert len(listed) == min(SHOWN_PER_REASON, len(listed) + more)
    everything = [block for listed, _ in groups.values() for block in listed]
    assert len(everything) == len(set(everything))
    assert set(everything) <= set(all_blocks(site_project))
    assert sum(len(listed) + more for listed, more in groups.values()) == BLOCKS
    assert "circuit breaker" in result.flat, "15 blocks x 3 attempts must open the breaker"
    assert f"{BLOCKS} of {BLOCKS} blocks could not be generated" in result.flat
    assert f"{site_project.output} was left as it was" in result.flat
    # Once the breaker opened, no request was sent: attempts reached the dead port only
    # until the 5th failure, plus those already in flight then (at most concurrency - 1).
    tried = loopback_only.to_port(port) - connects
    assert BREAKER_THRESHOLD <= tried <= BREAKER_THRESHOLD + CONCURRENCY - 1
    assert snapshot(site_project.output) == before
    assert site_project.output.stat().st_ino == inode
    assert site_project.leftovers() == []


def test_a_dead_server_is_a_row_or_two_however_long_the_build(
    site_project: SiteProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks refused by the open breaker at different moments are still one reason."""
    readings = itertools.count()

    def slow_clock() -> float:
        return 1000.0 + 0.01 * next(readings)  # every reading of the clock 10 ms later

    monkeypatch.setattr(
        trinity.build, "AsyncLLMClient", functools.partial(AsyncLLMClient, clock=slow_clock)
    )
    site_project.use_collection(20)
    site_project.server.fail_rate(1.0, statuses=(500,))

    result = site_project.build()

    assert result.exit_code == 1, result.describe()
    groups = failure_groups(result)
    assert 1 <= len(groups) <= 2, groups
    assert sum(len(listed) + more for listed, more in groups.values()) == 20
    assert any("circuit breaker" in reason for reason in groups)


def test_server_down_in_a_subprocess(site_project: SiteProject) -> None:
    assert_ok(site_project.build())
    before = snapshot(site_project.output)
    site_project.server.close()
    assert_ok(site_project.cli("cache", "clear", "--project", site_project.root))

    result = site_project.run("build", "--project", site_project.root)

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
    result, _ = interrupt_when(
        proc, lambda: server.chat_count > requests, "started generating", timeout=30
    )

    assert result.exit_code == 130, result.describe()
    assert "Traceback" not in result.output
    assert "Interrupted" in result.stderr
    assert snapshot(site_project.output) == before
    assert site_project.output.stat().st_ino == inode
    assert site_project.leftovers() == []
