"""The local provider's generation (ModelRunner) against a fake generator, and the frames.

No real model runs here: `ModelRunner(settings, loader=...)` gets a fake with llama-cpp's
method names and answer shapes, which records what it was asked (in this process; the
worker process that runs it in a build is tested in test_model_worker.py). The GGUF
header reader runs on small files written here, and once on the packaged model's file.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import llama_cpp
import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from tests.unit.conftest import ProjectFactory
from trinity.config import SiteSettings
from trinity.errors import ConfigError, MalformedResponseError, MissingDependencyError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers import local
from trinity.llm.providers.local import (
    DEFAULT_OPTIONS,
    INSTALL_COMMAND,
    MIN_CONTINUATION_WORDS,
    MODEL_PACKAGE,
    SAMPLING_ATTEMPTS,
    LocalBackend,
    ModelRunner,
    _json_grammar,
    check_available,
    gguf_has_chat_template,
    load_llama,
    missing_packages,
    model_path,
    resolve_style,
)
from trinity.llm.settings import DEFAULT_LOCAL_MODEL, LLMSettings
from trinity.llm.types import CompletionFrame, LLMRequest, LLMResponse
from trinity.plan import DEFAULT_STOPS, completion_frame, plan_jobs
from trinity.project import prepare
from trinity.site import Block, Page

SETTINGS_PATH = "config/settings.yaml"
# Gemma-style chat templates. Jinja drops a template's final newline, so the generation
# prompt is an expression, as in Gemma's own template.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# Like Gemma 3's own: no system turn, its text opens the first user turn instead.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ prefix if loop.first else '' }}{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
SCHEMA = {
    "type": "object",
    "required": ["highlights"],
    "properties": {"highlights": {"type": "array", "items": {"type": "string"}}},
}
DOCUMENT = "Mara\n\n# Home\n\n## Intro\n\nMara is"
FRAME = CompletionFrame(DOCUMENT, lead="Mara is", stop=("\n\n", "<"))

Reply = str | tuple[str, str]  # a text, or (text, finish_reason)


class FakeModel:
    """Stands in for llama_cpp.Llama: records each call's arguments, answers from a script.

    `replies` are used in turn, the last one again once they run out. Each call also
    records how many calls were running at once and on which thread it ran.
    """

    def __init__(self, replies: list[Reply] | None = None, *, delay: float = 0.0) -> None:
        self.metadata: dict[str, str] = {"general.architecture": "gemma3"}
        self.replies: list[Reply] = list(replies or [" a painter from Oslo."])
        self.delay = delay
        self.completion_calls: list[dict[str, Any]] = []
        self.chat_calls: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self.max_running = 0
        self._running = 0
        self._counter = threading.Lock()

    def _next(self) -> tuple[str, str]:
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return (reply, "stop") if isinstance(reply, str) else reply

    def _run(self) -> tuple[str, str]:
        with self._counter:
            self._running += 1
            self.max_running = max(self.max_running, self._running)
        self.threads.add(threading.get_ident())
        try:
            time.sleep(self.delay)
            return self._next()
        finally:
            with self._counter:
                self._running -= 1

    def create_completion(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        self.completion_calls.append({"prompt": prompt, **kwargs})
        text, finish_reason = self._run()
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": "fake.gguf",
            "choices": [
                {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14},
        }

    def create_chat_completion(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        self.chat_calls.append({"messages": messages, **kwargs})
        text, finish_reason = self._run()
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "fake.gguf",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26},
        }


def local_settings(**changes: Any) -> LLMSettings:
    defaults: dict[str, Any] = {
        "provider": "local",
        "api_url": "",
        "model": DEFAULT_LOCAL_MODEL,
        "temperature": 0.5,
        "max_tokens": 64,
    }
    return LLMSettings(**{**defaults, **changes})


class Loader:
    """A loader that hands out one fake model and counts how often it was asked."""

    def __init__(self, model: FakeModel) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, settings: LLMSettings) -> FakeModel:
        self.calls += 1
        return self.model


def backend_for(model: FakeModel, **changes: Any) -> ModelRunner:
    return ModelRunner(local_settings(**changes), loader=lambda s: model)


class InProcess:
    """A ModelRunner behind the client's Backend interface, in this process."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.closed = False

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        return self.runner.generate(request)

    async def aclose(self) -> None:
        self.closed = True


def make_request(
    settings: LLMSettings | None = None,
    *,
    frame: CompletionFrame | None = FRAME,
    **params: Any,
) -> LLMRequest:
    """A request as the client makes it for the local provider (DEFAULT_OPTIONS merged)."""
    client = AsyncLLMClient(settings or local_settings())
    return client.request("Write an intro.", system="Be kind.", frame=frame, **params)


def send(runner: ModelRunner, request: LLMRequest | None = None) -> LLMResponse:
    return runner.generate(request or make_request(runner.settings))


# ---------------------------------------------------------------------------- GGUF files

# GGUF metadata value types, by id (gguf.h).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
FIXED_FORMATS = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}
Metadata = list[tuple[str, int, Any]]


def gguf_value(kind: int, value: Any) -> bytes:
    """One metadata value as GGUF stores it (an array value is (item kind, items))."""
    if kind == STRING:
        data: bytes = value.encode("utf-8")
        return struct.pack("<Q", len(data)) + data
    if kind == ARRAY:
        item_kind, items = value
        head = struct.pack("<IQ", item_kind, len(items))
        return head + b"".join(gguf_value(item_kind, item) for item in items)
    return struct.pack(FIXED_FORMATS[kind], value)


def gguf_bytes(metadata: Metadata, *, magic: bytes = b"GGUF", version: int = 3) -> bytes:
    """A GGUF header: magic, version, tensor count, metadata count, then the metadata."""
    data = magic + struct.pack("<IQQ", version, 1, len(metadata))
    for key, kind, value in metadata:
        data += gguf_value(STRING, key) + struct.pack("<I", kind) + gguf_value(kind, value)
    return data


