"""`trinity build --shard K/N --generate-only`: N machines generate a site's answers into
one Redis, then one build renders the site from it without calling a model.

Each "machine" is a copy of the project in a folder of its own (its own disk cache and
output folder), so the shards share nothing but a real redis-server; the answers come
from the fake LLM server on loopback, which answers a prompt the same way every time, so
a site built in one process is the reference the sharded one must match byte for byte.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import BLOCKS, SiteProject, snapshot
from tests.redisserver import RedisServer
from trinity.staging import MARKER_DIR

SHARDS = 4


def site_files(output: Path) -> dict[str, bytes]:
    """The published site: every file but Trinity's own records (report, manifest)."""
    return {
        path: data for path, data in snapshot(output).items() if not path.startswith(MARKER_DIR)
    }


def json_report(stdout: str) -> dict[str, Any]:
    data = json.loads(stdout)
    assert isinstance(data, dict)
    return data


def blocks_of(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(block["page"], block["block"]) for block in report["blocks"]}


def start_shard(project: SiteProject, shard: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return project.popen(
        "build",
        "--project",
        project.root,
        "--generate-only",
        "--shard",
        f"{shard}/{SHARDS}",
        "--json",
        "--quiet",
        env=env,
    )


def test_four_shards_then_a_render_give_the_site_one_build_gives(
    site_project: SiteProject, redis_db: RedisServer
) -> None:
    server = site_project.server
    single = site_project.copy("single")
    built = single.run("build", "--project", single.root)
    assert built.exit_code == 0, built.describe()
    reference = site_files(single.output)
    assert len(reference) > 6
    calls_alone = server.chat_count
    assert calls_alone == BLOCKS

    shards = [site_project.copy(f"shard-{n}") for n in range(1, SHARDS + 1)]
    running = [
        start_shard(project, n, redis_db.environ) for n, project in enumerate(shards, start=1)
    ]
    reports = []
    for process in running:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        reports.append(json_report(stdout))

    # The shares: disjoint, every block in one, every prompt asked once across the four.
    shares = [blocks_of(report) for report in reports]
    assert sum(len(share) for share in shares) == BLOCKS
    assert len(set().union(*shares)) == BLOCKS
    assert [report["status"] for report in reports] == ["generated"] * SHARDS
    assert [report["shard"] for report in reports] == [f"{n}/{SHARDS}" for n in range(1, 5)]
    assert server.chat_count - calls_alone == BLOCKS
    # No shard wrote a site, nor locked or touched its output folder.
    assert not any(project.output.exists() for project in shards)

    render = site_project.copy("render")
    rendered = render.run("build", "--project", render.root, "--json", env=redis_db.environ)
    assert rendered.exit_code == 0, rendered.describe()
    report = json_report(rendered.stdout)
    assert server.chat_count - calls_alone == BLOCKS, "the render called a model"
    assert (report["status"], report["totals"]["llm_calls"]) == ("built", 0)
    assert {block["cache_tier"] for block in report["blocks"]} == {"redis"}
    assert site_files(render.output) == reference


def dry_run_share(project: SiteProject, shard: str) -> set[tuple[str, str]]:
    result = project.build("--generate-only", "--shard", shard, "--dry-run", "--json")
    assert result.exit_code == 0, result.describe()
    return blocks_of(json_report(result.stdout))


def test_shares_split_every_block_once_and_stay_put_when_pages_move(
    site_project: SiteProject,
) -> None:
    shares = [dry_run_share(site_project, f"{n}/3") for n in (1, 2, 3)]
    assert sum(len(share) for share in shares) == len(set().union(*shares)) == BLOCKS

    site_project.edit_pages(lambda pages: pages.reverse())
    assert [dry_run_share(site_project, f"{n}/3") for n in (1, 2, 3)] == shares
    assert site_project.server.chat_count == 0


def test_one_shard_is_the_whole_site(site_project: SiteProject) -> None:
    assert len(dry_run_share(site_project, "1/1")) == BLOCKS


def test_generate_only_caches_every_answer_and_leaves_the_output_alone(
    site_project: SiteProject,
) -> None:
    built = site_project.build()
    assert built.exit_code == 0, built.describe()
    before = snapshot(site_project.output)
    site_project.add_item("Lighthouse", "A tool that keeps ships off the rocks.")
    site_project.script_highlights("Lighthouse")

    generated = site_project.build("--generate-only")
    assert generated.exit_code == 0, generated.describe()
    new_blocks = 3  # the new project's page: summary, lessons, highlights
    assert (
        f"Generated {BLOCKS + new_blocks} blocks into the cache ({new_blocks} model calls); "
        "no site written" in generated.flat
    )
    assert snapshot(site_project.output) == before

    rendered = site_project.build("--json")
    assert rendered.exit_code == 0, rendered.describe()
    assert json_report(rendered.stdout)["totals"]["llm_calls"] == 0
    assert site_project.server.chat_count == BLOCKS + new_blocks
    assert (site_project.output / "projects" / "lighthouse" / "index.html").is_file()


def test_a_shard_without_redis_says_where_its_answers_go(site_project: SiteProject) -> None:
    result = site_project.build("--generate-only", "--shard", "1/2")
    assert result.exit_code == 0, result.describe()
    assert "share their answers only through the disk cache" in result.flat
    assert "add redis to cache.tiers" in result.flat


def test_a_shard_whose_block_fails_says_the_others_are_cached(
    site_project: SiteProject,
) -> None:
    site_project.server.fail_rate(1.0, statuses=(400,))
    result = site_project.build("--generate-only")
    assert result.exit_code == 1, result.describe()
    assert "could not be generated; the answers of the others are cached" in result.flat
    assert not site_project.output.exists()


@pytest.mark.parametrize(
    ("args", "named", "says"),
    [
        (["--shard", "0/4", "--generate-only"], "--shard", "must be from 1 to 4"),
        (["--shard", "5/4", "--generate-only"], "--shard", "must be from 1 to 4"),
        (["--shard", "two/four", "--generate-only"], "--shard", "is not K/N"),
        (["--shard", "1/0", "--generate-only"], "--shard", "from 1 to 1000"),
        (["--shard", "2/4"], "--shard", "add --generate-only"),
        (["--generate-only", "--guard"], "--guard", "--generate-only writes none"),
    ],
)
def test_bad_shard_options_are_bad_input(
    site_project: SiteProject, args: list[str], named: str, says: str
) -> None:
    result = site_project.build(*args)
    assert result.exit_code == 2, result.describe()
    assert named in result.flat and says in result.flat
    assert "Traceback" not in result.output
    assert site_project.server.chat_count == 0
