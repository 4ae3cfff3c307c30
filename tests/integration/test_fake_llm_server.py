"""Tests for the fake LLM server used by the rest of the suite (tests/fakellm.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakeclock import FakeClock
from tests.fakellm import (
    ANTHROPIC_CHAT_PATH,
    ANTHROPIC_JSON_INSTRUCTION,
    MALFORMED_BODY,
    OLLAMA_CHAT_PATH,
    OPENAI_CHAT_PATH,
    FakeLLMServer,
    default_answer,
    prompt_digest,
)
from trinity.llm.providers import AnthropicAdapter, OpenAIAdapter
from trinity.llm.types import LLMRequest


@pytest.fixture
def client(fake_llm: FakeLLMServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_llm.url, timeout=5.0) as c:
        yield c


def ollama_body(user: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    return {
        "model": "llama3",
        "messages": messages,
        "stream": False,
        "options": {"temperature": 0.2, "num_predict": 256},
        **extra,
    }


def openai_body(user: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    return {
        "model": "gpt-x",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 256,
        **extra,
    }


def ollama_text(client: httpx.Client, user: str, system: str | None = None) -> str:
    resp = client.post(OLLAMA_CHAT_PATH, json=ollama_body(user, system))
    resp.raise_for_status()
    content = resp.json()["message"]["content"]
    assert isinstance(content, str)
    return content


def test_url_is_loopback(fake_llm: FakeLLMServer) -> None:
    assert fake_llm.url == f"http://127.0.0.1:{fake_llm.port}"
    assert fake_llm.port > 0


def test_ollama_wire_format(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    resp = client.post(OLLAMA_CHAT_PATH, json=ollama_body("Write about\ncats", "Be brief."))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["model"] == "llama3"
    assert isinstance(data["created_at"], str)
    assert data["message"]["role"] == "assistant"
    assert data["done"] is True
    assert data["done_reason"] == "stop"
    text = data["message"]["content"]
    digest = prompt_digest("Be brief.", "Write about\ncats")
    assert text == (f"Generated answer {digest}.\n\nThis paragraph responds to: Write about cats.")
    assert data["prompt_eval_count"] == 5  # "Be brief." + "Write about cats"
    assert data["eval_count"] == len(text.split())


def test_openai_wire_format(client: httpx.Client) -> None:
    resp = client.post(OPENAI_CHAT_PATH, json=openai_body("Hello there", "sys"))
    assert resp.status_code == 200
    data = resp.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-x"
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == default_answer("sys", "Hello there")
    usage = data["usage"]
    assert usage["prompt_tokens"] == 3
    assert usage["completion_tokens"] == len(choice["message"]["content"].split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_health_listings_and_404(client: httpx.Client) -> None:
    tags = client.get("/api/tags")
    assert tags.status_code == 200
    assert tags.json()["models"][0]["name"] == "fake-model:latest"
    models = client.get("/v1/models")
    assert models.status_code == 200
    assert models.json()["object"] == "list"
    assert models.json()["data"][0]["id"] == "fake-model"
    missing = client.post("/api/generate", json={})
    assert missing.status_code == 404
    assert "error" in missing.json()
    assert client.get("/v1/chat/completions").status_code == 404


def test_deterministic_answers(client: httpx.Client) -> None:
    a1 = ollama_text(client, "Describe the moon", "You are a poet.")
    a2 = ollama_text(client, "Describe the moon", "You are a poet.")
    other_system = ollama_text(client, "Describe the moon", "You are a lawyer.")
    other_prompt = ollama_text(client, "Describe the sun", "You are a poet.")
    assert a1 == a2
    assert len({a1, other_system, other_prompt}) == 3


def test_last_user_message_drives_answer(client: httpx.Client) -> None:
    body = openai_body("ignored")
    body["messages"] = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "second question"},
    ]
    content = client.post(OPENAI_CHAT_PATH, json=body).json()["choices"][0]["message"]["content"]
    assert content == default_answer("", "second question")


def test_json_mode(client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"items": {"type": "array"}}}
    for body in (
        ollama_body("list things", format="json"),
        ollama_body("list things", format=schema),
    ):
        content = client.post(OLLAMA_CHAT_PATH, json=body).json()["message"]["content"]
        parsed = json.loads(content)
        assert parsed["digest"] == prompt_digest("", "list things")
        assert parsed["items"] == ["alpha", "beta"]
        assert isinstance(parsed["summary"], str)
    for rf in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"schema": {}}}):
        resp = client.post(OPENAI_CHAT_PATH, json=openai_body("list things", response_format=rf))
        parsed = json.loads(resp.json()["choices"][0]["message"]["content"])
        assert parsed["items"] == ["alpha", "beta"]


def test_scripted_answers(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.script("evil", "<script>alert(1)</script>")
    fake_llm.script("evil twin", "never used: first match wins")
    fake_llm.script("broken json", '{"items": [')
    assert ollama_text(client, "please be evil twin") == "<script>alert(1)</script>"
    resp = client.post(
        OPENAI_CHAT_PATH,
        json=openai_body("broken json please", response_format={"type": "json_object"}),
    )
    assert resp.json()["choices"][0]["message"]["content"] == '{"items": ['
    assert ollama_text(client, "nice") == default_answer("", "nice")


def test_scripts_for_one_model(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.script("moon", "only for mistral", model="mistral")
    fake_llm.script("moon", "for any other model")
    for model, expected in (("mistral", "only for mistral"), ("llama3", "for any other model")):
        body = openai_body("the moon", model=model)
        content = client.post(OPENAI_CHAT_PATH, json=body).json()["choices"][0]["message"]
        assert content["content"] == expected


def test_scripted_answers_by_turn_and_model(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.script("bio", "Strong.", model="strong")  # first match wins: this one first
    fake_llm.script("bio", "Too long an answer.", turn=0)
    fake_llm.script("bio", "Short.", turn=1)
    corrected = [
        {"role": "user", "content": "Write the bio."},
        {"role": "assistant", "content": "Too long an answer."},
        {"role": "user", "content": "Shorter, please."},
    ]

    def answer(messages: list[dict[str, str]], model: str = "llama3") -> str:
        body = {**ollama_body(""), "messages": messages, "model": model}
        content = client.post(OLLAMA_CHAT_PATH, json=body).json()["message"]["content"]
        assert isinstance(content, str)
        return content

    assert answer(corrected[:1]) == "Too long an answer."
    # The corrected request's last user turn is the correction: the prompt (its first
    # user turn) and its one assistant turn pick the answer.
    assert answer(corrected) == "Short."
    assert answer([*corrected, *corrected[1:]]) == default_answer("", "Shorter, please.")
    assert answer([{"role": "user", "content": "the bio"}], model="strong") == "Strong."


def test_request_log_and_reset(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.script("x", "scripted")
    client.get("/api/tags")
    client.post(OLLAMA_CHAT_PATH, json=ollama_body("x"), headers={"X-Trace": "abc"})
    client.post(OPENAI_CHAT_PATH, json=openai_body("y"), headers={"Authorization": "Bearer k"})
    assert fake_llm.request_count == 3
    assert fake_llm.chat_count == 2
    first, second, third = fake_llm.requests
    assert (first.method, first.path, first.body) == ("GET", "/api/tags", None)
    assert second.path == OLLAMA_CHAT_PATH
    assert second.body["messages"][-1]["content"] == "x"
    assert second.headers["x-trace"] == "abc"
    assert third.headers["authorization"] == "Bearer k"
    assert [r.path for r in fake_llm.chat_requests] == [OLLAMA_CHAT_PATH, OPENAI_CHAT_PATH]
    fake_llm.reset()
    assert fake_llm.request_count == 0
    assert fake_llm.requests == []
    assert ollama_text(client, "x") == "scripted"  # scripts survive reset


def test_fail_next_status_codes(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(2)
    fake_llm.fail_next(1, 429, headers={"Retry-After": "1"})
    fake_llm.fail_next(1, 503, body={"error": "custom"})
    assert fake_llm.pending_faults == 4
    r1 = client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
    r2 = client.post(OPENAI_CHAT_PATH, json=openai_body("a"))
    assert client.get("/api/tags").status_code == 200  # health checks consume no faults
    r3 = client.post(OPENAI_CHAT_PATH, json=openai_body("a"))
    r4 = client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
    r5 = client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
    assert r1.status_code == 500
    assert isinstance(r1.json()["error"], str)
    assert r2.status_code == 500
    assert "message" in r2.json()["error"]
    assert r3.status_code == 429
    assert r3.headers["retry-after"] == "1"
    assert (r4.status_code, r4.json()) == (503, {"error": "custom"})
    assert r5.status_code == 200
    assert fake_llm.pending_faults == 0
    assert fake_llm.chat_count == 5  # failed attempts are logged too


def test_fail_next_drop(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(1, kind="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
    assert client.post(OLLAMA_CHAT_PATH, json=ollama_body("a")).status_code == 200
    assert fake_llm.chat_count == 2


def test_fail_next_malformed(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(1, kind="malformed")
    resp = client.post(OPENAI_CHAT_PATH, json=openai_body("a"))
    assert resp.status_code == 200
    assert resp.content == MALFORMED_BODY
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_fail_next_truncated(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(2, kind="truncated")
    ollama = client.post(OLLAMA_CHAT_PATH, json=ollama_body("a")).json()
    assert ollama["done_reason"] == "length"
    assert default_answer("", "a").startswith(ollama["message"]["content"])
    openai = client.post(OPENAI_CHAT_PATH, json=openai_body("a")).json()
    assert openai["choices"][0]["finish_reason"] == "length"


def test_fail_next_rejects_unknown_kind(fake_llm: FakeLLMServer) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        fake_llm.fail_next(1, kind="explode")  # type: ignore[arg-type]


def test_latency_is_a_lower_bound(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.latency = 0.2
    start = time.monotonic()
    assert client.post(OLLAMA_CHAT_PATH, json=ollama_body("slow")).status_code == 200
    assert time.monotonic() - start >= 0.2


def test_concurrent_requests_and_keep_alive(fake_llm: FakeLLMServer) -> None:
    fake_llm.latency = 0.1
    results: list[int] = []
    lock = threading.Lock()
    with httpx.Client(base_url=fake_llm.url, timeout=5.0) as c:

        def worker(i: int) -> None:
            resp = c.post(OPENAI_CHAT_PATH, json=openai_body(f"prompt {i}"))
            with lock:
                results.append(resp.status_code)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fake_llm.latency = 0
        # Sequential reuse of pooled keep-alive connections still works.
        for _ in range(3):
            assert c.post(OPENAI_CHAT_PATH, json=openai_body("again")).status_code == 200
    assert results == [200] * 4
    assert fake_llm.max_in_flight >= 2
    assert fake_llm.chat_count == 7


def test_context_manager_and_close() -> None:
    with FakeLLMServer() as server:
        url = server.url
        assert httpx.get(url + "/api/tags").status_code == 200
    server.close()  # idempotent
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/api/tags", timeout=1.0)


# ---------------------------------------------------------------------------- anthropic

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def anthropic_body(user: str, system: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-x",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": user}],
        **extra,
    }
    if system is not None:
        body["system"] = system
    return body


def anthropic_post(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(ANTHROPIC_CHAT_PATH, json=body, headers={**ANTHROPIC_HEADERS, **headers})


def test_anthropic_wire_format(client: httpx.Client) -> None:
    resp = anthropic_post(client, anthropic_body("Hello there", "sys"))
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert data["id"].startswith("msg_")
    assert (data["type"], data["role"], data["model"]) == ("message", "assistant", "claude-x")
    assert data["stop_reason"] == "end_turn"
    [block] = data["content"]
    assert block == {"type": "text", "text": default_answer("sys", "Hello there")}
    assert data["usage"] == {"input_tokens": 3, "output_tokens": len(block["text"].split())}
    # The same system and prompt get the same answer in every wire format.
    openai = client.post(OPENAI_CHAT_PATH, json=openai_body("Hello there", "sys")).json()
    assert openai["choices"][0]["message"]["content"] == block["text"]


def test_anthropic_system_blocks_and_last_user_message(client: httpx.Client) -> None:
    body = anthropic_body("ignored", [{"type": "text", "text": "Be brief."}])
    body["messages"] = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    data = anthropic_post(client, body).json()
    assert data["content"][0]["text"] == default_answer("Be brief.", "second question")


def test_anthropic_requires_the_version_header(
    fake_llm: FakeLLMServer, client: httpx.Client
) -> None:
    resp = client.post(ANTHROPIC_CHAT_PATH, json=anthropic_body("a"), headers={"x-api-key": "k"})
    assert resp.status_code == 400
    assert resp.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        },
    }
    assert anthropic_post(client, anthropic_body("a"), **{"x-api-key": "k"}).status_code == 200
    first, second = fake_llm.chat_requests
    assert "anthropic-version" not in first.headers
    assert second.headers["anthropic-version"] == "2023-06-01"
    assert second.headers["x-api-key"] == "k"
    assert fake_llm.answered == [second]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
            "Unexpected role",
        ),
        ({"stream": True}, "streaming"),
    ],
)
def test_anthropic_rejects_what_the_messages_api_rejects(
    client: httpx.Client, change: dict[str, Any], message: str
) -> None:
    body = {**anthropic_body("a"), **change}
    if body["max_tokens"] is None:
        del body["max_tokens"]
    resp = anthropic_post(client, body)
    assert resp.status_code == 400
    assert resp.json()["type"] == "error"
    assert message in resp.json()["error"]["message"]


def test_anthropic_json_mode(client: httpx.Client) -> None:
    system = f"Be terse.\n\n{ANTHROPIC_JSON_INSTRUCTION} It must match this JSON schema: {{}}"
    data = anthropic_post(client, anthropic_body("list things", system)).json()
    parsed = json.loads(data["content"][0]["text"])
    assert parsed["digest"] == prompt_digest("Be terse.", "list things")
    openai = client.post(
        OPENAI_CHAT_PATH,
        json=openai_body("list things", "Be terse.", response_format={"type": "json_object"}),
    ).json()
    assert openai["choices"][0]["message"]["content"] == data["content"][0]["text"]
    alone = anthropic_post(client, anthropic_body("x", ANTHROPIC_JSON_INSTRUCTION)).json()
    assert json.loads(alone["content"][0]["text"])["digest"] == prompt_digest("", "x")


def test_anthropic_faults(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(1, kind="truncated")
    fake_llm.fail_next(1, 529)
    truncated = anthropic_post(client, anthropic_body("a")).json()
    assert truncated["stop_reason"] == "max_tokens"
    assert default_answer("", "a").startswith(truncated["content"][0]["text"])
    overloaded = anthropic_post(client, anthropic_body("a"))
    assert overloaded.status_code == 529
    assert overloaded.json()["error"]["type"] == "overloaded_error"


def test_the_anthropic_adapter_talks_to_the_fake(client: httpx.Client) -> None:
    adapter = AnthropicAdapter()
    for response_format in ("text", "json"):
        request = LLMRequest.from_prompt(
            "Describe the moon",
            model="claude-x",
            system="You are a poet.",
            temperature=0.2,
            max_tokens=64,
            response_format=response_format,
        )
        resp = client.post(
            adapter.chat_path, json=adapter.body(request), headers=adapter.headers("sk-ant")
        )
        assert resp.status_code == 200
        answer = adapter.parse(resp.json())
        expected = default_answer(
            "You are a poet.", "Describe the moon", json_mode=response_format == "json"
        )
        assert (answer.text, answer.finish_reason) == (expected, "stop")
        assert answer.usage.input_tokens > 0
    error = client.post(adapter.chat_path, json=adapter.body(request))
    assert adapter.error_detail(error.json()) == (
        "invalid_request_error: anthropic-version: header is required"
    )


# ---------------------------------------------------------------------------- more faults


def test_fail_next_timeout(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_next(1, kind="timeout")
    with httpx.Client(base_url=fake_llm.url, timeout=0.2) as c:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            c.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
        assert time.monotonic() - start < 2
        assert c.post(OLLAMA_CHAT_PATH, json=ollama_body("a")).status_code == 200
    assert (fake_llm.chat_count, fake_llm.fault_count, fake_llm.answered_count) == (2, 1, 1)


def test_a_short_hang_ends_in_a_hang_up(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(1, kind="timeout", hang=0.1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))


def test_close_wakes_a_hanging_request() -> None:
    server = FakeLLMServer()
    server.fail_next(1, kind="timeout", hang=30)
    failures: list[Exception] = []

    def call() -> None:
        try:
            httpx.post(server.url + OLLAMA_CHAT_PATH, json=ollama_body("a"), timeout=60)
        except httpx.TransportError as exc:
            failures.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    while server.chat_count == 0:
        time.sleep(0.01)
    start = time.monotonic()
    server.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert time.monotonic() - start < 5
    assert len(failures) == 1


def test_fail_next_reset(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_next(1, kind="reset")
    with pytest.raises(httpx.ReadError):  # a TCP RST: "connection reset by peer"
        client.post(OPENAI_CHAT_PATH, json=openai_body("a"))
    assert client.post(OPENAI_CHAT_PATH, json=openai_body("a")).status_code == 200
    assert fake_llm.chat_count == 2


def statuses_of(client: httpx.Client, n: int, prompt: str = "p") -> list[int | str]:
    """The status of each of `n` OpenAI requests, or the name of the transport error."""
    outcomes: list[int | str] = []
    for i in range(n):
        try:
            resp = client.post(OPENAI_CHAT_PATH, json=openai_body(f"{prompt} {i}"))
        except httpx.TransportError as exc:
            outcomes.append(type(exc).__name__)
            continue
        try:
            resp.json()
        except json.JSONDecodeError:
            outcomes.append("malformed")
            continue
        outcomes.append(resp.status_code)
    return outcomes


def test_fail_rate_statistics(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_rate(0.3, seed=7)
    outcomes = statuses_of(client, 200)
    failed = outcomes.count(500)
    assert set(outcomes) == {200, 500}
    assert 40 <= failed <= 80  # 60 expected, sd 6.5
    assert fake_llm.fault_count == failed
    assert fake_llm.answered_count == 200 - failed
    assert fake_llm.pending_faults == 0
    # The same seed draws the same failures.
    fake_llm.fail_rate(0.3, seed=7)
    assert statuses_of(client, 200) == outcomes
    fake_llm.fail_rate(0.3, seed=8)
    assert statuses_of(client, 200) != outcomes


def test_fail_rate_draws_kinds_and_statuses(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_rate(
        1.0,
        kinds=("status", "drop", "reset", "malformed", "truncated"),
        statuses=(500, 503),
        seed=3,
    )
    outcomes = statuses_of(client, 80)
    assert 200 in outcomes  # "truncated" answers are 200s
    assert {500, 503, "malformed", "RemoteProtocolError", "ReadError"} <= set(outcomes)
    assert fake_llm.fault_count == 80
    assert fake_llm.answered_count == outcomes.count(200)  # only the truncated ones
    fake_llm.fail_rate(0)
    assert statuses_of(client, 20) == [200] * 20


def test_fail_rate_timeouts(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_rate(1.0, kinds=("timeout",))
    with httpx.Client(base_url=fake_llm.url, timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
        fake_llm.fail_rate(0)
        assert c.post(OLLAMA_CHAT_PATH, json=ollama_body("a")).status_code == 200


def test_fail_rate_failures_are_per_request(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_rate(0.5, seed=1)
    attempts = 0
    while True:
        attempts += 1
        if client.post(OPENAI_CHAT_PATH, json=openai_body("same")).status_code == 200:
            break
        assert attempts < 30
    assert fake_llm.answered_prompts == ["same"]
    assert fake_llm.chat_count == attempts


def test_queued_faults_go_before_drawn_ones(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    fake_llm.fail_rate(1.0, statuses=(503,))
    fake_llm.fail_next(1, 418)
    assert statuses_of(client, 2) == [418, 503]


def test_fail_rate_is_thread_safe(fake_llm: FakeLLMServer) -> None:
    fake_llm.fail_rate(0.5, seed=2)
    codes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=fake_llm.url, timeout=5.0) as c:
            for i in range(25):
                code = c.post(OPENAI_CHAT_PATH, json=openai_body(f"x {i}")).status_code
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(codes) == 100
    assert codes.count(500) == fake_llm.fault_count
    assert codes.count(200) == fake_llm.answered_count
    assert 25 <= fake_llm.fault_count <= 75


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 1.5}, "rate"),
        ({"rate": -0.1}, "rate"),
        ({"rate": 0.5, "kinds": ()}, "kinds"),
        ({"rate": 0.5, "kinds": ("explode",)}, "unknown fault kind"),
        ({"rate": 0.5, "statuses": ()}, "statuses"),
        ({"rate": 0.5, "hang": -1}, "hang"),
    ],
)
def test_fail_rate_rejects_bad_arguments(
    fake_llm: FakeLLMServer, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fake_llm.fail_rate(**kwargs)


# ---------------------------------------------------------------------------- rate limits


def test_limit_per_key(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    clock = FakeClock()
    fake_llm.limit_per_key(3, clock=clock)
    ok = [client.post(OPENAI_CHAT_PATH, json=openai_body("a"), headers=auth("A")) for _ in "123"]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["2", "1", "0"]
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"3"}

    clock.now += 10.2
    refused = client.post(OPENAI_CHAT_PATH, json=openai_body("a"), headers=auth("A"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "50"  # 49.8 s until the first slot frees
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "50s"
    assert refused.json()["error"]["code"] == 429
    assert OpenAIAdapter().retry_after(refused.headers) == 50

    # Other keys have windows of their own: x-api-key, and no key at all.
    other = anthropic_post(client, anthropic_body("b"), **{"x-api-key": "B"})
    assert other.status_code == 200
    assert other.headers["x-ratelimit-remaining-requests"] == "2"
    assert client.post(OLLAMA_CHAT_PATH, json=ollama_body("c")).status_code == 200

    clock.now += 49.5  # 0.3 s to go: Retry-After rounds up, to at least 1
    again = anthropic_post(client, anthropic_body("a"), authorization="Bearer A")
    assert again.status_code == 429
    assert again.headers["retry-after"] == "1"
    assert again.json()["error"]["type"] == "rate_limit_error"

    clock.now += 0.3  # a minute after the first three: all their slots free again
    assert client.post(OPENAI_CHAT_PATH, json=openai_body("a"), headers=auth("A")).is_success
    assert fake_llm.rate_limited_count == 2
    assert fake_llm.chat_count == 8  # refused requests are logged too
    assert fake_llm.answered_prompts == ["a", "a", "a", "b", "c", "a"]

    fake_llm.limit_per_key(None)
    for _ in range(5):
        resp = client.post(OPENAI_CHAT_PATH, json=openai_body("a"), headers=auth("A"))
        assert resp.status_code == 200
        assert "x-ratelimit-remaining-requests" not in resp.headers


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_sliding_window_frees_one_slot_at_a_time(
    fake_llm: FakeLLMServer, client: httpx.Client
) -> None:
    clock = FakeClock()
    fake_llm.limit_per_key(2, window=10.0, clock=clock)

    def status() -> int:
        return client.post(OLLAMA_CHAT_PATH, json=ollama_body("a")).status_code

    assert status() == 200
    clock.now += 4
    assert status() == 200
    assert status() == 429
    clock.now += 6  # the first request leaves the window, the second stays 4 s more
    assert status() == 200
    resp = client.post(OLLAMA_CHAT_PATH, json=ollama_body("a"))
    assert (resp.status_code, resp.headers["retry-after"]) == (429, "4")
    assert fake_llm.rate_limited_count == 2


def test_rate_limited_requests_take_no_fault_and_faulted_ones_count(
    fake_llm: FakeLLMServer, client: httpx.Client
) -> None:
    clock = FakeClock()
    fake_llm.limit_per_key(1, clock=clock)
    fake_llm.fail_next(1, 503)
    first = client.post(OPENAI_CHAT_PATH, json=openai_body("a"))
    assert first.status_code == 503  # admitted, then faulted: it uses the slot
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    fake_llm.fail_next(1, 500)
    assert client.post(OPENAI_CHAT_PATH, json=openai_body("a")).status_code == 429
    assert fake_llm.pending_faults == 1
    assert fake_llm.fault_count == 1


def test_reset_clears_the_new_counters(fake_llm: FakeLLMServer, client: httpx.Client) -> None:
    clock = FakeClock()
    fake_llm.limit_per_key(1, clock=clock)
    fake_llm.fail_next(1)
    statuses_of(client, 3)
    assert (fake_llm.fault_count, fake_llm.rate_limited_count) == (1, 2)
    fake_llm.reset()
    assert (fake_llm.fault_count, fake_llm.rate_limited_count) == (0, 0)
    assert fake_llm.answered == []
    assert statuses_of(client, 2) == [200, 429]  # the limit stays; its windows restart
    assert fake_llm.answered_prompts == ["p 0"]


def test_limit_per_key_rejects_bad_arguments(fake_llm: FakeLLMServer) -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        fake_llm.limit_per_key(0)
    with pytest.raises(ValueError, match="window"):
        fake_llm.limit_per_key(5, window=0)