# What comes first in a real GGUF: a string array and a fixed-size array among them.
BASE_METADATA: Metadata = [
    ("general.architecture", STRING, "gemma3"),
    ("general.file_type", UINT32, 15),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<pad>", "<eos>", "<bos>", "\u2581Mara"])),
    ("tokenizer.ggml.scores", ARRAY, (FLOAT32, [0.0, 0.0, 0.0, -1.5])),
]
CHAT_METADATA: Metadata = [
    *BASE_METADATA,
    ("tokenizer.chat_template", STRING, TEMPLATE),
    ("general.name", STRING, "after the template"),
]


def write_gguf(path: Path, metadata: Metadata = BASE_METADATA, **header: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(metadata, **header))
    return path


def test_a_gguf_with_a_chat_template(tmp_path: Path) -> None:
    assert gguf_has_chat_template(write_gguf(tmp_path / "chat.gguf", CHAT_METADATA)) is True


def test_a_gguf_without_a_chat_template(tmp_path: Path) -> None:
    assert gguf_has_chat_template(write_gguf(tmp_path / "base.gguf")) is False


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        pytest.param(UINT8, 200, id="uint8"),
        pytest.param(INT8, -3, id="int8"),
        pytest.param(UINT16, 60000, id="uint16"),
        pytest.param(INT16, -300, id="int16"),
        pytest.param(UINT32, 4_000_000_000, id="uint32"),
        pytest.param(INT32, -70000, id="int32"),
        pytest.param(FLOAT32, 0.5, id="float32"),
        pytest.param(BOOL, True, id="bool"),
        pytest.param(STRING, "", id="empty-string"),
        pytest.param(STRING, "h\u00e9llo \u2581", id="string"),
        pytest.param(UINT64, 2**40, id="uint64"),
        pytest.param(INT64, -(2**40), id="int64"),
        pytest.param(FLOAT64, 1e-300, id="float64"),
        pytest.param(ARRAY, (INT8, []), id="empty-array"),
        pytest.param(ARRAY, (UINT16, [1, 2, 3]), id="uint16-array"),
        pytest.param(ARRAY, (FLOAT64, [1.0, 2.0]), id="float64-array"),
        pytest.param(ARRAY, (BOOL, [True, False, True]), id="bool-array"),
        pytest.param(ARRAY, (STRING, ["a", "", "ccc"]), id="string-array"),
        pytest.param(ARRAY, (ARRAY, [(STRING, ["x", "yy"]), (INT32, [7])]), id="nested-array"),
    ],
)
def test_every_value_type_before_the_template_is_skipped(
    tmp_path: Path, kind: int, value: Any
) -> None:
    """A value skipped by the wrong size would misread the key that follows it."""
    metadata = [("before", kind, value), ("tokenizer.chat_template", STRING, TEMPLATE)]
    assert gguf_has_chat_template(write_gguf(tmp_path / "m.gguf", metadata)) is True
    without = [("before", kind, value), ("general.name", STRING, "m")]
    assert gguf_has_chat_template(write_gguf(tmp_path / "m.gguf", without)) is False


def test_only_the_exact_key_counts(tmp_path: Path) -> None:
    metadata: Metadata = [
        ("tokenizer.chat_template.tool_use", STRING, TEMPLATE),
        ("general.description", STRING, "tokenizer.chat_template"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, ["tokenizer.chat_template"])),
    ]
    assert gguf_has_chat_template(write_gguf(tmp_path / "m.gguf", metadata)) is False


def test_a_version_2_gguf_is_read(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v2.gguf", CHAT_METADATA, version=2)
    assert gguf_has_chat_template(path) is True


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not a model, just text\n" * 4, id="text"),
        pytest.param(gguf_bytes(CHAT_METADATA, magic=b"GGML"), id="other-magic"),
        pytest.param(gguf_bytes(CHAT_METADATA, version=1), id="version-1"),
    ],
)
def test_a_file_that_is_not_gguf_is_a_value_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a GGUF file"):
        gguf_has_chat_template(path)


def _cut_points() -> list[Any]:
    data = gguf_bytes(CHAT_METADATA)
    return [
        pytest.param(0, id="empty"),
        pytest.param(4, id="after-magic"),
        pytest.param(10, id="in-tensor-count"),
        pytest.param(20, id="in-metadata-count"),
        pytest.param(26, id="in-first-key-length"),
        pytest.param(data.index(b"general.file_type") + 4, id="in-a-key"),
        pytest.param(data.index(b"gemma3") + 3, id="in-a-string"),
        pytest.param(data.index("\u2581Mara".encode()) + 2, id="in-a-string-array"),
        pytest.param(data.index(b"tokenizer.chat_template") - 2, id="in-the-key-length"),
        pytest.param(data.index(b"tokenizer.chat_template") + 10, id="in-the-key"),
    ]


@pytest.mark.parametrize("length", _cut_points())
def test_a_truncated_gguf_is_a_value_error(tmp_path: Path, length: int) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(CHAT_METADATA)[:length])
    with pytest.raises(ValueError, match=r"truncated GGUF metadata|not a GGUF file"):
        gguf_has_chat_template(path)


def test_an_unknown_value_type_is_a_value_error(tmp_path: Path) -> None:
    data = gguf_bytes([("general.name", STRING, "m")]).replace(
        struct.pack("<I", STRING) + struct.pack("<Q", 1), struct.pack("<I", 13) + b"\0" * 8
    )
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="unknown GGUF value type 13"):
        gguf_has_chat_template(path)


