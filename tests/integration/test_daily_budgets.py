"""Daily budgets (`llm.budget`, a key's `daily_tokens`/`daily_cost`): shared by clients
through a real redis-server, by successive builds through the disk ledger, and kept safe
from what is planted in either.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from tests.fakellm import FakeLLMServer
from tests.redisserver import RedisServer, free_port
from trinity.cache.redislink import RedisLink
from trinity.errors import BudgetExceeded
from trinity.llm.budgets import BudgetSettings, DailyBudgets, Hold, Refusal, key_scope
from trinity.llm.client import AsyncLLMClient
from trinity.llm.ratelimit import ApiKey, KeyLimits, KeyPool, PoolSharing
from trinity.llm.settings import LLMSettings

SCOPE = "Mara Quinn"
WALL = datetime(2026, 12, 6, 23, 0, tzinfo=UTC).timestamp()


def link_to(server: RedisServer) -> RedisLink:
    return RedisLink(host=server.host, port=server.port, prefix="trinity:", timeout=2.0)


def budgets(ledger: Path | None = None, link: RedisLink | None = None, **caps: Any) -> DailyBudgets:
    settings = BudgetSettings(scope=SCOPE, ledger=ledger, **caps)
    return DailyBudgets(settings, link, wall_clock=lambda: WALL)


async def spend(daily: DailyBudgets, tokens: int, used: int | None = None) -> Hold | Refusal:
    """Reserve `tokens` in the project's scope and, when held, settle to `used`."""
    held = await daily.reserve(daily.scopes(), tokens, 0.0)
    assert held is not None
    if isinstance(held, Hold):
        await daily.settle(held, tokens if used is None else used, 0.0)
    return held


@pytest.fixture
def raw(redis_db: RedisServer) -> Iterator[redis.Redis]:
    with redis_db.client() as client:
        yield client


# --------------------------------------------------------------------------- Redis


