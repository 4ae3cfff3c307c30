"""`trinity build` with the state that builds share: rate limits in the Redis that the
cache's redis tier names, and daily budgets (`llm.budget`) in Redis or the disk ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.e2e.sitekit import BLOCKS, RunResult, SiteProject
from tests.redisserver import RedisServer


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def test_a_build_with_the_redis_tier_shares_its_rate_limits_in_redis(
    openai_site_project: SiteProject, redis_db: RedisServer
) -> None:
    site = openai_site_project
    site.update_settings("llm", limits={"rpm": 1000, "input_tpm": 1_000_000})
    data = site.settings()
    data["cache"]["redis"]["timeout"] = 5.0  # patient: these machines are shared
    site.write_settings(data)

    assert_ok(site.build(env=redis_db.environ))

    with redis_db.client() as client:
        keys = sorted(k.decode() for k in client.scan_iter(match="trinity:limits:*"))
        endpoint = f"trinity:limits:openai {site.server.url}"
        parts = ("input", "input:sum", "requests", "requests:sum")
        assert keys == [f"{endpoint}:{part}" for part in parts]
        assert all(client.pttl(key) > 0 for key in keys)
        assert client.zcard(f"{endpoint}:requests") == BLOCKS
        assert client.get(f"{endpoint}:requests:sum") == str(BLOCKS).encode()


def test_a_spent_daily_budget_fails_the_blocks_with_a_clear_message(
    site_project: SiteProject,
) -> None:
    site_project.update_settings("llm", budget={"daily_tokens": 1})

    result = site_project.build()

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "the daily token budget of 1 tokens for project 'Mara Quinn'" in result.flat
    assert site_project.server.chat_count == 0, "a call is counted before it is sent"


def test_successive_builds_share_the_day_through_the_disk_ledger(
    site_project: SiteProject,
) -> None:
    site_project.update_settings("llm", budget={"daily_tokens": 1_000_000})
    assert_ok(site_project.build())
    day = datetime.now(UTC).date().isoformat()
    ledger = site_project.root / ".cache" / "budget" / f"{day}.json"
    assert ledger.is_file()
    site_project.update_settings("llm", budget={"daily_tokens": 1_000})

    again = site_project.build("--no-cache")  # ask again: the day's tokens are spent

    assert "Traceback" not in again.output
    assert "the daily token budget of 1000 tokens" in again.flat
    assert "used today" in again.flat
    assert site_project.server.chat_count == BLOCKS, "the second build sent nothing"


def test_a_bad_budget_is_bad_input_naming_the_key(site_project: SiteProject) -> None:
    site_project.update_settings("llm", budget={"daily_cost": "a lot"})

    result = site_project.build()

    assert result.exit_code == 2, result.describe()
    assert "Traceback" not in result.output
    assert "llm.budget.daily_cost" in result.flat
    assert site_project.server.chat_count == 0