def test_the_packaged_model_has_no_chat_template() -> None:
    """Gemma 3 270M (the pretrained one) is a base model: its GGUF carries no template."""
    package = importlib.import_module(MODEL_PACKAGE)
    path = Path(package.assemble())
    assert path.suffix == ".gguf"
    assert gguf_has_chat_template(path) is False


# ---------------------------------------------------------------------------- resolve_style


@pytest.mark.parametrize("style", ["chat", "completion"])
@pytest.mark.parametrize("model", [DEFAULT_LOCAL_MODEL, "nowhere.gguf", "not-gguf.gguf"])
def test_an_explicit_style_wins_without_reading_the_model(
    tmp_path: Path, style: str, model: str
) -> None:
    (tmp_path / "not-gguf.gguf").write_bytes(b"not a model")
    settings = local_settings(model=model, style=style, base_dir=tmp_path)
    assert resolve_style(settings) == style


def test_auto_for_the_packaged_model_is_completion_without_assembling_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(settings: LLMSettings) -> Path:
        raise AssertionError("the model file was looked up")

    monkeypatch.setattr(local, "model_path", fail)
    assert resolve_style(local_settings()) == "completion"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(CHAT_METADATA, "chat", id="with-template"),
        pytest.param(BASE_METADATA, "completion", id="without-template"),
    ],
)
def test_auto_for_a_gguf_path_follows_its_chat_template(
    tmp_path: Path, metadata: Metadata, expected: str
) -> None:
    write_gguf(tmp_path / "models" / "m.gguf", metadata)
    settings = local_settings(model="models/m.gguf", base_dir=tmp_path)  # relative to the project
    assert settings.style == "auto"
    assert resolve_style(settings) == expected


def test_auto_for_a_file_that_is_not_gguf_raises(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a GGUF file"):
        resolve_style(local_settings(model=str(tmp_path / "m.gguf")))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"provider": "ollama"}, "chat", id="ollama"),
        pytest.param({"provider": "openai", "model": "gpt-4o-mini"}, "chat", id="openai"),
        pytest.param({"provider": "ollama", "style": "chat"}, "chat", id="ollama-chat"),
        pytest.param({}, "completion", id="local-default"),
        pytest.param({"style": "chat"}, "chat", id="local-chat"),
        pytest.param({"model": "chat.gguf"}, "chat", id="local-gguf-with-template"),
        pytest.param({"model": "base.gguf"}, "completion", id="local-gguf-without-template"),
        pytest.param(
            {"model": "chat.gguf", "style": "completion"}, "completion", id="local-completion"
        ),
    ],
)
def test_the_client_knows_the_style_before_any_request(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    write_gguf(tmp_path / "chat.gguf", CHAT_METADATA)
    write_gguf(tmp_path / "base.gguf", BASE_METADATA)
    if changes.get("provider", "local") == "local":
        settings = local_settings(base_dir=tmp_path, **changes)
    else:
        settings = LLMSettings(**changes)
    client = AsyncLLMClient(settings)
    assert client.style == expected
    assert client.completes_documents == (expected == "completion")
    request = client.request("p", frame=FRAME)
    assert (request.document is not None) == (expected == "completion")


# ---------------------------------------------------------------------------- completion path


def test_completion_sends_the_document_and_answers_lead_plus_continuation() -> None:
    model = FakeModel([" a painter from Oslo."])
    response = send(backend_for(model))

    (call,) = model.completion_calls
    assert model.chat_calls == []
    assert call["prompt"] == DOCUMENT
    assert call["stop"] == ["\n\n", "<"]
    assert call["seed"] == DEFAULT_OPTIONS["seed"]
    assert call["repeat_penalty"] == DEFAULT_OPTIONS["repeat_penalty"]
    assert (call["max_tokens"], call["temperature"]) == (64, 0.5)
    assert "grammar" not in call
    assert response.text == "Mara is a painter from Oslo."
    assert (response.model, response.finish_reason) == ("fake.gguf", "stop")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 4)


def test_top_p_and_options_reach_the_model() -> None:
    model = FakeModel()
    backend = backend_for(model, top_p=0.9, options={"top_k": 40})
    send(backend)
    (call,) = model.completion_calls
    assert (call["top_p"], call["top_k"]) == (0.9, 40)


def test_without_a_lead_the_answer_is_the_continuation() -> None:
    model = FakeModel(["  Mara paints boats. \n"])
    frame = CompletionFrame("Mara\n\n# Home\n\n## Intro\n\n", stop=("\n\n",))
    backend = backend_for(model)
    response = send(backend, make_request(backend.settings, frame=frame))
    assert model.completion_calls[0]["prompt"] == frame.document
    assert response.text == "Mara paints boats."


def test_the_seed_comes_from_the_options() -> None:
    model = FakeModel([""])
    send(backend_for(model, options={"seed": 7}))
    assert [c["seed"] for c in model.completion_calls] == [7 + n for n in range(SAMPLING_ATTEMPTS)]


@pytest.mark.parametrize(
    ("replies", "calls", "text"),
    [
        pytest.param(["", " paints big boats."], 2, "Mara is paints big boats.", id="empty"),
        pytest.param(
            [" a", "\n", " a painter from Oslo."], 3, "Mara is a painter from Oslo.", id="short"
        ),
        pytest.param([" one two three"], 1, "Mara is one two three", id="just-enough"),
    ],
)
def test_a_short_continuation_is_sampled_again_with_the_next_seed(
    replies: list[Reply], calls: int, text: str
) -> None:
    assert MIN_CONTINUATION_WORDS == 3
    model = FakeModel(replies)
    response = send(backend_for(model))
    assert [c["seed"] for c in model.completion_calls] == list(range(calls))
    # Every attempt is the same request but for its seed.
    assert len({c["prompt"] for c in model.completion_calls}) == 1
    assert response.text == text
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10 * calls, 4 * calls)