def test_two_clients_sharing_a_daily_token_budget_stop_at_the_cap(
    redis_db: RedisServer, raw: redis.Redis, fake_llm: FakeLLMServer
) -> None:
    cap = 600
    settings = LLMSettings(
        provider="openai",
        api_url=fake_llm.url,
        model="m",
        api_key="sk-one",
        max_tokens=30,
        budget=BudgetSettings(daily_tokens=cap, scope=SCOPE),
    )
    used: list[int] = []
    refusals: list[str] = []
    lock = threading.Lock()

    async def ask_until_refused() -> None:
        link = link_to(redis_db)
        async with AsyncLLMClient(settings, shared=link) as client:
            for n in range(100):
                try:
                    answer = await client.complete(client.request(f"{id(link)} prompt {n}"))
                except BudgetExceeded as exc:
                    with lock:
                        refusals.append(str(exc))
                    break
                with lock:
                    used.append(answer.usage.input_tokens + answer.usage.output_tokens)
        await link.aclose()

    threads = [threading.Thread(target=anyio.run, args=(ask_until_refused,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(refusals) == 2, "both stop at the one cap"
    assert f"the daily token budget of {cap} tokens for project '{SCOPE}'" in refusals[0]
    assert "llm.budget daily_tokens" in refusals[0]
    assert sum(used) <= cap
    assert fake_llm.chat_count == len(used)
    (key,) = raw.keys("trinity:budget:*")
    assert key.decode().startswith(f"trinity:budget:project:{SCOPE}:")
    day = datetime.fromtimestamp(raw.time()[0], UTC).date().isoformat()
    assert key.decode().endswith(day)
    # Each call settled to what it used: the count is the real usage, no estimate left.
    assert float(raw.hget(key, "tokens") or 0) == sum(used)
    assert 0 < raw.pttl(key) <= 2 * 24 * 3600 * 1000


def test_a_daily_cost_budget_counts_dollars(redis_db: RedisServer) -> None:
    async def body() -> None:
        link = link_to(redis_db)
        daily = budgets(link=link, daily_cost=0.05)
        scopes = daily.scopes()
        first = await daily.reserve(scopes, 10, 0.03)
        assert isinstance(first, Hold)
        refused = await daily.reserve(scopes, 10, 0.03)
        assert isinstance(refused, Refusal)
        assert "the daily cost budget of $0.0500 for project 'Mara Quinn'" in str(refused.error())
        await daily.settle(first, 10, 0.01)  # it cost less: there is room again
        assert isinstance(await daily.reserve(scopes, 10, 0.03), Hold)
        await link.aclose()

    anyio.run(body)


@pytest.mark.parametrize(
    ("tokens", "cost", "allowed"),
    [
        pytest.param("lots", "0", True, id="not-a-number"),
        pytest.param("nan", "inf", True, id="nan-and-inf"),
        pytest.param("-1000000", "-5", True, id="negative"),
        pytest.param("1e30", "0", False, id="huge"),
    ],
)
def test_planted_budget_counts_are_not_trusted(
    redis_db: RedisServer, raw: redis.Redis, tokens: str, cost: str, allowed: bool
) -> None:
    day = datetime.fromtimestamp(raw.time()[0], UTC).date().isoformat()
    key = f"trinity:budget:project:{SCOPE}:{day}"
    raw.hset(key, mapping={"tokens": tokens, "cost": cost})

    async def body() -> Hold | Refusal | None:
        link = link_to(redis_db)
        daily = budgets(link=link, daily_tokens=100)
        held = await daily.reserve(daily.scopes(), 60, 0.0)
        second = await daily.reserve(daily.scopes(), 60, 0.0)
        assert link.up, "a planted value must not cost the build its Redis"
        await link.aclose()
        assert isinstance(second, Refusal), "a negative count gives no budget away"
        return held

    held = anyio.run(body)
    assert isinstance(held, Hold if allowed else Refusal)


def test_a_planted_key_of_another_type_is_replaced(redis_db: RedisServer, raw: redis.Redis) -> None:
    day = datetime.fromtimestamp(raw.time()[0], UTC).date().isoformat()
    raw.set(f"trinity:budget:project:{SCOPE}:{day}", "not a hash")

    async def body() -> Hold | Refusal | None:
        link = link_to(redis_db)
        daily = budgets(link=link, daily_tokens=100)
        held = await daily.reserve(daily.scopes(), 50, 0.0)
        await link.aclose()
        return held

    assert isinstance(anyio.run(body), Hold)


def test_without_redis_the_day_is_counted_in_the_ledger(tmp_path: Path) -> None:
    async def body() -> None:
        link = RedisLink(host="127.0.0.1", port=free_port(), timeout=0.1)
        daily = budgets(tmp_path, link, daily_tokens=100)
        assert isinstance(await spend(daily, 70), Hold)
        assert not link.up

    anyio.run(body)

    assert json.loads((tmp_path / "2026-12-06.json").read_text())["scopes"] == {
        f"project:{SCOPE}": {"tokens": 70.0, "cost": 0.0}
    }


# --------------------------------------------------------------------------- the ledger


def test_successive_builds_share_the_day_through_the_ledger(tmp_path: Path) -> None:
    async def first_build() -> None:
        daily = budgets(tmp_path, daily_tokens=100)
        assert isinstance(await spend(daily, 50, used=70), Hold)

    async def second_build() -> Hold | Refusal:
        return await spend(budgets(tmp_path, daily_tokens=100), 40)

    anyio.run(first_build)
    refused = anyio.run(second_build)

    assert isinstance(refused, Refusal)
    message = str(refused.error())
    assert message.startswith("the daily token budget of 100 tokens for project 'Mara Quinn'")
    assert "70 used today (UTC" in message
    assert "this call estimated at 40 tokens" in message
    assert (tmp_path / "2026-12-06.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[]", id="a-list"),
        pytest.param(b'{"scopes": {"project:Mara Quinn": {"tokens": -5, "cost": 0}}}', id="neg"),
        pytest.param(b'{"scopes": {"project:Mara Quinn": {"tokens": "1", "cost": 0}}}', id="str"),
        pytest.param(b'{"scopes": {"x": {"tokens": 1e999, "cost": 0}}}', id="inf"),
        pytest.param(b'{"scopes": {}, "pad": "' + b"x" * 2_000_000 + b'"}', id="too-big"),
    ],
)
def test_a_malformed_ledger_starts_from_what_this_process_counted(
    tmp_path: Path, planted: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> Hold | Refusal:
        daily = budgets(tmp_path, daily_tokens=100)
        assert isinstance(await spend(daily, 30), Hold)
        (tmp_path / "2026-12-06.json").write_bytes(planted)
        with caplog.at_level(logging.WARNING):
            assert isinstance(await spend(daily, 30), Hold)  # 30 of its own + 30
        return await spend(daily, 50)  # 60 + 50 > 100

    assert isinstance(anyio.run(body), Refusal)
    assert [r.getMessage() for r in caplog.records if "ledger" in r.getMessage()]


def test_old_ledgers_are_removed(tmp_path: Path) -> None:
    for day in ("2026-12-01", "2026-12-05"):
        (tmp_path / f"{day}.json").write_text('{"scopes": {}}')
    (tmp_path / "notes.json").write_text("mine")

    anyio.run(spend, budgets(tmp_path, daily_tokens=100), 1)

    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "2026-12-05.json",
        "2026-12-06.json",
        "notes.json",
    ]


def test_an_unwritable_ledger_warns_once_and_counts_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")

    async def body() -> Hold | Refusal:
        daily = budgets(blocked / "budget", daily_tokens=100)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert isinstance(await spend(daily, 30), Hold)
        return await spend(daily, 30)

    assert isinstance(anyio.run(body), Refusal)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


# --------------------------------------------------------------------------- keys


def test_a_key_whose_daily_budget_is_spent_is_skipped_then_the_pool_refuses() -> None:
    keys = [
        ApiKey("KEY_1", "secret-1", KeyLimits(daily_tokens=100)),
        ApiKey("KEY_2", "secret-2", KeyLimits(daily_tokens=60)),
    ]

    async def body() -> list[str]:
        daily = budgets()
        pool = KeyPool(keys, sharing=PoolSharing("openai http://x", None, daily))
        names = []
        for _ in range(3):
            lease = await pool.acquire(25, 25)
            names.append(lease.name)
            await lease.finish(25, 25)
        with pytest.raises(BudgetExceeded, match=r"for key KEY_\d \(llm.api_keys daily_tokens\)"):
            await pool.acquire(25, 25)
        return names

    # Round robin: KEY_1 fits two calls of 50, KEY_2 one; the fourth fits neither.
    assert anyio.run(body) == ["KEY_1", "KEY_2", "KEY_1"]


def test_key_scopes_are_named_by_endpoint_and_hash() -> None:
    scope = key_scope("openai https://api.openai.com key:0123", "KEY_1", 10, None)
    assert scope.name == "key:openai https://api.openai.com key:0123"
    assert scope.shown == "key KEY_1"
