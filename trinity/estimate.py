"""What a build would cost, estimated before spending (`trinity build --dry-run`).

For every block the cache does not hold, the estimate says which model it goes to, its
input tokens, its output tokens and their cost at that model's price (trinity.llm.pricing,
`llm.prices`); then the cost per model and in total, and whether `--max-cost` would stop
the build, and after about how many blocks.

Input tokens are counted with the model's own tokenizer where one is at hand offline (the
embedded model: its vocabulary, loaded alone in a child process, trinity.llm.providers.
vocab); otherwise they are the prompt's characters over a characters-per-token ratio
learned from the usage history (what the provider reported for prompts of known length,
trinity.usagehistory) or, with no history for the model, DEFAULT_CHARS_PER_TOKEN.

The provider's prompt cache (trinity.llm.pricing) is expected to serve the same share of a
model's input as it did in the history, at its own rates.

Output tokens come from the history of blocks alike: the same block name and model, else
the same format and model (the mean output of such blocks, never above the block's
max_tokens); with no history, max_tokens itself, a ceiling. Every figure says which of
these it came from.

The verdict on `--max-cost` replays the client's own check (trinity.llm.client): before
each call its cost at the ceiling (its prompt at four characters a token, and all of
max_tokens) is held against what is left, and the call is refused if it does not fit (the
block fails; the build goes on with the others). Blocks are taken in plan order, one at a
time: with calls in flight together more is held at once, so a real build may refuse
a few blocks sooner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from trinity.llm.batches.api import BATCH_PROVIDERS
from trinity.llm.pricing import price_for, usage_cost
from trinity.llm.ratelimit import reserved_cost
from trinity.llm.routing import Router
from trinity.llm.settings import LLMSettings, Target
from trinity.llm.types import LLMRequest, Usage
from trinity.plan import Job
from trinity.usagehistory import UsageEntry, UsageHistory, prompt_chars

# Characters a token with no history and no tokenizer: the rule of thumb for English
# with OpenAI's and Anthropic's tokenizers, and what the rate limiter reserves with.
DEFAULT_CHARS_PER_TOKEN = 4.0
# Tokens a chat message costs beyond its text (its role and delimiters), by that rule.
MESSAGE_OVERHEAD = 4
# A learned ratio outside these bounds is not a real tokenizer's: the history lies.
_RATIO_BOUNDS = (1.0, 16.0)

InputBasis = Literal["tokenizer", "history", "default"]
OutputBasis = Literal["history: block", "history: format", "max_tokens"]

# Counts the tokens of texts with a model's tokenizer; None when none can be loaded.
TokenCounter = Callable[[Target, Sequence[str]], list[int] | None]


@dataclass(frozen=True)
class BlockEstimate:
    page: str
    block: str
    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost: float
    input_basis: InputBasis
    output_basis: OutputBasis
    priced: bool
    # What the client holds against --max-cost before the call: its cost at the ceiling.
    ceiling: float
    # Asked through its provider's batch API (`--batch`), at the batch price.
    batched: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "block": self.block,
            "model": self.model,
            "provider": self.provider,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost, 6),
            "input_basis": self.input_basis,
            "output_basis": self.output_basis,
            "priced": self.priced,
            "batch": self.batched,
        }


@dataclass
class ModelTotal:
    provider: str
    model: str
    blocks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    priced: bool = True

    def add(self, block: BlockEstimate) -> None:
        self.blocks += 1
        self.input_tokens += block.input_tokens
        self.output_tokens += block.output_tokens
        self.cost += block.cost
        self.priced = self.priced and block.priced

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "blocks": self.blocks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost, 6),
            "priced": self.priced,
        }


@dataclass(frozen=True)
class BudgetVerdict:
    """What `--max-cost` would do: refuse `refused` of the `pending` blocks, the first
    after `completed` were generated (a refused block fails; the others go on)."""

    max_cost: float | None
    completed: int
    refused: int
    pending: int

    @property
    def stops(self) -> bool:
        return self.refused > 0

    def as_json(self) -> dict[str, Any]:
        return {
            "max_cost_usd": self.max_cost,
            "stops": self.stops,
            "blocks_before_stop": self.completed if self.stops else None,
            "blocks_refused": self.refused,
        }


@dataclass
class CostEstimate:
    blocks: list[BlockEstimate] = field(default_factory=list)
    verdict: BudgetVerdict = BudgetVerdict(None, 0, 0, 0)

    @property
    def cost(self) -> float:
        return math.fsum(b.cost for b in self.blocks)

    def by_model(self) -> list[ModelTotal]:
        totals: dict[tuple[str, str], ModelTotal] = {}
        for block in self.blocks:
            key = (block.provider, block.model)
            totals.setdefault(key, ModelTotal(block.provider, block.model)).add(block)
        return list(totals.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "blocks": [block.as_json() for block in self.blocks],
            "models": [total.as_json() for total in self.by_model()],
            "input_tokens": sum(b.input_tokens for b in self.blocks),
            "output_tokens": sum(b.output_tokens for b in self.blocks),
            "cost_usd": round(self.cost, 6),
            "priced": all(b.priced for b in self.blocks),
            "max_cost": self.verdict.as_json(),
        }


@dataclass
class _Sums:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    prompt_chars: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, entry: UsageEntry) -> None:
        self.calls += entry.calls
        self.input_tokens += entry.input_tokens
        self.output_tokens += entry.output_tokens
        self.prompt_chars += entry.prompt_chars
        self.cached_input_tokens += entry.cached_input_tokens
        self.cache_write_tokens += entry.cache_write_tokens


class HistoryIndex:
    """The usage history, summed once the ways an estimate looks it up (a site of 100,000
    blocks looks it up 100,000 times)."""

    def __init__(self, history: Iterable[UsageEntry]) -> None:
        self._by_block: dict[tuple[str, str], _Sums] = {}
        self._by_format: dict[tuple[str, str], _Sums] = {}
        self._by_model: dict[str, _Sums] = {}
        for entry in history:
            self._by_block.setdefault((entry.model, entry.block), _Sums()).add(entry)
            self._by_format.setdefault((entry.model, entry.format), _Sums()).add(entry)
            self._by_model.setdefault(entry.model, _Sums()).add(entry)

    def prompt_cache_shares(self, model: str) -> tuple[float, float]:
        """The shares of `model`'s input tokens its provider's prompt cache read and wrote."""
        sums = self._by_model.get(model)
        if sums is None or sums.input_tokens <= 0:
            return 0.0, 0.0
        return (
            sums.cached_input_tokens / sums.input_tokens,
            sums.cache_write_tokens / sums.input_tokens,
        )

    def chars_per_token(self, model: str) -> float | None:
        """Prompt characters per input token the provider reported for `model`."""
        sums = self._by_model.get(model)
        if sums is None or sums.prompt_chars <= 0 or sums.input_tokens <= 0:
            return None
        ratio = sums.prompt_chars / sums.input_tokens
        low, high = _RATIO_BOUNDS
        return ratio if low <= ratio <= high else None

    def output_tokens(self, model: str, block: str, fmt: str) -> tuple[float, OutputBasis] | None:
        """The mean output of the most similar blocks, and which they were."""
        basis: OutputBasis
        if (model, block) in self._by_block:
            sums, basis = self._by_block[(model, block)], "history: block"
        elif (model, fmt) in self._by_format:
            sums, basis = self._by_format[(model, fmt)], "history: format"
        else:
            return None
        return sums.output_tokens / sums.calls, basis


@dataclass(frozen=True)
class Estimator:
    """Estimates of blocks' tokens and cost for one project's LLM settings."""

    settings: LLMSettings
    history: HistoryIndex
    count_tokens: TokenCounter | None = None
    # `--batch`: blocks whose provider has a batch API are priced at the batch rate.
    batch: bool = False

    def estimate(self, jobs: Sequence[Job]) -> CostEstimate:
        router = Router(self.settings)
        targets = [router.target(job.request.model) for job in jobs]
        inputs = self._input_tokens(jobs, targets)
        blocks = [
            self._block(job, target, *counted)
            for job, target, counted in zip(jobs, targets, inputs, strict=True)
        ]
        return CostEstimate(blocks, budget_verdict(self.settings.max_cost, blocks))

    def _block(
        self, job: Job, target: Target, input_tokens: int, input_basis: InputBasis
    ) -> BlockEstimate:
        output_tokens, output_basis = self._output_tokens(job)
        price = price_for(target.provider, target.model, self.settings.prices)
        # The provider's prompt cache serves as much of the input as it did before.
        read, written = self.history.prompt_cache_shares(job.request.model)
        usage = Usage(
            input_tokens,
            output_tokens,
            cached_input_tokens=round(input_tokens * read),
            cache_write_tokens=round(input_tokens * written),
        )
        batched = self.batch and target.provider in BATCH_PROVIDERS
        return BlockEstimate(
            page=job.page.slug,
            block=job.block.name,
            model=target.model,
            provider=target.provider,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=usage_cost(price, usage, batch=batched),
            input_basis=input_basis,
            output_basis=output_basis,
            priced=price is not None,
            ceiling=reserved_cost(price, job.request, batch=batched),
            batched=batched,
        )

    def _input_tokens(
        self, jobs: Sequence[Job], targets: Sequence[Target]
    ) -> list[tuple[int, InputBasis]]:
        """Each job's input tokens: counted by its model's tokenizer where one loads
        (once per model, for all its jobs), else from the prompt's characters."""
        counted: dict[int, int] = {}
        for target, indexes in _by_target(targets).items():
            tokens = self._counted(target, [tokenizer_text(jobs[i].request) for i in indexes])
            if tokens is not None:
                counted.update(zip(indexes, tokens, strict=True))
        return [
            (counted[i], "tokenizer") if i in counted else self._from_chars(job)
            for i, (job, target) in enumerate(zip(jobs, targets, strict=True))
        ]

    def _counted(self, target: Target, texts: list[str]) -> list[int] | None:
        if self.count_tokens is None:
            return None
        tokens = self.count_tokens(target, texts)
        return tokens if tokens is not None and len(tokens) == len(texts) else None

    def _from_chars(self, job: Job) -> tuple[int, InputBasis]:
        learned = self.history.chars_per_token(job.request.model)
        chars = prompt_chars(job.request)
        if learned is not None:
            # The ratio was learned against reported tokens, overhead and all.
            return max(1, round(chars / learned)), "history"
        overhead = MESSAGE_OVERHEAD * len(job.request.messages)
        return max(1, math.ceil(chars / DEFAULT_CHARS_PER_TOKEN) + overhead), "default"

    def _output_tokens(self, job: Job) -> tuple[int, OutputBasis]:
        ceiling = max(0, job.request.max_tokens)
        found = self.history.output_tokens(job.request.model, job.block.name, job.block.format)
        if found is None:
            return ceiling, "max_tokens"
        mean, basis = found
        return min(ceiling, round(mean)), basis