def test_sampling_stops_after_the_last_attempt_and_keeps_a_short_answer() -> None:
    model = FakeModel([" Hi."])
    response = send(backend_for(model))
    assert len(model.completion_calls) == SAMPLING_ATTEMPTS
    assert response.text == "Mara is Hi."


def test_an_always_empty_continuation_gives_an_empty_answer() -> None:
    model = FakeModel(["  \n"])
    response = send(backend_for(model))
    assert len(model.completion_calls) == SAMPLING_ATTEMPTS
    assert response.text == ""  # not just the lead
    usage = (response.usage.input_tokens, response.usage.output_tokens)
    assert usage == (10 * SAMPLING_ATTEMPTS, 4 * SAMPLING_ATTEMPTS)


@pytest.mark.parametrize(
    ("replies", "text"),
    [
        pytest.param([" Short one.", "", ""], "Mara is Short one.", id="first-then-empty"),
        pytest.param(["", " Short one.", "\n"], "Mara is Short one.", id="middle"),
        pytest.param([" a", " b c", ""], "Mara is b c", id="longer-later"),
        pytest.param([" a b", " c", " d"], "Mara is a b", id="first-of-equals-stays"),
    ],
)
def test_the_longest_continuation_across_seeds_is_kept(replies: list[Reply], text: str) -> None:
    model = FakeModel(replies)
    response = send(backend_for(model))
    assert [c["seed"] for c in model.completion_calls] == list(range(SAMPLING_ATTEMPTS))
    assert response.text == text
    usage = (response.usage.input_tokens, response.usage.output_tokens)
    assert usage == (10 * SAMPLING_ATTEMPTS, 4 * SAMPLING_ATTEMPTS)


def test_the_kept_continuation_keeps_its_own_finish_reason() -> None:
    model = FakeModel([(" Short. And", "length"), ("", "stop"), ("\n", "stop")])
    response = send(backend_for(model))
    assert len(model.completion_calls) == SAMPLING_ATTEMPTS
    assert response.text == "Mara is Short. And"  # kept whole: the build trims it
    assert response.finish_reason == "length"


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        pytest.param("[]", "[]", id="short"),
        pytest.param(" \n", "", id="empty"),
        pytest.param(' ["a"] ', '["a"]', id="list"),
    ],
)
def test_json_is_generated_in_a_single_attempt(reply: str, text: str) -> None:
    model = FakeModel([reply, '{"never": "asked"}'])
    backend = backend_for(model, options={"seed": 7})
    response = send(backend, make_request(backend.settings, response_format="json"))
    (call,) = model.completion_calls
    assert call["seed"] == 7
    assert response.text == text
    assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 4)


def test_the_client_rejects_an_always_empty_continuation() -> None:
    backend = InProcess(backend_for(FakeModel([""])))

    async def main() -> None:
        async with AsyncLLMClient(backend.settings, backend=backend) as client:
            with pytest.raises(MalformedResponseError, match="empty answer"):
                await client.complete(client.request("Write.", frame=FRAME))
            assert client.stats.calls == 1
            assert client.stats.output_tokens == 4 * SAMPLING_ATTEMPTS

    anyio.run(main)


@pytest.mark.parametrize("finish_reason", ["length", "stop"])
def test_a_continuation_is_kept_whole_with_its_finish_reason(finish_reason: str) -> None:
    """Trimming what max_tokens cut off is the build's, for every provider alike."""
    response = send(backend_for(FakeModel([(" a painter. She lives in Oslo and", finish_reason)])))
    assert response.text == "Mara is a painter. She lives in Oslo and"
    assert response.finish_reason == finish_reason
    assert response.truncated == (finish_reason == "length")


@pytest.mark.parametrize("schema", [SCHEMA, None])
def test_json_on_the_completion_path_is_held_to_a_grammar(schema: dict[str, Any] | None) -> None:
    model = FakeModel(['  {"highlights": ["boats", "Oslo"]} \n'])
    backend = backend_for(model)
    request = make_request(backend.settings, response_format="json", json_schema=schema)
    response = send(backend, request)
    (call,) = model.completion_calls
    assert isinstance(call["grammar"], LlamaGrammar)
    assert "stop" not in call
    assert response.text == '{"highlights": ["boats", "Oslo"]}'  # no lead in front


def test_a_request_without_a_document_is_sent_as_chat() -> None:
    model = FakeModel(["Hello there."])
    backend = backend_for(model)
    response = send(backend, make_request(backend.settings, frame=None))
    assert model.completion_calls == []
    assert len(model.chat_calls) == 1
    assert response.text == "Hello there."


# ---------------------------------------------------------------------------- chat path


