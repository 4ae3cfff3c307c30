"""The local embedding model's child process: llama.cpp with `embedding=True`, out of the
build's process (native code that dies takes only this process with it).

    python -m trinity.llm.providers.embedworker MODEL BASE_DIR THREADS

reads one JSON object a line on stdin, `{"text": "..."}`, and answers each on stdout
with `{"vector": [...]}` (mean-pooled, normalised) or `{"error": "..."}`; it ends when
stdin closes. The parent (trinity.llm.embeddings.LocalEmbedder) checks every answer.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from trinity.llm.providers.local import model_path
from trinity.llm.settings import LLMSettings

# llama.cpp's LLAMA_POOLING_TYPE_MEAN: one vector per text, not one per token.
_MEAN_POOLING = 1


def load_embedder(model: str, base_dir: str, threads: int) -> Any:
    """The model, loaded to embed (slow: once per process)."""
    from llama_cpp import Llama

    path = model_path(LLMSettings(provider="local", model=model, base_dir=Path(base_dir)))
    return Llama(
        model_path=str(path),
        embedding=True,
        pooling_type=_MEAN_POOLING,
        n_threads=threads or os.cpu_count() or 1,
        verbose=False,
    )


def serve(model: Any, requests: IO[str], replies: IO[str]) -> None:
    """Answer each request line until `requests` ends."""
    for line in requests:
        try:
            text = json.loads(line)["text"]
            reply: dict[str, Any] = {"vector": list(model.embed(str(text), normalize=True))}
        except Exception as exc:  # one bad request is that request's error, not the worker's
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: list[str]) -> int:
    model_name, base_dir, threads = argv[1], argv[2], int(argv[3])
    try:
        model = load_embedder(model_name, base_dir, threads)
    except Exception as exc:  # said on the wire: the parent turns it into its error
        for _ in sys.stdin:
            sys.stdout.write(json.dumps({"error": f"cannot load the model: {exc}"}) + "\n")
            sys.stdout.flush()
        return 1
    serve(model, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
