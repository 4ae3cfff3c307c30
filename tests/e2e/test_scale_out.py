"""Four `trinity build` processes at once, sharing one real redis-server, against one
loopback server that enforces a rate limit (429 past it): what four CI runners building
one site at the same time do.

Each process builds a copy of the project of its own (its own disk cache and output
folder: another machine), so all they share is Redis: the cache, the rate limit's
windows and the requests in flight. The limit is known in settings, so not one request
may be refused, and each distinct prompt may reach the server once across the four.

The site has more prompts than the limit admits in a minute, so the last ones must wait
for the window to move: this test takes a little over a minute.
"""

from __future__ import annotations

import json

from tests.e2e.sitekit import SiteProject, snapshot
from tests.redisserver import RedisServer
from trinity.staging import MARKER_DIR

PROCESSES = 4
RPM = 12
PROMPTS = 16  # more than RPM: four of them wait for the next minute


def test_four_builds_share_one_limit_and_ask_each_prompt_once(
    site_project: SiteProject, redis_db: RedisServer
) -> None:
    server = site_project.server
    site_project.use_collection(PROMPTS)
    site_project.update_settings("llm", limits={"rpm": RPM})
    # Four builds on two cores stall their event loops for longer than the default 100 ms
    # now and then: patient enough that this tests the sharing, not the fallback.
    site_project.update_settings("cache", redis={"prefix": "trinity:", "timeout": 2.0})
    server.limit_per_key(RPM, window=60.0)
    machines = [site_project.copy(f"runner-{n}") for n in range(1, PROCESSES + 1)]

    running = [
        project.popen("build", "--project", project.root, "--json", env=redis_db.environ)
        for project in machines
    ]
    reports = []
    for process in running:
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr
        reports.append(json.loads(stdout))

    assert server.rate_limited_count == 0, "a request was refused: the limit was not shared"
    assert server.chat_count == PROMPTS
    assert sorted(server.answered_prompts) == sorted(set(server.answered_prompts))
    assert sum(report["totals"]["llm_calls"] for report in reports) == PROMPTS
    # Every other block of the four builds was an answer another one had asked for.
    for report in reports:
        assert {b["source"] for b in report["blocks"]} <= {"llm", "cache"}
    sites = [
        {p: data for p, data in snapshot(project.output).items() if not p.startswith(MARKER_DIR)}
        for project in machines
    ]
    assert all(site == sites[0] for site in sites)