def test_chat_sends_the_messages_with_the_system_message() -> None:
    model = FakeModel(["A warm intro."])
    response = send(backend_for(model, style="chat"))

    assert model.completion_calls == []
    (call,) = model.chat_calls
    assert call["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Write an intro."},
    ]
    assert (call["max_tokens"], call["temperature"]) == (64, 0.5)
    assert (call["seed"], call["repeat_penalty"]) == (0, 1.2)
    # The frame is for base models only: a chat model gets neither document nor stops.
    assert "stop" not in call
    assert "response_format" not in call
    assert response.text == "A warm intro."  # no lead in front
    assert (response.model, response.finish_reason) == ("fake.gguf", "stop")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 6)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(SCHEMA, {"type": "json_object", "schema": SCHEMA}, id="schema"),
        pytest.param(None, {"type": "json_object"}, id="no-schema"),
    ],
)
def test_chat_json_passes_the_response_format(
    schema: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    model = FakeModel(['{"highlights": []}'])
    backend = backend_for(model, style="chat")
    send(backend, make_request(backend.settings, response_format="json", json_schema=schema))
    (call,) = model.chat_calls
    assert call["response_format"] == expected
    assert "grammar" not in call


@pytest.mark.parametrize("style", ["auto", "chat", "completion"])
def test_the_backend_follows_the_request_not_the_style_setting(style: str) -> None:
    """The client decided the style when it made the request: a document is continued."""
    model = FakeModel()
    backend = backend_for(model, style=style)
    send(backend, make_request(local_settings(style="completion")))
    assert (len(model.completion_calls), len(model.chat_calls)) == (1, 0)
    send(backend, make_request(local_settings(style="chat")))
    assert (len(model.completion_calls), len(model.chat_calls)) == (1, 1)


def test_a_chat_answer_with_no_content_reads_as_empty() -> None:
    model = FakeModel()
    model.create_chat_completion = lambda messages, **kwargs: {  # type: ignore[method-assign]
        "choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]
    }
    response = send(backend_for(model, style="chat"))
    assert (response.text, response.usage.input_tokens) == ("", 0)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            TEMPLATE,
            "<bos>"
            "<start_of_turn>system\nBe kind.<end_of_turn>\n"
            "<start_of_turn>user\nWrite an intro.<end_of_turn>\n"
            "<start_of_turn>model\n",
            id="system-turn",
        ),
        pytest.param(
            GEMMA3_TEMPLATE,
            "<bos>"
            "<start_of_turn>user\nBe kind.\n\nWrite an intro.<end_of_turn>\n"
            "<start_of_turn>model\n",
            id="gemma3-system-in-user-turn",
        ),
    ],
)
def test_how_a_chat_template_formats_trinitys_messages(template: str, expected: str) -> None:
    """What a chat GGUF sees of a Trinity request: llama-cpp's own Jinja2 formatter."""
    model = FakeModel()
    send(backend_for(model, style="chat"))
    formatter = Jinja2ChatFormatter(template=template, eos_token="<eos>", bos_token="<bos>")
    formatted = formatter(messages=model.chat_calls[0]["messages"])
    assert formatted.prompt == expected
    assert formatted.stop == ["<eos>"]


# ---------------------------------------------------------------------------- loading, threads


def test_the_model_is_loaded_once_however_many_requests() -> None:
    loader = Loader(FakeModel())
    runner = ModelRunner(local_settings(), loader=loader)
    for n in range(3):
        runner.generate(make_request(runner.settings, frame=replace(FRAME, lead=f"{n}")))
    assert loader.calls == 1
    assert len(loader.model.completion_calls) == 3


def test_the_backend_generates_in_a_worker_process_one_request_at_a_time() -> None:
    """Ten blocks at once reach one worker process, which answers each in turn."""
    backend = LocalBackend(local_settings(concurrency=10), "tests.modelfactories:echo")
    requests = [
        make_request(backend.settings, frame=replace(FRAME, lead=f"Lead {n}")) for n in range(10)
    ]
    texts: list[str] = []

    async def main() -> None:
        async def one(request: LLMRequest) -> None:
            texts.append((await backend.send(request)).text)

        try:
            async with anyio.create_task_group() as group:
                for request in requests:
                    group.start_soon(one, request)
        finally:
            await backend.aclose()

    anyio.run(main)
    expected = {f"Lead {n} is written by a model in a worker process." for n in range(10)}
    assert set(texts) == expected
    assert backend.worker.started == 1


def test_the_client_with_an_injected_backend_keeps_it_open() -> None:
    loader = Loader(FakeModel())
    backend = InProcess(ModelRunner(local_settings(), loader=loader))

    async def main() -> list[str]:
        async with AsyncLLMClient(backend.settings, backend=backend) as client:
            texts = [(await client.complete(client.request("p", frame=FRAME))).text]
            texts.append((await client.complete(client.request("q", frame=FRAME))).text)
        return texts

    assert anyio.run(main) == ["Mara is a painter from Oslo."] * 2
    assert loader.calls == 1
    assert not backend.closed  # the client did not make it, so it does not close it


def test_closing_stops_the_worker_and_the_next_request_starts_another() -> None:
    backend = LocalBackend(local_settings(), "tests.modelfactories:echo")

    async def main() -> None:
        await backend.send(make_request(backend.settings))
        await backend.aclose()
        await backend.send(make_request(backend.settings))
        await backend.aclose()

    anyio.run(main)
    assert backend.worker.started == 2


# ---------------------------------------------------------------------------- check_available


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """without(*names): make importlib.util.find_spec, as the local module sees it, miss."""
    real = importlib.util.find_spec

    def hide(*names: str) -> None:
        def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
            return None if name in names else real(name, *args, **kwargs)

        monkeypatch.setattr(f"{local.__name__}.importlib.util.find_spec", find_spec)

    return hide


def test_nothing_is_missing_here() -> None:
    assert missing_packages(DEFAULT_LOCAL_MODEL) == []


@pytest.mark.parametrize(
    ("hidden", "model", "expected"),
    [
        pytest.param(("llama_cpp",), DEFAULT_LOCAL_MODEL, ["llama_cpp"], id="llama"),
        pytest.param((MODEL_PACKAGE,), DEFAULT_LOCAL_MODEL, [MODEL_PACKAGE], id="model"),
        pytest.param(
            ("llama_cpp", MODEL_PACKAGE), "m.gguf", ["llama_cpp"], id="path-needs-no-package"
        ),
        pytest.param((MODEL_PACKAGE,), "m.gguf", [], id="path-without-package"),
    ],
)
def test_missing_packages(without: Any, hidden: tuple[str, ...], model: str, expected: Any) -> None:
    without(*hidden)
    assert missing_packages(model) == expected