def tokenizer_text(request: LLMRequest) -> str:
    """What a model's tokenizer reads of a request: a base model's document, else the
    messages' text."""
    if request.document is not None:
        return request.document
    return "\n".join(message.content for message in request.messages)


def _batches(blocks: Sequence[BlockEstimate]) -> list[list[BlockEstimate]]:
    """The batched blocks, one batch per provider, in the order the providers come."""
    by_provider: dict[str, list[BlockEstimate]] = {}
    for block in blocks:
        if block.batched:
            by_provider.setdefault(block.provider, []).append(block)
    return list(by_provider.values())


def _by_target(targets: Sequence[Target]) -> dict[Target, list[int]]:
    grouped: dict[Target, list[int]] = {}
    for index, target in enumerate(targets):
        grouped.setdefault(target, []).append(index)
    return grouped


def budget_verdict(max_cost: float | None, blocks: Sequence[BlockEstimate]) -> BudgetVerdict:
    """Replays the client's `--max-cost` check over the blocks in plan order: each call
    must fit its ceiling in what is left, and then spends its estimate; a refused block
    spends nothing, and a cheaper one after it may still fit.

    With `--batch`, the batched blocks go first, one batch per provider, each holding all
    its blocks' ceilings at once (trinity.batchrun): a batch that does not fit fails the
    build before anything is sent, so every block is refused."""
    if max_cost is None:
        return BudgetVerdict(None, len(blocks), 0, len(blocks))
    spent = 0.0
    for batch in _batches(blocks):
        if spent + math.fsum(b.ceiling for b in batch) > max_cost + 1e-12:
            return BudgetVerdict(max_cost, 0, len(blocks), len(blocks))
        spent += math.fsum(b.cost for b in batch)
    live = [block for block in blocks if not block.batched]
    first_refused, refused = None, 0
    for index, block in enumerate(live, start=len(blocks) - len(live)):
        if spent + block.ceiling > max_cost + 1e-12:
            refused += 1
            first_refused = index if first_refused is None else first_refused
        else:
            spent += block.cost
    completed = len(blocks) if first_refused is None else first_refused
    return BudgetVerdict(max_cost, completed, refused, len(blocks))


def estimate_jobs(
    settings: LLMSettings,
    jobs: Sequence[Job],
    history: UsageHistory,
    count_tokens: TokenCounter | None = None,
    *,
    batch: bool = False,
) -> CostEstimate:
    """The estimate of `jobs` (the blocks to generate) under `settings`; with `batch`,
    as `--batch` would ask them."""
    return Estimator(settings, HistoryIndex(history), count_tokens, batch).estimate(jobs)


__all__ = [
    "DEFAULT_CHARS_PER_TOKEN",
    "BlockEstimate",
    "BudgetVerdict",
    "CostEstimate",
    "Estimator",
    "HistoryIndex",
    "ModelTotal",
    "budget_verdict",
    "estimate_jobs",
    "tokenizer_text",
]
