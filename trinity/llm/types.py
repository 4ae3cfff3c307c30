"""Plain data exchanged with language models, independent of any provider's wire format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

ResponseFormat = Literal["text", "json"]


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion request, with every parameter resolved (no 'use the default')."""

    model: str
    messages: tuple[Message, ...]
    temperature: float
    max_tokens: int
    top_p: float | None = None
    response_format: ResponseFormat = "text"
    json_schema: Mapping[str, Any] | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # For completion-style (base) models: the text to continue, which ends with `lead`, the
    # opening words of the answer; generation stops at any of `stop`. Chat models ignore them.
    document: str | None = None
    lead: str = ""
    stop: tuple[str, ...] = ()
    # How many characters at the start of the system prompt every block of a site shares
    # (the site's system prompt, the theme's voice): where a provider's prompt cache may
    # end (Anthropic's `cache_control`). Not in the cache key: it changes no answer.
    shared_prefix: int = 0
    # How many characters at the end of the prompt (the last user message) are data, not
    # instruction: the page's facts. The semantic cache embeds only the instruction, and
    # shares an answer only between prompts with the same data. Not in the cache key.
    data_chars: int = 0

    @classmethod
    def from_prompt(
        cls,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        temperature: float,
        max_tokens: int,
        top_p: float | None = None,
        response_format: ResponseFormat = "text",
        json_schema: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        frame: CompletionFrame | None = None,
        shared_prefix: int = 0,
        data_chars: int = 0,
    ) -> LLMRequest:
        messages = (Message("system", system),) if system else ()
        return cls(
            model=model,
            messages=(*messages, Message("user", prompt)),
            temperature=float(temperature),
            max_tokens=max_tokens,
            top_p=top_p,
            response_format=response_format,
            json_schema=MappingProxyType(dict(json_schema)) if json_schema is not None else None,
            options=MappingProxyType(dict(options or {})),
            document=frame.document if frame else None,
            lead=frame.lead if frame else "",
            stop=frame.stop if frame else (),
            shared_prefix=shared_prefix if system else 0,
            data_chars=min(max(0, data_chars), len(prompt)),
        )


@dataclass(frozen=True)
class CompletionFrame:
    """A block framed as a document for a base model to continue."""

    document: str
    lead: str = ""
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Usage:
    """The tokens of one call, as the provider counted them.

    `input_tokens` counts every input token, those the provider read from its prompt cache
    (`cached_input_tokens`) and those it wrote there (`cache_write_tokens`) included: the
    two are priced at their own rates (trinity.llm.pricing.usage_cost).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class LLMResponse:
    """A model's answer. `cache_tier` says where it came from when it was not generated now."""

    text: str
    model: str
    usage: Usage = Usage()
    finish_reason: str | None = None
    cache_tier: str | None = None
    latency: float = 0.0
    # Filled in by the client: requests it took, what it cost (USD), what a cache hit saved,
    # whether it is an expired answer served because the model failed, and the provider's
    # rate-limit headers (never cached).
    attempts: int = 0
    cost: float = 0.0
    saved: float = 0.0
    stale: bool = False
    # An answer that came through a provider's batch API (`--batch`), at its batch price.
    batch: bool = False
    created: float | None = None  # when a cached answer was first received (epoch seconds)
    # Seconds the backend kept the request waiting before serving it (a local model's
    # load and the requests ahead of it): logged apart from the time spent generating.
    queued: float = 0.0
    # USD the provider's prompt cache saved on this answer's input (filled in by the client).
    prompt_cache_saved: float = 0.0
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # For an answer of the semantic cache (never cached): how similar its prompt was to
    # the one asked (cosine, 0 to 1), and that prompt (shortened).
    similarity: float | None = None
    matched_prompt: str | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def response_data(response: LLMResponse) -> dict[str, Any]:
    """A response as JSON-ready data: text, model, usage and finish reason. What the cache
    stores (with `created`) and what the embedded model's worker process sends back."""
    return {
        "text": response.text,
        "model": response.model,
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "cached_input_tokens": response.usage.cached_input_tokens,
        "cache_write_tokens": response.usage.cache_write_tokens,
        "finish_reason": response.finish_reason,
    }


def response_from_data(value: Any) -> LLMResponse | None:
    """A response back from `response_data`'s shape (and `created`, when there is one);
    None for anything else: it was read from a file or another process."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    try:
        created = value.get("created")
        finish = value.get("finish_reason")
        return LLMResponse(
            text=value["text"],
            model=str(value.get("model", "")),
            usage=_usage_from_data(value),
            finish_reason=str(finish) if finish is not None else None,
            created=float(created) if created is not None else None,
        )
    except (TypeError, ValueError, OverflowError):
        return None


def _usage_from_data(value: dict[str, Any]) -> Usage:
    """The usage `response_data` wrote (entries cached before the prompt-cache counts
    have none: 0). A count that is not a whole number >= 0 raises ValueError."""
    counts = [
        int(value.get(name, 0))
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
    ]
    if min(counts) < 0:
        raise ValueError("a negative token count")
    return Usage(*counts)