@pytest.mark.parametrize("hidden", ["llama_cpp", MODEL_PACKAGE])
def test_a_missing_extra_says_how_to_install_it(without: Any, hidden: str) -> None:
    without(hidden)
    with pytest.raises(MissingDependencyError) as caught:
        check_available(local_settings(), SETTINGS_PATH)
    error = caught.value
    assert error.exit_code == 2
    assert (error.path, error.key) == (SETTINGS_PATH, "llm.provider")
    assert INSTALL_COMMAND == 'pip install "trinity[local]"'
    assert 'pip install "trinity[local]"' in str(error)
    assert hidden in str(error)
    assert str(error).startswith(f"{SETTINGS_PATH}: llm.provider: ")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("missing.gguf", id="missing"),
        pytest.param("model.bin", id="not-gguf"),
        pytest.param("folder.gguf", id="folder"),
        pytest.param("gemma3", id="unknown-name"),
    ],
)
def test_a_model_that_is_not_a_gguf_file_is_a_config_error(tmp_path: Path, name: str) -> None:
    write_gguf(tmp_path / "model.bin")  # a GGUF, but not named as one
    (tmp_path / "folder.gguf").mkdir()
    model = str(tmp_path / name)
    with pytest.raises(ConfigError) as caught:
        check_available(local_settings(model=model), SETTINGS_PATH)
    error = caught.value
    assert (error.path, error.key, error.exit_code) == (SETTINGS_PATH, "llm.model", 2)
    assert f"got '{model}'" in str(error)
    assert f"'{DEFAULT_LOCAL_MODEL}'" in str(error)


@pytest.mark.parametrize("metadata", [BASE_METADATA, CHAT_METADATA], ids=["base", "chat"])
def test_an_existing_gguf_file_is_accepted(tmp_path: Path, metadata: Metadata) -> None:
    path = write_gguf(tmp_path / "tiny.gguf", metadata)
    check_available(local_settings(model=str(path)), SETTINGS_PATH)
    check_available(local_settings(model="tiny.gguf"), SETTINGS_PATH)  # tmp_path is the cwd


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"not a model, just text\n", "is not a GGUF file", id="text"),
        pytest.param(b"", "truncated GGUF metadata", id="empty"),
        pytest.param(gguf_bytes(CHAT_METADATA)[:40], "truncated GGUF metadata", id="truncated"),
        pytest.param(
            gguf_bytes([("general.name", ARRAY, (STRING, ["m"]))]).replace(
                struct.pack("<I", STRING), struct.pack("<I", 99)
            ),
            "unknown GGUF value type 99",
            id="unknown-type",
        ),
    ],
)
def test_an_unreadable_gguf_file_is_a_config_error(
    tmp_path: Path, data: bytes, reason: str
) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        check_available(local_settings(model=str(path)), SETTINGS_PATH)
    error = caught.value
    assert (error.path, error.key, error.exit_code) == (SETTINGS_PATH, "llm.model", 2)
    assert str(error).startswith(f"{SETTINGS_PATH}: llm.model: cannot read the model file: ")
    assert reason in str(error)
    assert error.__cause__ is None


@pytest.mark.parametrize("style", ["chat", "completion"])
def test_with_an_explicit_style_the_gguf_file_is_not_read(tmp_path: Path, style: str) -> None:
    path = tmp_path / "opaque.gguf"
    path.write_bytes(b"not a model, just text\n")
    check_available(local_settings(model=str(path), style=style), SETTINGS_PATH)


def test_prepare_reports_an_unreadable_gguf_file(project: ProjectFactory) -> None:
    write_project(project, "{provider: local, model: models/broken.gguf}")
    (project.root / "models").mkdir()
    (project.root / "models" / "broken.gguf").write_bytes(b"not a model")
    with pytest.raises(ConfigError) as caught:
        prepare(project.root, environ={})
    assert (caught.value.path, caught.value.key) == (SETTINGS_PATH, "llm.model")
    assert "cannot read the model file" in str(caught.value)


