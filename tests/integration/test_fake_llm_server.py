"""Tests for the fake LLM server used by the rest of the suite (tests/fakellm.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakellm import (
    MALFORMED_BODY,
    OLLAMA_CHAT_PATH,
    OPENAI_CHAT_PATH,
    FakeLLMServer,
    default_answer,
    prompt_digest,
)


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
    assert text == (f"Generated answer {digest}.\n\nThis paragraph responds to: Write about cats")
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
