"""What a build did: each block's result, the build report and its file, and the observer
that hears a build's progress.

The report is written into the site (`output/.trinity/report.json`) and, when asked for,
to another path, also when the build fails; the CLI's summary is drawn from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from trinity.logs import current_correlation_id, get_logger
from trinity.messages import shown_path
from trinity.oserrors import resource_error
from trinity.staging import MARKER_DIR
from trinity.version import GENERATOR

if TYPE_CHECKING:
    from trinity.cache.manager import CacheManager
    from trinity.config import Settings

log = get_logger(__name__)

REPORT_FILE = f"{MARKER_DIR}/report.json"

Source = Literal["llm", "cache", "stale", "failed", "cached", "pending"]


@dataclass
class BlockResult:
    page: str
    block: str
    source: Source
    cache_tier: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    # Of the input tokens, those the provider read from its prompt cache and wrote there,
    # and what that cache saved (USD, at the model's cached-input rate).
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    prompt_cache_saved: float = 0.0
    latency: float = 0.0
    attempts: int = 0
    cost: float = 0.0
    saved: float = 0.0
    error: str | None = None
    # What the block's checks did (trinity.review): the checks run, those its published
    # answer still failed (as "words: 212 words; at most 120"), the repairs applied, the
    # answers asked for again, the cascade's models escalated to, and the judge's score
    # (None when not judged). The numbers above add up every call the block made.
    checks: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    reasks: int = 0
    escalations: list[str] = field(default_factory=list)
    judge_score: float | None = None
    # A semantic cache hit (cache_tier "semantic"): how similar the prompt it matched was,
    # and that prompt, shortened (trinity.llm.semantic.MATCHED_PROMPT_CHARS).
    similarity: float | None = None
    matched_prompt: str | None = None
    # Its answer came through a provider's batch API (`--batch`), at the batch price.
    batch: bool = False

    @property
    def first_answer_failed(self) -> bool:
        """Whether the block's first answer failed a check: then something was done
        about it (a repair, a re-ask, an escalation), or the block failed its checks."""
        return bool(self.repairs or self.reasks or self.escalations or self.failed_checks)


@dataclass
class BuildReport:
    """What a build (or a dry run) did; the CLI's summary is drawn from it."""

    project_dir: str
    output_dir: str
    theme: str
    provider: str
    model: str
    pages: int
    dry_run: bool = False
    # "running" while it is filled in; then "built", "failed", "interrupted", for a
    # dry run "planned", for `--generate-only` "generated": what a script reads first.
    status: str = "running"
    # Pages whose inputs had not changed, taken from the previous output unrendered.
    pages_reused: int = 0
    correlation_id: str | None = None
    settings_digest: str = ""
    generator: str = GENERATOR
    planned_blocks: int = 0
    blocks: list[BlockResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The cache's own counts: lookups, and hits per tier in lookup order.
    cache: dict[str, Any] = field(default_factory=dict)
    # What the layout guardian found and healed (`--guard`; trinity.guardian.GuardOutcome).
    guard: dict[str, Any] | None = None
    # The share of the blocks this build generated (`--shard K/N`), None for all of them.
    shard: str | None = None
    # What the semantic cache's embeddings took and cost (provider, model, requests,
    # input_tokens, cost_usd); None when nothing was embedded. Not in any block's cost.
    embeddings: dict[str, Any] | None = None
    # A dry run's estimate of what the blocks to generate would cost (trinity.estimate).
    estimate: dict[str, Any] | None = None
    # What `--batch` did (trinity.batchrun.BatchSummary.as_json); None without it.
    batch: dict[str, Any] | None = None

    @classmethod
    def started(cls, settings: Settings, theme: str, pages: int, **fields: Any) -> BuildReport:
        """The report of a build of `settings` starting now (in the current correlation),
        logged as started: `build_started` is the first record of every build."""
        report = cls(
            project_dir=str(settings.project_dir),
            output_dir=str(settings.build.output_dir),
            theme=theme,
            provider=settings.llm.provider,
            model=settings.llm.model,
            pages=pages,
            correlation_id=current_correlation_id(),
            settings_digest=settings.digest(),
            **fields,
        )
        log.info(
            "build of %d pages with theme %s started",
            report.pages,
            report.theme,
            extra={"event": "build_started", "settings_digest": report.settings_digest},
        )
        return report

    def count(self, source: Source) -> int:
        return sum(1 for b in self.blocks if b.source == source)

    @property
    def llm_calls(self) -> int:
        return self.count("llm")

    @property
    def cache_hits(self) -> int:
        return self.count("cache")

    @property
    def hits_by_tier(self) -> dict[str, int]:
        """Blocks answered from the cache, by the tier that had them (or in-flight)."""
        counts: dict[str, int] = {}
        for b in self.blocks:
            if b.source == "cache" and b.cache_tier is not None:
                counts[b.cache_tier] = counts.get(b.cache_tier, 0) + 1
        return counts

    @property
    def failures(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.source == "failed"]

    @property
    def input_tokens(self) -> int:
        return sum(b.input_tokens for b in self.blocks if b.source == "llm")

    @property
    def output_tokens(self) -> int:
        return sum(b.output_tokens for b in self.blocks if b.source == "llm")

    @property
    def cached_input_tokens(self) -> int:
        return sum(b.cached_input_tokens for b in self.blocks if b.source == "llm")

    @property
    def cache_write_tokens(self) -> int:
        return sum(b.cache_write_tokens for b in self.blocks if b.source == "llm")

    @property
    def prompt_cache_saved(self) -> float:
        return sum(b.prompt_cache_saved for b in self.blocks)

    @property
    def cost(self) -> float:
        return sum(b.cost for b in self.blocks)

    @property
    def saved(self) -> float:
        return sum(b.saved for b in self.blocks)

    @property
    def embedding_cost(self) -> float:
        return float(self.embeddings["cost_usd"]) if self.embeddings else 0.0

    @property
    def attempts(self) -> int:
        return sum(b.attempts for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data. It shares the report's values rather than copying
        them (`dataclasses.asdict` deep-copied every block, a cost paid on each one)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["blocks"] = [vars(block) for block in self.blocks]
        data["totals"] = self.totals()
        return data

    def write_json(self, stream: IO[str]) -> None:
        """The report as JSON into `stream`: a field, or a block, to a line.

        Written a piece at a time, so a report of 100,000 blocks is never all in memory as
        text (as it is with `json.dumps(..., indent=2)`), and each piece by the C encoder
        (the indenting encoder is pure Python, and slow on every block). One block to a line
        also suits grep and jq.
        """
        data = self.to_dict()
        blocks = data.pop("blocks")
        stream.write("{\n")
        for name, value in data.items():
            stream.write(f"  {json.dumps(name)}: {json.dumps(value)},\n")
        stream.write('  "blocks": [')
        for number, block in enumerate(blocks):
            stream.write(("\n    " if number == 0 else ",\n    ") + json.dumps(block))
        stream.write("\n  ]\n}\n" if blocks else "]\n}\n")

    def totals(self) -> dict[str, Any]:
        return {
            "blocks": len(self.blocks),
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "cache_hits_by_tier": self.hits_by_tier,
            "semantic_hits": sum(1 for b in self.blocks if b.similarity is not None),
            "failed": len(self.failures),
            "stale": self.count("stale"),
            "batched": sum(1 for b in self.blocks if b.batch),
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": round(self.cost, 6),
            "saved_usd": round(self.saved, 6),
            "prompt_cache_saved_usd": round(self.prompt_cache_saved, 6),
            "embedding_cost_usd": round(self.embedding_cost, 8),
            **self.check_totals(),
        }

    def check_totals(self) -> dict[str, int]:
        """Blocks whose first answer failed a check, and those repaired, asked again,
        escalated along the cascade, and scored by the judge."""
        return {
            "checks_failed": sum(1 for b in self.blocks if b.first_answer_failed),
            "repaired": sum(1 for b in self.blocks if b.repairs),
            "reasked": sum(1 for b in self.blocks if b.reasks),
            "escalated": sum(1 for b in self.blocks if b.escalations),
            "judged": sum(1 for b in self.blocks if b.judge_score is not None),
        }


class BuildObserver(Protocol):
    """Hears about a build's progress; the CLI draws it, tests may record it."""

    def planned(self, report: BuildReport) -> None: ...
    def block_done(self, result: BlockResult) -> None: ...
    def layout_checked(self, done: int, total: int) -> None:
        """`done` of the `total` pages of a layout guardian's check are checked."""

    def batch_progress(self, done: int, failed: int, total: int) -> None:
        """`--batch`: of the `total` requests of the batches in flight, `done` are answered
        and `failed` failed (asked again), as the provider last counted them."""


class NullObserver:
    def planned(self, report: BuildReport) -> None:
        pass

    def block_done(self, result: BlockResult) -> None:
        pass

    def layout_checked(self, done: int, total: int) -> None:
        pass

    def batch_progress(self, done: int, failed: int, total: int) -> None:
        pass


def write_report(report: BuildReport, path: Path) -> None:
    """The report as JSON at `path`, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as stream:
            report.write_json(stream)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk must not keep half a report
        raise


def write_report_or_say(report: BuildReport, path: Path, *, after: str) -> None:
    """`write_report`, a refusal of the file system raised as a ResourceError: one line
    naming the file, what was being done, and `after`, what became of the site."""
    try:
        write_report(report, path)
    except OSError as exc:
        raise resource_error(
            exc, shown_path(path), "writing the build report", after=after
        ) from exc


def cache_counts(
    cache: CacheManager | None, since: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What the cache has seen: lookups, misses and hits per tier, less the counts `since`
    (taken when a build began, so a cache shared by several builds reports each its own)."""
    if cache is None:
        return {}
    before = since or {}
    hits_before = before.get("hits", {})
    return {
        "lookups": cache.lookups - before.get("lookups", 0),
        "misses": cache.misses - before.get("misses", 0),
        "hits": {name: n - hits_before.get(name, 0) for name, n in cache.hits.items()},
    }