class CorruptPackage:
    """The model package when its assembled file fails its sha256 check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[bool] = []

    def assemble(self, overwrite: bool = False) -> Path:
        self.calls.append(overwrite)
        if not overwrite:
            raise FileExistsError(f"{self.path} already exists with an unexpected sha256")
        return self.path


def test_a_corrupt_assembled_model_is_assembled_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = CorruptPackage(tmp_path / "model.gguf")
    monkeypatch.setattr(local.importlib, "import_module", lambda name: package)
    assert model_path(local_settings()) == package.path
    assert package.calls == [False, True]


def test_model_path_is_relative_to_base_dir_and_leaves_absolute_paths(tmp_path: Path) -> None:
    project = tmp_path / "site"
    relative = local_settings(model="models/tiny.gguf", base_dir=project)
    assert model_path(relative) == project / "models" / "tiny.gguf"
    absolute = tmp_path / "elsewhere" / "m.gguf"
    assert model_path(local_settings(model=str(absolute), base_dir=project)) == absolute


@pytest.fixture
def project_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectFactory:
    """A project in tmp_path/site, with the working folder tmp_path/elsewhere."""
    project = ProjectFactory(tmp_path / "site")
    write_project(project, "{provider: local, model: models/tiny.gguf}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return project


def test_a_relative_model_path_is_found_in_the_project_from_another_folder(
    project_elsewhere: ProjectFactory,
) -> None:
    model = project_elsewhere.root / "models" / "tiny.gguf"
    write_gguf(model)
    prepared = prepare(project_elsewhere.root, environ={})
    assert model_path(prepared.settings.llm) == model.resolve()
    check_available(prepared.settings.llm, SETTINGS_PATH)


def test_a_relative_model_path_is_not_looked_up_in_the_working_folder(
    project_elsewhere: ProjectFactory,
) -> None:
    in_cwd = Path("models") / "tiny.gguf"
    write_gguf(in_cwd)
    with pytest.raises(ConfigError) as caught:
        prepare(project_elsewhere.root, environ={})
    assert caught.value.key == "llm.model"
    assert "got 'models/tiny.gguf'" in str(caught.value)


def test_load_llama_opens_the_file_in_the_project(
    project_elsewhere: ProjectFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[dict[str, Any]] = []

    class FakeLlama:
        def __init__(self, **kwargs: Any) -> None:
            opened.append(kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    settings = replace(project_elsewhere.load().llm, threads=2)
    assert isinstance(load_llama(settings), FakeLlama)
    (kwargs,) = opened
    expected = project_elsewhere.root.resolve() / "models" / "tiny.gguf"
    assert kwargs["model_path"] == str(expected)
    assert (kwargs["n_ctx"], kwargs["n_threads"]) == (2048, 2)


def test_the_missing_extra_is_reported_before_the_model_path(without: Any) -> None:
    without("llama_cpp")
    with pytest.raises(MissingDependencyError):
        check_available(local_settings(model="nowhere.gguf"), SETTINGS_PATH)


def write_project(project: ProjectFactory, llm: str) -> None:
    project.settings_file(f"site: {{title: T}}\nllm: {llm}\n")
    project.pages([{"slug": "index", "title": "H", "blocks": {"intro": "Write."}}])


def test_prepare_checks_the_local_provider(project: ProjectFactory, without: Any) -> None:
    write_project(project, "{provider: local}")
    without("llama_cpp")
    with pytest.raises(MissingDependencyError) as caught:
        prepare(project.root, environ={})
    assert (caught.value.path, caught.value.key) == (SETTINGS_PATH, "llm.provider")


def test_prepare_checks_the_local_model_path(project: ProjectFactory) -> None:
    write_project(project, "{provider: local, model: nowhere.gguf}")
    with pytest.raises(ConfigError) as caught:
        prepare(project.root, environ={})
    assert (caught.value.path, caught.value.key) == (SETTINGS_PATH, "llm.model")


def test_prepare_does_not_check_other_providers(project: ProjectFactory, without: Any) -> None:
    write_project(project, "{provider: ollama}")
    without("llama_cpp", MODEL_PACKAGE)
    assert prepare(project.root, environ={}).settings.llm.provider == "ollama"


# ---------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("schema", [SCHEMA, None])
def test_json_grammar(schema: dict[str, Any] | None) -> None:
    request = make_request(response_format="json", json_schema=schema)
    grammar = _json_grammar(request)
    assert isinstance(grammar, LlamaGrammar)
    text = grammar._grammar
    assert re.search(r"^root\s+::=", text, re.MULTILINE)
    if schema is not None:
        assert "highlights" in text


def test_the_schemaless_json_grammar_admits_any_value() -> None:
    """Without a schema, a list (or any JSON value) is allowed, not only an object."""
    grammar = LlamaGrammar.from_string(local._JSON_GBNF, verbose=False)
    assert isinstance(grammar, LlamaGrammar)
    assert grammar._grammar == local._JSON_GBNF
    rules = dict(
        (name.strip(), body.strip())
        for name, body in (line.split("::=", 1) for line in local._JSON_GBNF.strip().splitlines())
    )
    assert rules["root"] == "value"
    assert "array" in rules["value"].split()
    assert rules["array"].startswith('"["')
    used = _json_grammar(make_request(response_format="json"))
    assert re.search(r"^root\s+::=\s+value\s*$", used._grammar, re.MULTILINE)


# ---------------------------------------------------------------------------- completion_frame


def frame_for(
    *,
    site_description: str = "",
    page_description: str = "",
    **block: Any,
) -> CompletionFrame:
    site = SiteSettings(title="Mara", description=site_description)
    page = Page(
        slug="about", title="About", template="page.html", blocks=(), description=page_description
    )
    return completion_frame(
        site, page, Block(name="bio", prompt="p", **{"heading": "Bio", **block})
    )


def test_frame_with_every_part() -> None:
    frame = frame_for(
        site_description="A painter's site", page_description="Who I am", lead="Mara is"
    )
    assert frame.document == "Mara: A painter's site\n\n# About\n\nWho I am\n\n## Bio\n\nMara is"
    assert frame.lead == "Mara is"


def test_frame_without_descriptions_or_lead() -> None:
    frame = frame_for()
    assert frame.document == "Mara\n\n# About\n\n## Bio\n\n"
    assert frame.lead == ""


def test_frame_with_only_a_page_description() -> None:
    assert frame_for(page_description="Who").document == "Mara\n\n# About\n\nWho\n\n## Bio\n\n"


@pytest.mark.parametrize("block_format", ["markdown", "text", "json"])
def test_frame_stops_default_by_format(block_format: str) -> None:
    assert frame_for(format=block_format).stop == DEFAULT_STOPS[block_format]


def test_default_stops() -> None:
    assert set(DEFAULT_STOPS) == {"markdown", "text", "json"}
    assert "\n\n" in DEFAULT_STOPS["text"]
    assert "\n#" in DEFAULT_STOPS["markdown"]
    assert "\n\n" not in DEFAULT_STOPS["markdown"]  # markdown may have paragraphs
    assert DEFAULT_STOPS["json"] == ()


@pytest.mark.parametrize("stop", [("END",), ()])
def test_a_blocks_stop_replaces_the_defaults(stop: tuple[str, ...]) -> None:
    assert frame_for(format="text", stop=stop).stop == stop


def test_plan_jobs_frames_blocks_for_the_local_provider(project: ProjectFactory) -> None:
    project.settings_file("site: {title: T, description: D}\nllm: {provider: ollama}\n")
    project.pages(
        [
            {
                "slug": "index",
                "title": "Home",
                "blocks": {"key_facts": {"prompt": "Facts.", "lead": "In short,"}},
            }
        ]
    )
    prepared = prepare(project.root, environ={})
    page = prepared.site.pages[0]
    chat_client = AsyncLLMClient(prepared.settings.llm)
    local_client = AsyncLLMClient(
        replace(prepared.settings.llm, provider="local", api_url="", model=DEFAULT_LOCAL_MODEL)
    )

    (chat_job,) = plan_jobs(prepared, chat_client)
    (local_job,) = plan_jobs(prepared, local_client)
    assert chat_job.request.document is None
    expected = completion_frame(prepared.settings.site, page, page.blocks[0])
    assert expected.document == "T: D\n\n# Home\n\n## Key facts\n\nIn short,"
    assert local_job.request.document == expected.document
    assert (local_job.request.lead, local_job.request.stop) == ("In short,", expected.stop)
    assert local_job.key == local_client.key(local_job.request)


# ---------------------------------------------------------------------------- client.request


def test_the_frame_is_dropped_for_http_providers() -> None:
    client = AsyncLLMClient(LLMSettings(provider="ollama"))
    framed = client.request("p", frame=FRAME)
    assert (framed.document, framed.lead, framed.stop) == (None, "", ())
    assert framed == client.request("p")
    keys = {
        client.key(client.request("p", frame=frame_for(heading=heading, lead=lead)))
        for heading in ("Bio", "About me")
        for lead in ("", "Mara is")
    }
    assert keys == {client.key(client.request("p"))}


def test_the_frame_is_kept_for_the_local_provider() -> None:
    request = AsyncLLMClient(local_settings()).request("p", frame=FRAME)
    assert (request.document, request.lead, request.stop) == (DOCUMENT, "Mara is", ("\n\n", "<"))
    assert request.messages == ()  # a base model sees only the document


def test_the_frame_is_dropped_for_the_local_provider_in_chat_style() -> None:
    client = AsyncLLMClient(local_settings(style="chat"))
    framed = client.request("p", system="Be kind.", frame=FRAME)
    assert (framed.document, framed.lead, framed.stop) == (None, "", ())
    assert framed == client.request("p", system="Be kind.")
    assert [m.role for m in framed.messages] == ["system", "user"]


def test_a_completion_style_request_without_a_frame_keeps_its_messages() -> None:
    """It has no document to continue, so it goes as chat: its messages are what is sent."""
    request = AsyncLLMClient(local_settings()).request("p", system="Be kind.")
    assert request.document is None
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be kind."),
        ("user", "p"),
    ]


SYSTEM_PROMPTS = (None, "Be kind.", "Write like a pirate.")


def test_the_system_prompt_does_not_split_a_base_models_cache() -> None:
    """A base model never sees the system prompt (nor the theme's voice within it)."""
    client = AsyncLLMClient(local_settings())
    assert client.style == "completion"
    requests = [client.request("p", system=system, frame=FRAME) for system in SYSTEM_PROMPTS]
    assert len({client.key(request) for request in requests}) == 1
    assert requests[0] == requests[1] == requests[2]


def test_without_a_frame_the_system_prompt_splits_a_base_models_cache() -> None:
    client = AsyncLLMClient(local_settings())
    keys = {client.key(client.request("p", system=system)) for system in SYSTEM_PROMPTS}
    assert len(keys) == len(SYSTEM_PROMPTS)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(LLMSettings(provider="ollama"), id="ollama"),
        pytest.param(LLMSettings(provider="openai", model="gpt-4o-mini"), id="openai"),
        pytest.param(local_settings(style="chat"), id="local-chat"),
    ],
)
def test_the_system_prompt_splits_a_chat_models_cache(settings: LLMSettings) -> None:
    client = AsyncLLMClient(settings)
    assert client.style == "chat"
    keys = {
        client.key(client.request("p", system=system, frame=FRAME)) for system in SYSTEM_PROMPTS
    }
    assert len(keys) == len(SYSTEM_PROMPTS)


