"""Ctrl-C is honoured at once in every phase, rendering from a full cache included
(issue 13, item 9), and the interrupted build still writes the report asked for (item 10)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.e2e.sitekit import SiteProject, interrupt_when, snapshot

PAGES = 80
# A theme whose item pages take a while to render (90,000 steps of a counting loop, some
# 50 ms), so that rendering from the cache lasts seconds: the phase in which Ctrl-C used
# to wait for the end.
HEAVY_ITEM = (
    '{% extends "base.html" %}{% block content %}{% set count = namespace(n=0) %}'
    "{% for i in range(300) %}{% for j in range(300) %}{% set count.n = count.n + 1 %}"
    "{% endfor %}{% endfor %}<p>{{ count.n }}</p>{{ blocks.summary }}{% endblock %}"
)


def add_heavy_theme(site_project: SiteProject) -> None:
    """`heavy`: the minimal theme (and its voice, so the cached answers serve it) with a
    slow item page."""
    folder = site_project.root / "themes" / "heavy"
    (folder / "templates").mkdir(parents=True)
    (folder / "theme.yaml").write_text(
        "name: heavy\ndescription: Slow to render.\nextends: minimal\n", "utf-8"
    )
    (folder / "templates" / "item.html").write_text(HEAVY_ITEM, "utf-8")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_ctrl_c_while_rendering_from_the_cache_stops_at_once(
    site_project: SiteProject,
) -> None:
    site_project.use_collection(PAGES)
    add_heavy_theme(site_project)
    assert site_project.build().exit_code == 0  # every answer cached, the minimal theme
    requests = site_project.server.chat_count
    before = snapshot(site_project.output)
    # The whole build from the cache, uninterrupted, into a folder of its own.
    began = time.monotonic()
    whole = site_project.run(
        "build", "--project", site_project.root, "--theme", "heavy", "--output", "elsewhere"
    )
    uninterrupted = time.monotonic() - began
    assert whole.exit_code == 0, whole.describe()
    assert site_project.server.chat_count == requests, "every answer came from the cache"

    report_path = site_project.root.parent / "report.json"
    proc = site_project.popen(
        "build", "--project", site_project.root, "--theme", "heavy", "--json",
        "--report", report_path,
    )  # fmt: skip
    staged_pages = ".output.staging-*/projects/*/index.html"
    result, took = interrupt_when(
        proc, lambda: len(list(site_project.root.glob(staged_pages))) >= 3, "started rendering"
    )
    assert result.exit_code == 130, result.describe()
    assert "Traceback" not in result.output
    # Rendering had most of its pages to go: honoured at once, Ctrl-C takes a small part
    # of the whole build's time; left waiting for the end, it takes most of it.
    assert took < uninterrupted / 4, (took, uninterrupted)
    assert snapshot(site_project.output) == before
    assert site_project.leftovers() == []
    report = json.loads(report_path.read_text("utf-8"))
    assert report["status"] == "interrupted"
    assert 0 < len(report["blocks"]) < PAGES
    assert json.loads(result.stdout) == report
