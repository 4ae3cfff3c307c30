"""The semantic cache at the client: the loopback fake server's chat and embeddings (its
deterministic hashed bag of words), a real disk tier and a real redis-server.

Covered: a paraphrase above the threshold is served the earlier answer (tier "semantic",
cost 0, its similarity and prompt), one below it is asked; never at temperature > 0,
across system prompts, models or schemas, nor when the caller does not ask for it; the
answer must pass `validate`; vectors outlive the client (disk, Redis) and hostile stored
vectors are ignored; an embedder that is down is one warning and plain misses; both
embedding endpoints (OpenAI's, Ollama's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fakellm import FakeLLMServer, fake_embedding
from tests.redisserver import running_redis_server
from trinity.cache.disk import DiskTier
from trinity.cache.manager import CacheManager
from trinity.cache.memory import MemoryTier
from trinity.cache.redis import RedisTier
from trinity.cache.tier import CacheTier
from trinity.errors import MalformedResponseError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.settings import EmbedderSettings, LLMSettings, SemanticSettings
from trinity.llm.types import LLMRequest, LLMResponse

pytestmark = pytest.mark.anyio

# Twenty-odd words, one changed between the two: similarity about 0.96 in the fake's
# embedding; the other prompt shares almost nothing with them.
PROMPT = (
    "Write a warm two sentence welcome for the home page of Ada Lovelace, a mathematician "
    "who wrote the first published program for the analytical engine of Charles Babbage"
)
PARAPHRASE = PROMPT.replace("warm", "friendly")
OTHER = "List three facts about the tides of the North Sea for a sailing club newsletter"


def cosine(a: str, b: str) -> float:
    return sum(x * y for x, y in zip(fake_embedding(a), fake_embedding(b), strict=True))


def test_the_prompts_are_as_near_as_the_tests_need() -> None:
    assert 0.95 <= cosine(PROMPT, PARAPHRASE) < 0.99
    assert cosine(PROMPT, OTHER) < 0.5


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


def settings_for(
    server: FakeLLMServer, *, provider: str = "openai", threshold: float = 0.95, **semantic: Any
) -> LLMSettings:
    embedder = EmbedderSettings(provider=provider, model="fake-embed", api_url=server.url)
    return LLMSettings(
        provider="openai",
        api_url=server.url,
        model="fake-model",
        temperature=0.0,
        semantic=SemanticSettings(enabled=True, threshold=threshold, embedder=embedder, **semantic),
    )


@asynccontextmanager
async def client_for(
    settings: LLMSettings, tiers: list[CacheTier]
) -> AsyncIterator[AsyncLLMClient]:
    cache = CacheManager(tiers)
    try:
        async with AsyncLLMClient(settings, cache=cache) as client:
            yield client
    finally:
        await cache.aclose()


async def ask(client: AsyncLLMClient, prompt: str, **options: Any) -> LLMResponse:
    semantic = options.pop("semantic", None)
    request = client.request(prompt, **options)
    return await client.complete(request, semantic=semantic)


async def test_a_paraphrase_above_the_threshold_is_served_the_earlier_answer(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    async with client_for(settings_for(server), [MemoryTier(), DiskTier(tmp_path)]) as client:
        first = await ask(client, PROMPT)
        second = await ask(client, PARAPHRASE)
    assert first.cache_tier is None
    assert second.cache_tier == "semantic"
    assert second.text == first.text
    assert second.cost == 0.0 and second.attempts == 0
    assert second.similarity == pytest.approx(cosine(PROMPT, PARAPHRASE), abs=1e-3)
    assert second.matched_prompt == PROMPT
    assert server.chat_count == 1
    assert client.stats.semantic_hits == 1 and client.stats.cache_hits == 1


async def test_below_the_threshold_the_model_is_asked(server: FakeLLMServer) -> None:
    near = cosine(PROMPT, PARAPHRASE)
    async with client_for(settings_for(server, threshold=min(near + 0.01, 1.0)), []) as client:
        await ask(client, PROMPT)
        second = await ask(client, PARAPHRASE)
        third = await ask(client, OTHER)
    assert second.cache_tier is None and third.cache_tier is None
    assert server.chat_count == 3


@pytest.mark.parametrize(
    ("first", "then"),
    [
        pytest.param({}, {"temperature": 0.2}, id="temperature above 0"),
        pytest.param({"system": "Be formal."}, {"system": "Be playful."}, id="system prompt"),
        pytest.param({}, {"model": "other-model"}, id="model"),
        pytest.param(
            {"response_format": "json", "json_schema": {"type": "object"}},
            {"response_format": "json", "json_schema": {"type": "object", "required": ["a"]}},
            id="schema",
        ),
        pytest.param({}, {"max_tokens": 77}, id="parameters"),
        pytest.param({}, {"semantic": False}, id="not asked for"),
    ],
)
async def test_never_across_what_the_cache_key_holds_besides_the_prompt(
    server: FakeLLMServer, first: dict[str, Any], then: dict[str, Any]
) -> None:
    async with client_for(settings_for(server), [MemoryTier()]) as client:
        await ask(client, PROMPT, **first)
        second = await ask(client, PARAPHRASE, **then)
    assert second.cache_tier is None
    assert server.chat_count == 2


async def test_off_unless_the_site_or_the_caller_asks(server: FakeLLMServer) -> None:
    settings = settings_for(server)
    settings = replace(settings, semantic=replace(settings.semantic, enabled=False))
    async with client_for(settings, [MemoryTier()]) as client:
        await ask(client, PROMPT)
        unasked = await ask(client, PARAPHRASE)
        assert server.embedding_count == 0  # nor are the prompts of the others remembered
        await ask(client, OTHER, semantic=True)
        asked = await ask(client, OTHER + " please", semantic=True)
    assert unasked.cache_tier is None
    assert asked.cache_tier == "semantic"


async def test_no_semantic_turns_it_off_whatever_the_caller_asks(server: FakeLLMServer) -> None:
    async with client_for(settings_for(server, off=True), [MemoryTier()]) as client:
        await ask(client, PROMPT)
        second = await ask(client, PARAPHRASE, semantic=True)
    assert second.cache_tier is None
    assert server.embedding_count == 0


async def test_the_served_answer_must_pass_the_callers_checks(server: FakeLLMServer) -> None:
    def refuse_the_first(response: LLMResponse) -> None:
        if "friendly" not in (response.text + "friendly" * (server.chat_count > 1)):
            raise MalformedResponseError("not for this block")

    async with client_for(settings_for(server), [MemoryTier()]) as client:
        await ask(client, PROMPT)
        request = client.request(PARAPHRASE)
        second = await client.complete(request, semantic=True, validate=refuse_the_first)
    assert second.cache_tier is None
    assert server.chat_count == 2


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_vectors_outlive_the_client_on_disk(
    server: FakeLLMServer, tmp_path: Path, provider: str
) -> None:
    settings = settings_for(server, provider=provider)
    async with client_for(settings, [MemoryTier(), DiskTier(tmp_path)]) as client:
        await ask(client, PROMPT)
    async with client_for(settings, [MemoryTier(), DiskTier(tmp_path)]) as client:
        second = await ask(client, PARAPHRASE)
    assert second.cache_tier == "semantic"
    assert server.chat_count == 1
    embed_path = "/api/embed" if provider == "ollama" else "/v1/embeddings"
    assert {r.path for r in server.requests if "embed" in r.path} == {embed_path}
    assert list((tmp_path / "semantic").glob("*.jsonl"))


async def test_vectors_are_shared_through_redis(server: FakeLLMServer, tmp_path: Path) -> None:
    settings = settings_for(server)
    with running_redis_server(tmp_path) as redis_server:

        def tier() -> RedisTier:
            return RedisTier(port=redis_server.port, timeout=5.0)

        async with client_for(settings, [tier()]) as client:
            await ask(client, PROMPT)
        async with client_for(settings, [MemoryTier(), tier()]) as client:
            second = await ask(client, PARAPHRASE)
        scanned = tier()
        try:
            entries = scanned.usage().entries
        finally:
            scanned.close()
    assert second.cache_tier == "semantic"
    assert entries == 1  # the answer; the vectors are not counted as one


def hostile_lines(key: str, dimensions: int) -> list[str]:
    """Records a planted file might hold: each is to be ignored."""
    import base64
    import struct

    def packed(*values: float) -> str:
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()

    wide = packed(*([1.0] * (dimensions + 1)))
    nan = packed(*([float("nan")] + [1.0] * (dimensions - 1)))
    zero = packed(*([0.0] * dimensions))
    return [
        json.dumps({"key": key, "prompt": PARAPHRASE, "vector": wide}),
        json.dumps({"key": key, "prompt": PARAPHRASE, "vector": nan}),
        json.dumps({"key": key, "prompt": PARAPHRASE, "vector": zero}),
        json.dumps({"key": key, "prompt": PARAPHRASE, "vector": "not base64!"}),
        json.dumps({"key": key, "prompt": PARAPHRASE, "vector": packed(1.0)[:-2]}),
        json.dumps(["a", "list"]),
        "{not json",
        "x" * 300_000,
    ]


async def test_hostile_stored_vectors_are_ignored(server: FakeLLMServer, tmp_path: Path) -> None:
    settings = settings_for(server)
    async with client_for(settings, [DiskTier(tmp_path)]) as client:
        await ask(client, PROMPT)
    (group,) = (tmp_path / "semantic").glob("*.jsonl")
    stored = group.read_text(encoding="utf-8")
    key = json.loads(stored)["key"]
    group.write_text(
        "\n".join(hostile_lines(key, len(fake_embedding("")))) + "\n", encoding="utf-8"
    )
    async with client_for(settings, [DiskTier(tmp_path)]) as client:
        second = await ask(client, PARAPHRASE)
    assert second.cache_tier is None
    assert server.chat_count == 2


async def test_hostile_vectors_in_redis_are_ignored(server: FakeLLMServer, tmp_path: Path) -> None:
    import redis

    settings = settings_for(server)
    with running_redis_server(tmp_path) as redis_server:

        def tier() -> RedisTier:
            return RedisTier(port=redis_server.port, timeout=5.0)

        async with client_for(settings, [tier()]) as client:
            await ask(client, PROMPT)
        plain = redis.Redis(port=redis_server.port)
        try:
            (name,) = plain.keys("trinity:semantic:*")
            ((key, stored),) = plain.hgetall(name).items()
            record = json.loads(stored)
            lines = hostile_lines(record["key"], len(fake_embedding("")))
            plain.hset(name, mapping={f"junk{n}": line for n, line in enumerate(lines)})
            plain.hset(name, key, lines[1])  # the real record, its vector now holding a NaN
        finally:
            plain.close()
        async with client_for(settings, [tier()]) as client:
            second = await ask(client, PARAPHRASE)
    assert second.cache_tier is None
    assert server.chat_count == 2


async def test_an_embedder_that_is_down_is_one_warning_and_misses(
    server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail_embeddings(503)
    caplog.set_level(logging.WARNING)
    async with client_for(settings_for(server), [MemoryTier()]) as client:
        answers = [await ask(client, prompt) for prompt in (PROMPT, PARAPHRASE, OTHER)]
    assert [a.cache_tier for a in answers] == [None, None, None]
    assert server.chat_count == 3
    assert server.embedding_count == 1  # off for the rest of the run after the first
    warnings = [r for r in caplog.records if "semantic cache" in r.getMessage()]
    assert len(warnings) == 1 and "503" in warnings[0].getMessage()


async def test_an_embedder_not_running_is_a_miss(tmp_path: Path) -> None:
    with FakeLLMServer() as chat, FakeLLMServer() as gone:
        settings = settings_for(chat)
        embedder = replace(settings.semantic.embedder, api_url=gone.url)  # type: ignore[arg-type]
        gone.close()
        settings = replace(settings, semantic=replace(settings.semantic, embedder=embedder))
        async with client_for(settings, [MemoryTier()]) as client:
            await ask(client, PROMPT)
            second = await ask(client, PARAPHRASE)
        assert second.cache_tier is None
        assert chat.chat_count == 2


def test_requests_of_a_group_differ_only_in_the_prompt() -> None:
    from trinity.llm.semantic import group_of

    embedder = EmbedderSettings(provider="openai", model="m", api_url="http://e")

    def group(prompt: str, **options: Any) -> str:
        request = LLMRequest.from_prompt(prompt, model="m", temperature=0, max_tokens=10, **options)
        return group_of("openai", "http://x", request, embedder)

    assert group("a") == group("b")
    assert group("a", system="s") != group("a", system="t")
    other = replace(embedder, model="n")
    request = LLMRequest.from_prompt("a", model="m", temperature=0, max_tokens=10)
    assert group_of("openai", "http://x", request, other) != group("a")


def test_the_fake_servers_embeddings(server: FakeLLMServer) -> None:
    import httpx

    with httpx.Client(base_url=server.url) as http:
        openai = http.post("/v1/embeddings", json={"model": "e", "input": [PROMPT, OTHER]})
        ollama = http.post("/api/embed", json={"model": "e", "input": PROMPT})
        bad = http.post("/api/embed", json={"model": "e", "input": 3})
        server.fail_embeddings(503)
        down = http.post("/v1/embeddings", json={"model": "e", "input": PROMPT})
    vectors = [item["embedding"] for item in openai.json()["data"]]
    assert vectors == [fake_embedding(PROMPT), fake_embedding(OTHER)]
    assert ollama.json()["embeddings"] == [fake_embedding(PROMPT)]
    assert (bad.status_code, down.status_code) == (400, 503)
    assert server.embedding_count == 4 and server.chat_count == 0