def test_a_chat_gguf_on_auto_is_keyed_by_its_system_prompt(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "chat.gguf", CHAT_METADATA)
    client = AsyncLLMClient(local_settings(model=str(path)))
    assert client.style == "chat"
    keys = {
        client.key(client.request("p", system=system, frame=FRAME)) for system in SYSTEM_PROMPTS
    }
    assert len(keys) == len(SYSTEM_PROMPTS)


def test_the_theme_voice_does_not_split_the_local_cache(project: ProjectFactory) -> None:
    """Through plan_jobs: the site's system prompt changes chat keys, not base-model keys."""
    project.pages([{"slug": "index", "title": "Home", "blocks": {"intro": "Write."}}])
    keys: dict[str, set[str]] = {"local": set(), "ollama": set()}
    for system in ("", "system: Be terse."):
        for provider in keys:
            project.settings_file(f"site: {{title: T}}\nllm: {{provider: {provider}, {system}}}\n")
            prepared = prepare(project.root, environ={})
            (job,) = plan_jobs(prepared, AsyncLLMClient(prepared.settings.llm))
            keys[provider].add(job.key)
    assert len(keys["local"]) == 1
    assert len(keys["ollama"]) == 2


def test_local_options_include_the_defaults_and_settings_override_them() -> None:
    assert dict(AsyncLLMClient(local_settings()).request("p").options) == DEFAULT_OPTIONS
    client = AsyncLLMClient(local_settings(options={"seed": 5, "top_k": 40}))
    assert dict(client.request("p").options) == {
        **DEFAULT_OPTIONS,
        "seed": 5,
        "top_k": 40,
    }
    assert dict(AsyncLLMClient(LLMSettings(provider="ollama")).request("p").options) == {}


@pytest.mark.parametrize(
    "change", [{"heading": "About me"}, {"lead": "Mara is"}, {"stop": ("END",)}]
)
def test_the_local_key_changes_with_the_frame(change: dict[str, Any]) -> None:
    client = AsyncLLMClient(local_settings())
    before = client.key(client.request("p", frame=frame_for()))
    after = client.key(client.request("p", frame=frame_for(**change)))
    assert before != after
