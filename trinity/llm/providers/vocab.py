"""The embedded model's tokenizer, for counting tokens before a build (`--dry-run`).

llama.cpp can load a model's vocabulary alone (`vocab_only=True`: no weights, no context,
well under a second). It still runs native code, which stays out of the build's process
(worker.py says why): a short-lived child loads the vocabulary, counts the tokens of the
texts it is given, and exits. Whatever goes wrong there (no llama-cpp-python, no model
file, a crash, a timeout, an answer that is not what was asked) is None: the estimate
then counts characters instead, and says so.

    parent -> child stdin:   {"model": ..., "base_dir": ..., "texts": [...]}
    child  -> parent stdout: {"counts": [n, ...]}
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trinity.llm.settings import LLMSettings, Target
from trinity.logs import get_logger

log = get_logger(__name__)

# Loading the vocabulary takes under a second; counting is fast. A child still running
# after this is stuck, and the estimate does without it.
TIMEOUT_SECONDS = 60.0


def count_tokens(settings: LLMSettings, target: Target, texts: Sequence[str]) -> list[int] | None:
    """The tokens of each of `texts` by the embedded model's tokenizer; None for another
    provider, or when it cannot be loaded."""
    if target.provider != "local" or not texts:
        return None
    request = {"model": target.model, "base_dir": str(settings.base_dir), "texts": list(texts)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("cannot count tokens with the model's tokenizer: %s", exc)
        return None
    counts = _counts(done.stdout, len(texts))
    if counts is None:
        log.info(
            "cannot count tokens with the model's tokenizer (exit %s): %s",
            done.returncode,
            done.stderr.strip()[-500:],
        )
    return counts


def _counts(output: str, expected: int) -> list[int] | None:
    """The child's counts, if they are `expected` non-negative integers."""
    try:
        data = json.loads(output)
    except ValueError:
        return None
    counts = data.get("counts") if isinstance(data, dict) else None
    if not isinstance(counts, list) or len(counts) != expected:
        return None
    if not all(type(n) is int and n >= 0 for n in counts):
        return None
    return counts


def _count_in_child(request: dict[str, Any]) -> list[int]:
    from llama_cpp import Llama

    from trinity.llm.providers.local import model_path

    settings = LLMSettings(
        provider="local", model=str(request["model"]), base_dir=Path(request["base_dir"])
    )
    vocab = Llama(model_path=str(model_path(settings)), vocab_only=True, verbose=False)
    return [
        len(vocab.tokenize(str(text).encode("utf-8"), add_bos=True, special=False))
        for text in request["texts"]
    ]


def main() -> None:
    counts = _count_in_child(json.load(sys.stdin))
    json.dump({"counts": counts}, sys.stdout)


if __name__ == "__main__":
    main()


__all__ = ["count_tokens"]
