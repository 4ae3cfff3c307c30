"""The layout guardian (`trinity build --guard`): the pages a build wrote, opened in a real
headless Chromium at three widths (trinity.layout.browser); each finding tied to the block
that caused it and healed, in order of least harm:

    content   the block is asked again with a tighter budget ("at most 8 words"), through
              the re-ask path of content checks (Reviewer.rework)
    theme     the theme's healing class on the block's wrapper (`guard.heal_class`)
    guardian  the guardian's own CSS for the block, made to win over the theme's rules
    truncate  the block's text cut, with an ellipsis: the last resort

Each round renders the healed pages again and checks them again, at most MAX_ROUNDS times;
a step that does not hold gives way to the next. The staging folder is checked, so the site
is swapped in only once the guard is done.

What a page got is kept in `output/.trinity/guard.json`: each block's fixes (with a digest
of the answer they were made for) and the fingerprint of the page as last checked, with
what that check left unhealed. A rebuild replays the fixes (a re-ask is a cache hit: its
request is the same), so it writes the same page, and opens no browser for a page whose
fingerprint was checked before.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trinity.checks.spec import CheckFailure
from trinity.errors import InputError, LLMError
from trinity.layout.findings import (
    CLIPPED,
    HEADING_WRAP,
    MODES,
    OVERFLOW,
    TOO_LONG,
    Finding,
    GuardOptions,
    LayoutLimits,
)
from trinity.layout.fixes import (
    BlockLayout,
    count_words,
    shorten_long_words,
    truncate_lines,
    truncate_words,
)
from trinity.layout.gallery import GALLERY_FILE, gallery_page, screenshot_name
from trinity.llm.types import LLMRequest
from trinity.logs import get_logger
from trinity.messages import shown_path
from trinity.pages import PageWriter
from trinity.plan import Job, page_jobs
from trinity.project import Project
from trinity.report import BlockResult, BuildObserver
from trinity.review import Reviewer
from trinity.site import Page
from trinity.staging import MARKER_DIR, StagedOutput
from trinity.version import GENERATOR

if TYPE_CHECKING:
    from trinity.layout.browser import LayoutBrowser

log = get_logger(__name__)

GUARD_FILE = f"{MARKER_DIR}/guard.json"
SCREENSHOT_DIR = f"{MARKER_DIR}/guard"

CONTENT, THEME, GUARDIAN, TRUNCATE = "content", "theme", "guardian", "truncate"
STEPS = (CONTENT, THEME, GUARDIAN, TRUNCATE)
# The steps each kind of finding can be healed by, least harm first. A block too long for
# its slot is not helped by CSS: it is asked for less, then cut.
LADDERS: Mapping[str, tuple[str, ...]] = {
    OVERFLOW: STEPS,
    CLIPPED: STEPS,
    HEADING_WRAP: STEPS,
    TOO_LONG: (CONTENT, TRUNCATE),
}
# Rounds of healing after the first check; each one renders and checks the pages again.
MAX_ROUNDS = 4
# A heading is asked for at most this many words (fewer when it wrapped far past its limit).
HEADING_WORDS = 8
MIN_HEADING_WORDS = 3
# The longest word a narrow screen is sure to hold (a 390 px phone, in most type sizes).
WORD_CHARS = 20
# A block too long is asked for its share of the words that fit, less this margin.
LENGTH_MARGIN = 0.9
MIN_BLOCK_WORDS = 10

# A fix's budget read back from disk is no larger than this (words or characters).
MAX_LIMIT = 100_000


@dataclass(frozen=True)
class Fix:
    """One healing step for one kind of finding in one block; `limit` is the budget it
    sets: words (heading-wrap, too-long) or characters in a word (overflow, clipped)."""

    kind: str
    step: str
    limit: int = 0

    def failure(self) -> CheckFailure:
        """What the block's answer is told when it is asked again (said after "Your answer")."""
        if self.kind == HEADING_WRAP:
            return CheckFailure(
                "layout",
                "is too long for its place on the page: it is shown as a heading, which"
                f" holds at most {self.limit} words. Write at most {self.limit} words",
            )
        if self.kind == TOO_LONG:
            return CheckFailure(
                "layout",
                "is far too long for its place on the page. Write at most"
                f" {self.limit} words (fewer, shorter list items)",
            )
        return CheckFailure(
            "layout",
            "does not fit a phone's screen: a word, name, code or URL in it is too long."
            f" Write no word longer than {self.limit} characters (leave long URLs out)",
        )

    def truncate(self, text: str) -> str:
        if self.kind == HEADING_WRAP:
            return truncate_words(text, self.limit)
        if self.kind == TOO_LONG:
            return truncate_lines(text, self.limit)
        return shorten_long_words(text, self.limit)

    def as_json(self) -> list[Any]:
        return [self.kind, self.step, self.limit]

    @classmethod
    def from_json(cls, data: Any) -> Fix:
        kind, step, limit = data
        if kind not in LADDERS or step not in LADDERS[kind]:
            raise ValueError(f"not a fix: {data!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
            raise ValueError(f"not a fix: {data!r}")
        return cls(kind, step, limit)


@dataclass
class BlockFixes:
    """The fixes a block got, for the answer whose digest is `answer`."""

    answer: str
    fixes: list[Fix] = field(default_factory=list)


@dataclass
class PageRecord:
    """What the guardian knows of a page: its blocks' fixes, and the fingerprint of the
    page as it was last checked in a browser (None: never) with what was left unhealed."""

    blocks: dict[str, BlockFixes] = field(default_factory=dict)
    checked: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "findings": [finding.as_json() for finding in self.findings],
            "blocks": {
                name: {"answer": fixes.answer, "fixes": [fix.as_json() for fix in fixes.fixes]}
                for name, fixes in sorted(self.blocks.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PageRecord:
        checked = data["checked"]
        return cls(
            checked=None if checked is None else str(checked),
            findings=[Finding.from_json(item) for item in data["findings"]],
            blocks={
                str(name): BlockFixes(
                    str(entry["answer"]), [Fix.from_json(fix) for fix in entry["fixes"]]
                )
                for name, entry in data["blocks"].items()
            },
        )


def answer_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def read_guard_record(path: Path) -> dict[str, PageRecord]:
    """The guard record of the output at `path`'s site, by page file; empty when there is
    none, another version wrote it, or anything in it is not as written (it is read back
    from disk, so it is not trusted: a bad entry drops the whole record, which costs a
    browser check, never a wrong page)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        if data["generator"] != GENERATOR:
            return {}
        return {str(page): PageRecord.from_json(entry) for page, entry in data["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


@dataclass
class BlockHealing:
    """A block as its fixes have left it so far in this build: the answer they were made
    for (its digest), the request its text answers (a next re-ask builds on it), its
    text, the fixes that took, and its box's changes."""

    answer: str
    request: LLMRequest
    text: str
    applied: list[Fix] = field(default_factory=list)
    heal_class: str | None = None
    css: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, job: Job, text: str) -> BlockHealing:
        return cls(answer_digest(text), job.request, text)

    @property
    def layout(self) -> BlockLayout:
        return BlockLayout(self.heal_class, frozenset(self.css))


class Healer:
    """The fixes of one build: those of the last build replayed on the blocks whose answers
    are the same (`heal`, called for every block as its answer is published), more added
    by the guard (`extend`), and the record of what each page got, written with the site
    (`write_record`)."""

    def __init__(self, reviewer: Reviewer, limits: LayoutLimits, output_dir: Path) -> None:
        self.reviewer = reviewer
        self.limits = limits
        self.previous = read_guard_record(output_dir / GUARD_FILE)
        self.record: dict[str, PageRecord] = {}
        # The blocks healed in this build, by (page file, block): what the guard goes on from.
        self._healing: dict[tuple[str, str], BlockHealing] = {}

    async def heal(self, job: Job, text: str, result: BlockResult) -> tuple[str, BlockLayout]:
        """`text` as the fixes its block got last time make it, when it is the answer they
        were made for; else as it is (the guard will look at the new answer afresh)."""
        previous = self.previous.get(job.page.output_path)
        made = previous.blocks.get(job.block.name) if previous is not None else None
        if made is None or made.answer != answer_digest(text):
            return text, BlockLayout()
        healing = await self.extend(job, BlockHealing.of(job, text), made.fixes, result)
        return healing.text, healing.layout

    def healing(self, job: Job) -> BlockHealing | None:
        """The block as this build's fixes left it; None when it has none."""
        return self._healing.get((job.page.output_path, job.block.name))

    async def extend(
        self, job: Job, healing: BlockHealing, fixes: Sequence[Fix], result: BlockResult
    ) -> BlockHealing:
        """`healing` with `fixes` applied in order, and recorded for the block; a fix that
        does not take is dropped: a content fix the model did not answer, or answered
        with text that fails the block's checks, a cut that cuts nothing, a theme class
        the theme does not have."""
        for fix in fixes:
            if fix.step == CONTENT:
                healing.request, answer = await self.reviewer.rework(
                    job, healing.request, healing.text, [fix.failure()], result
                )
                if answer is None:
                    continue
                healing.text = answer
            elif fix.step == TRUNCATE:
                cut = fix.truncate(healing.text)
                if cut == healing.text:
                    continue
                healing.text = cut
            elif fix.step == THEME:
                if self.limits.heal_class is None:
                    continue
                healing.heal_class = self.limits.heal_class
            else:
                healing.css.add(fix.kind)
            healing.applied.append(fix)
        self._keep(job, healing)
        return healing

    def _keep(self, job: Job, healing: BlockHealing) -> None:
        page = self.record.setdefault(job.page.output_path, PageRecord())
        if healing.applied:
            page.blocks[job.block.name] = BlockFixes(healing.answer, list(healing.applied))
            self._healing[(job.page.output_path, job.block.name)] = healing

    def carry_checks(self, pages: Iterable[Page], writer: PageWriter) -> None:
        """Keep the last check of every page this build wrote as it was checked then."""
        for page in pages:
            previous = self.previous.get(page.output_path)
            fingerprint = writer.fingerprint(page)
            if previous is None or fingerprint is None or previous.checked != fingerprint:
                continue
            entry = self.record.setdefault(page.output_path, PageRecord())
            entry.checked, entry.findings = previous.checked, list(previous.findings)

    def write_record(self, output: StagedOutput) -> None:
        pages = {
            path: entry.as_json()
            for path, entry in sorted(self.record.items())
            if entry.blocks or entry.checked is not None
        }
        with output.open_text(GUARD_FILE) as stream:
            json.dump({"generator": GENERATOR, "pages": pages}, stream, separators=(",", ":"))


def next_fix(kind: str, done: Sequence[str], limits: LayoutLimits) -> str | None:
    """The next step of `kind`'s ladder after the steps `done` (tried, held or not); None
    when none is left. The theme's step is skipped for a theme that has no healing class.
    A cut that was not short enough is made again, shorter: the budget of a cut comes from
    what was measured, and text does not shrink in proportion to its words (a list's items
    have their own spacing)."""
    tried = set(done)
    for step in LADDERS[kind]:
        if step in tried or (step == THEME and limits.heal_class is None):
            continue
        return step
    if done and done[-1] == TRUNCATE and kind == TOO_LONG:
        return TRUNCATE
    return None


def fix_limit(kind: str, text: str, findings: Sequence[Finding]) -> int:
    """The budget a fix sets for a block whose answer is `text`, from what was measured."""
    if kind in (OVERFLOW, CLIPPED):
        return WORD_CHARS
    words = count_words(text)
    ratio = min(
        (f.limit / f.measured for f in findings if f.measured and f.limit),
        default=1.0,
    )
    if kind == HEADING_WRAP:
        return max(MIN_HEADING_WORDS, min(HEADING_WORDS, math.floor(words * ratio)))
    return max(MIN_BLOCK_WORDS, math.floor(words * ratio * LENGTH_MARGIN))


@dataclass
class GuardOutcome:
    """What the guard did, for the report: every finding with the steps its block got for
    it and whether it held (gone from the last check)."""

    mode: str
    widths: tuple[int, ...]
    pages_checked: int = 0
    pages_cached: int = 0
    rounds: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    screenshots: str | None = None

    @property
    def unhealed(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if not f["healed"]]

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "widths": list(self.widths),
            "pages_checked": self.pages_checked,
            "pages_cached": self.pages_cached,
            "rounds": self.rounds,
            "healed": len(self.findings) - len(self.unhealed),
            "unhealed": len(self.unhealed),
            "screenshots": self.screenshots,
            "findings": self.findings,
        }


# A (page file, block, kind of finding): what the ladder of steps is climbed for.
_Target = tuple[str, str, str]


class Guardian:
    """The guard of one build, over its staging folder: check, heal, check again."""

    def __init__(
        self,
        project: Project,
        healer: Healer,
        writer: PageWriter,
        output: StagedOutput,
        options: GuardOptions,
        chromium: Path,
        *,
        results: Mapping[tuple[str, str], BlockResult],
        observer: BuildObserver,
    ) -> None:
        self.project = project
        self.reviewer = healer.reviewer
        self.healer = healer
        self.writer = writer
        self.output = output
        self.options = options
        self.chromium = chromium
        self.results = results
        self.observer = observer
        self.limits = healer.limits
        self._pages = {page.output_path: page for page in project.site.pages}
        self._tried: dict[_Target, list[str]] = {}

    async def run(self) -> GuardOutcome:
        """Check the pages that changed since they were last checked, heal what can be,
        and record it all (the record is written with the site by the caller)."""
        from trinity.layout.browser import LayoutBrowser  # only guarded builds load it

        outcome = GuardOutcome(self.options.mode, self.options.widths)
        self.healer.carry_checks(self._pages.values(), self.writer)
        pending = [path for path in self._pages if self._unchecked(path)]
        outcome.pages_checked = len(pending)
        outcome.pages_cached = len(self._pages) - len(pending)
        shots = self.output.path(SCREENSHOT_DIR) if self.options.screenshots else None
        roots = (self.output.staging, self.output.output_dir)
        first: dict[str, list[Finding]] = {}
        latest: dict[str, list[Finding]] = {}
        if pending:
            async with LayoutBrowser(
                roots, chromium=self.chromium, parallel=self.options.parallel
            ) as browser:
                first = await self._check(browser, pending, shots, "before")
                latest = dict(first)
                for _ in range(MAX_ROUNDS):
                    healed = await self._heal_round(latest)
                    if not healed:
                        break
                    outcome.rounds += 1
                    latest.update(await self._check(browser, healed, None, ""))
                if shots is not None and any(first.values()):
                    await self._after_shots(browser, first, shots)
                    outcome.screenshots = f"{SCREENSHOT_DIR}/{GALLERY_FILE}"
        for path in pending:
            entry = self.healer.record.setdefault(path, PageRecord())
            entry.checked = self.writer.fingerprint(self._pages[path])
            entry.findings = latest.get(path, [])
        outcome.findings = self._told(first, latest, pending)
        if shots is not None and outcome.screenshots is not None:
            # Through the staging folder, so a full disk is one line naming the folder.
            page = gallery_page(shots, outcome.findings, self.options.widths)
            self.output.write_text(outcome.screenshots, page)
        return outcome

    def _unchecked(self, path: str) -> bool:
        entry = self.healer.record.get(path)
        return entry is None or entry.checked is None

    async def _check(
        self, browser: LayoutBrowser, pages: Sequence[str], shots: Path | None, label: str
    ) -> dict[str, list[Finding]]:
        done = 0
        self.observer.layout_checked(done, len(pages))

        def checked(_: str) -> None:
            nonlocal done
            done += 1
            self.observer.layout_checked(done, len(pages))

        return await browser.check(
            list(pages),
            self.limits,
            widths=self.options.widths,
            screenshots=shots,
            label=f"-{label}" if label else "",
            on_page=checked,
        )

    async def _after_shots(
        self, browser: LayoutBrowser, first: Mapping[str, list[Finding]], shots: Path
    ) -> None:
        for path, findings in sorted(first.items()):
            if findings:
                for width in self.options.widths:
                    name = screenshot_name(path, width, "-after")
                    await browser.screenshot(path, width, shots / name)

    async def _heal_round(self, latest: Mapping[str, list[Finding]]) -> list[str]:
        """One round: the next step for every healable finding, each page with new steps
        rendered again; the pages rewritten."""
        rewritten = []
        for path, findings in sorted(latest.items()):
            steps = self._next_steps(path, findings)
            if steps and await self._heal_page(self._pages[path], steps):
                rewritten.append(path)
        return rewritten

    def _next_steps(
        self, path: str, findings: Sequence[Finding]
    ) -> dict[str, list[tuple[str, str, list[Finding]]]]:
        """Block -> the (kind, step, its findings) to add, one step per kind."""
        grouped: dict[tuple[str, str], list[Finding]] = {}
        for finding in findings:
            if finding.healable and finding.block is not None:
                grouped.setdefault((finding.block, finding.kind), []).append(finding)
        steps: dict[str, list[tuple[str, str, list[Finding]]]] = {}
        for (block, kind), found in sorted(grouped.items()):
            tried = self._tried.setdefault((path, block, kind), [])
            step = next_fix(kind, tried, self.limits)
            if step is not None:
                tried.append(step)
                steps.setdefault(block, []).append((kind, step, found))
        return steps

    async def _published(self, job: Job) -> BlockHealing | None:
        """A block the guard has not healed yet, as the build published it: its review
        again (every answer it takes is cached: no model is asked), or None."""
        scratch = BlockResult(job.page.slug, job.block.name, "cache")
        try:
            text = await self.reviewer.review(job, scratch)
        except LLMError:
            return None
        return None if text is None else BlockHealing.of(job, text)

    async def _heal_page(
        self, page: Page, steps: Mapping[str, list[tuple[str, str, list[Finding]]]]
    ) -> bool:
        """Render `page` again with its blocks' new steps added to those they had; False
        when its answers cannot be had again (then it is left as it was)."""
        answers: dict[str, str | None] = {}
        layouts: dict[str, BlockLayout] = {}
        for job in page_jobs(self.project, self.reviewer.client, page):
            name = job.block.name
            healing = self.healer.healing(job) or await self._published(job)
            if healing is None:
                log.warning("%s: %s: its answer could not be had again to heal it", page.slug, name)
                return False
            added = []
            for kind, step, found in steps.get(name, []):
                added.append(Fix(kind, step, fix_limit(kind, healing.text, found)))
                log.info(
                    "%s: %s: %s at %s px: trying the %s fix",
                    page.slug,
                    name,
                    kind,
                    "/".join(str(finding.width) for finding in found),
                    step,
                    extra={"event": "layout_fix"},
                )
            result = self.results.get((page.slug, name)) or BlockResult(page.slug, name, "cache")
            healing = await self.healer.extend(job, healing, added, result)
            answers[name], layouts[name] = healing.text, healing.layout
        self.writer.rewrite(page, answers, layouts)
        return True

    def _told(
        self,
        first: Mapping[str, list[Finding]],
        latest: Mapping[str, list[Finding]],
        pending: Sequence[str],
    ) -> list[dict[str, Any]]:
        """Every finding for the report: those of the first check (healed when gone from
        the last), those the healing brought, and those a cached check left."""
        told = []
        for path in sorted(self._pages):
            record = self.healer.record.get(path, PageRecord())
            if path not in pending:
                told += [self._entry(record, f, healed=False) for f in record.findings]
                continue
            last = latest.get(path, [])
            left = {_identity(f) for f in last}
            before = first.get(path, [])
            told += [self._entry(record, f, healed=_identity(f) not in left) for f in before]
            seen = {_identity(f) for f in before}
            told += [self._entry(record, f, healed=False) for f in last if _identity(f) not in seen]
        return told

    @staticmethod
    def _entry(record: PageRecord, finding: Finding, *, healed: bool) -> dict[str, Any]:
        block = record.blocks.get(finding.block) if finding.block is not None else None
        fixes = [fix.step for fix in block.fixes if fix.kind == finding.kind] if block else []
        return {**finding.as_json(), "fixes": fixes, "healed": healed}


async def check_built_site(
    project: Project, options: GuardOptions | None = None
) -> tuple[int, list[Finding]]:
    """`trinity check --layout`: the pages of the site built in the output folder, checked
    in a browser (nothing is healed); the number of pages checked and the findings."""
    from trinity.layout.browser import LayoutBrowser, find_chromium

    options = options or GuardOptions()
    chromium = find_chromium(options.chromium)
    output_dir = project.settings.build.output_dir
    pages = [p.output_path for p in project.site.pages if (output_dir / p.output_path).is_file()]
    if not pages:
        raise InputError(
            f"{shown_path(output_dir)} holds none of the site's pages: run `trinity build` first",
            argument="output",
        )
    async with LayoutBrowser(
        (output_dir,), chromium=chromium, parallel=options.parallel
    ) as browser:
        found: dict[str, list[Finding]] = await browser.check(
            pages, project.theme.guard, widths=options.widths
        )
    return len(pages), [finding for path in pages for finding in found.get(path, [])]


def _identity(finding: Finding) -> tuple[Any, ...]:
    """What makes two checks' findings the same problem: the width, the kind and the block
    (the element too outside any block), not the numbers."""
    element = finding.element if finding.block is None else None
    return (finding.width, finding.kind, finding.block, element)


__all__ = [
    "GUARD_FILE",
    "LADDERS",
    "MODES",
    "BlockFixes",
    "BlockHealing",
    "Fix",
    "GuardOptions",
    "GuardOutcome",
    "Guardian",
    "Healer",
    "PageRecord",
    "answer_digest",
    "check_built_site",
    "fix_limit",
    "next_fix",
    "read_guard_record",
]
