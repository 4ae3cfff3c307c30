"""Model factories for the embedded model's worker process ("tests.modelfactories:NAME").

The worker imports a factory by name in a child process, so these live in a module of
their own. Some crash for real: `ctypes.string_at(0)` reads address 0 from native code,
and the kernel kills the process with SIGSEGV, as a llama.cpp built for another CPU is.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from trinity.llm.settings import LLMSettings

# Written into the project folder (the settings' base_dir) by `crashes_once`.
CRASHED_MARKER = "crashed-once"


def segfault() -> None:
    ctypes.string_at(0)


class EchoModel:
    """Answers every document with a fixed sentence, as llama_cpp.Llama would shape it."""

    def __init__(self, on_generate: Any = None) -> None:
        self.metadata: dict[str, str] = {}
        self.on_generate = on_generate

    def create_completion(self, prompt: str, **kwargs: Any) -> dict[str, Any]:
        if self.on_generate is not None:
            self.on_generate()
        text = " is written by a model in a worker process."
        return {
            "model": "echo",
            "choices": [{"text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 8},
        }

    def create_chat_completion(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        return {
            "model": "echo",
            "choices": [{"message": {"content": "A chat answer."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3},
        }


def echo(settings: LLMSettings) -> EchoModel:
    return EchoModel()


def segfaults_when_generating(settings: LLMSettings) -> EchoModel:
    return EchoModel(on_generate=segfault)


def segfaults_when_loading(settings: LLMSettings) -> EchoModel:
    segfault()
    raise AssertionError("unreachable: the process is dead")


def cannot_load(settings: LLMSettings) -> EchoModel:
    raise ValueError("not a GGUF file")


def crashes_once(settings: LLMSettings) -> EchoModel:
    """The first process to generate dies; the next one (a restart) answers."""
    marker = Path(settings.base_dir) / CRASHED_MARKER

    def first_time_only() -> None:
        if not marker.exists():
            marker.write_text("crashed", encoding="utf-8")
            segfault()

    return EchoModel(on_generate=first_time_only)


_answered = 0


def crashes_after_two(settings: LLMSettings) -> EchoModel:
    """Each process answers two requests, then dies on the third."""

    def two_then_crash() -> None:
        global _answered
        _answered += 1
        if _answered > 2:
            segfault()

    return EchoModel(on_generate=two_then_crash)


def slow(settings: LLMSettings) -> EchoModel:
    """Takes longer to answer the document led by "First" than a test waits for it."""
    import time

    model = EchoModel()
    answer = model.create_completion

    def create_completion(prompt: str, **kwargs: Any) -> dict[str, Any]:
        if prompt.endswith("First"):
            time.sleep(2)
        return answer(prompt, **kwargs)

    model.create_completion = create_completion  # type: ignore[method-assign]
    return model
