"""Requests as the settings shape them.

Every parameter a caller leaves out comes from `llm:`; the embedded model's sampling
defaults sit under the user's options; and for a base model (which continues a document
instead of answering chat) the request carries the document and no chat messages. What a
request is sent to decides its shape: a model of another provider (a cascade's next step,
a block's own model) is asked in chat even when the main model is a base model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypedDict, Unpack

from trinity.errors import ConfigError
from trinity.llm.routing import Router
from trinity.llm.settings import LLMSettings
from trinity.llm.types import CompletionFrame, LLMRequest, ResponseFormat


class RequestOptions(TypedDict, total=False):
    """What a caller may set on one request; the rest comes from the settings."""

    system: str | None
    # The start of `system` that every block shares (see LLMRequest.shared_prefix).
    shared_system: str | None
    # How much of the end of the prompt is data (see LLMRequest.data_chars).
    data_chars: int
    model: str | None
    temperature: float | None
    max_tokens: int | None
    top_p: float | None
    response_format: ResponseFormat
    json_schema: dict[str, Any] | None
    frame: CompletionFrame | None


class RequestMaker:
    """Makes the requests of one set of LLM settings."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.style = prompt_style(settings)
        self._router = Router(settings)
        self._options = default_options(settings)
        self._chat_options = dict(settings.options)

    @property
    def completes_documents(self) -> bool:
        """True when requests are answered by continuing a document (a base model)."""
        return self.style == "completion"

    def request(self, prompt: str, **options: Unpack[RequestOptions]) -> LLMRequest:
        """A request for `prompt`, every option not given taken from settings.

        `model` is the name asked for (an alias is kept as the alias: it is what the cache
        key holds). `frame` is kept only for base models, and then the chat messages are
        dropped: a base model sees only the document, so neither they nor the headings and
        leads a chat model never sees may split a cache entry. A model that is not the
        embedded one (`llm.cascade` may name a server's) is asked in chat, without the
        embedded model's sampling defaults.
        """
        s = self.settings
        temperature, max_tokens = options.get("temperature"), options.get("max_tokens")
        top_p, frame = options.get("top_p"), options.get("frame")
        model = options.get("model") or s.model
        embedded = self._router.target(model).provider == "local"
        documents = embedded and self.completes_documents
        request = LLMRequest.from_prompt(
            prompt,
            model=model,
            system=options.get("system"),
            temperature=s.temperature if temperature is None else temperature,
            max_tokens=s.max_tokens if max_tokens is None else max_tokens,
            top_p=s.top_p if top_p is None else top_p,
            response_format=options.get("response_format", "text"),
            json_schema=options.get("json_schema"),
            options=self._options if embedded else self._chat_options,
            frame=frame if documents else None,
            shared_prefix=self._shared_prefix(options.get("system"), options.get("shared_system")),
            data_chars=options.get("data_chars", 0),
        )
        if documents and frame is not None:
            request = replace(request, messages=())
        return request

    def _shared_prefix(self, system: str | None, shared: str | None) -> int:
        """How much of `system` is the `shared` part all blocks have: 0 when it is not,
        or when `llm.prompt_cache` is off."""
        if not self.settings.prompt_cache or not system or not shared:
            return 0
        return len(shared) if system.startswith(shared) else 0


def default_options(settings: LLMSettings) -> dict[str, Any]:
    """The provider options every request carries: the user's, over the embedded model's
    own sampling defaults when it is the provider."""
    options = dict(settings.options)
    if settings.provider != "local":
        return options
    from trinity.llm.providers.local import DEFAULT_OPTIONS

    return {**DEFAULT_OPTIONS, **options}


def prompt_style(settings: LLMSettings) -> str:
    """'chat', or 'completion' for a base model (read from the embedded model's file)."""
    if settings.provider != "local":
        return "chat"
    from trinity.llm.providers.local import resolve_style

    try:
        return resolve_style(settings)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model file: {exc}", key="llm.model") from None


__all__ = ["RequestMaker", "RequestOptions", "default_options", "prompt_style"]
