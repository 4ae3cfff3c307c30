"""A block's answer through its checks, repairs, corrective re-asks, the cascade and the
judge (trinity.review), in real builds against the fake server, which answers badly first
and well after a corrective message (`script(..., turn=N)`): the server sees exactly the
re-asks the design implies, and a rebuild replays them all from the cache.

The bad answer leaves out a fact the block must mention: no repair can add it, so only a
re-ask (or the cascade) mends it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import anyio
import pytest

import trinity.project
from tests.e2e.sitekit import SiteProject
from tests.fakellm import FakeLLMServer, RecordedRequest
from trinity.build import build_project
from trinity.checks.correction import correction
from trinity.checks.spec import CheckFailure, CheckSpec, JudgeSpec
from trinity.errors import BuildFailed, LLMError
from trinity.llm.client import AsyncLLMClient
from trinity.llm.settings import Endpoint, LLMSettings, Target
from trinity.plan import block_request, plan_jobs
from trinity.project import Project, prepare
from trinity.report import BuildReport
from trinity.review import AnswerJudge
from trinity.site import Block, Page

MARKER = "BIO-OF-MARA"
WITHOUT = "Mara Quinn builds data tools for small teams."
WITH = "Mara Quinn builds data tools in Oslo."
MENTIONS_OSLO = CheckSpec(mentions=("Oslo",))
MISSING = CheckFailure("mentions", "does not mention 'Oslo'")
FAILED = f"failed its checks: {MISSING}"


@pytest.fixture
def site(make_site_project: Callable[..., SiteProject]) -> SiteProject:
    """A one-page site: a block `bio` (scripted per test) and a block `motto` (the fake's
    default answer, which passes the site's checks)."""
    project = make_site_project()
    data = project.pages()
    blocks = {"bio": {"prompt": f"Write the {MARKER}."}, "motto": "Write a motto."}
    data["pages"] = [{"slug": "about", "title": "About", "blocks": blocks}]
    project.write_pages(data)
    project.server.clear_scripts()
    return project


def with_review(
    project: Project,
    checks: CheckSpec = MENTIONS_OSLO,
    *,
    only: str | None = "bio",
    judge: JudgeSpec | None = None,
    **llm: Any,
) -> Project:
    """`project` with `checks` on its block `only` (every block for None) and the other
    review settings (`llm.cascade`, `llm.repair_attempts`, ...) as the settings readers
    will give them."""

    def block(b: Block) -> Block:
        return replace(b, checks=checks) if only in (None, b.name) else b

    def page(p: Page) -> Page:
        return replace(p, blocks=tuple(block(b) for b in p.blocks))

    settings = replace(project.settings, judge=judge, llm=replace(project.settings.llm, **llm))
    site = replace(project.site, pages=tuple(page(p) for p in project.site.pages))
    return replace(project, settings=settings, site=site)


def build(project: Project, judge: AnswerJudge | None = None, **options: Any) -> BuildReport:
    return anyio.run(lambda: build_project(project, judge=judge, **options))


def answer_always(server: FakeLLMServer, text: str) -> None:
    """Script the bio's first answer and every corrected one (a re-ask's last user turn
    is the correction, so a plain script, which reads that, would not match it)."""
    for turn in range(4):
        server.script(MARKER, text, turn=turn)


def bio_requests(server: FakeLLMServer) -> list[RecordedRequest]:
    return [r for r in server.chat_requests if MARKER in r.body["messages"][-1]["content"]]


def conversations(server: FakeLLMServer) -> list[list[tuple[str, str]]]:
    """The bio block's requests as (role, content) turns after the system prompt."""
    return [
        [(m["role"], m["content"]) for m in r.body["messages"] if m["role"] != "system"]
        for r in server.chat_requests
        if any(MARKER in m["content"] for m in r.body["messages"] if m["role"] == "user")
    ]


def bio_result(report: BuildReport) -> Any:
    (found,) = [b for b in report.blocks if b.block == "bio"]
    return found


PROMPT = f"Write the {MARKER}."


# ---------------------------------------------------------------------------- re-asks


def test_a_failed_answer_is_asked_again_with_its_correction_then_replayed_from_cache(
    site: SiteProject,
) -> None:
    site.server.script(MARKER, WITHOUT, turn=0)
    site.server.script(MARKER, WITH, turn=1)
    project = with_review(prepare(site.root, environ={}))

    report = build(project)

    assert conversations(site.server) == [
        [("user", PROMPT)],
        [
            ("user", PROMPT),
            ("assistant", WITHOUT),
            ("user", correction([MISSING])),
        ],
    ]
    bio = bio_result(report)
    assert (bio.source, bio.reasks, bio.failed_checks, bio.error) == ("llm", 1, [], None)
    assert (bio.repairs, bio.escalations) == ([], [])  # no repair could add the fact
    assert bio.checks == ["complete", "mentions", "forbid", "repeats"]
    assert bio.attempts == 2  # both calls add up
    assert bio.input_tokens > len(WITHOUT.split())
    assert WITH in site.html("about/index.html")
    assert WITHOUT not in site.html("about/index.html")
    totals = report.totals()
    assert (totals["checks_failed"], totals["reasked"], totals["repaired"]) == (1, 1, 0)
    assert (totals["escalated"], totals["judged"], totals["failed"]) == (0, 0, 0)
    sent = site.server.chat_count

    again = build(project)

    assert site.server.chat_count == sent, "the rebuild asked the model"
    rebuilt = bio_result(again)
    assert (rebuilt.source, rebuilt.reasks, rebuilt.failed_checks) == ("cache", 1, [])
    assert again.totals()["reasked"] == 1


@pytest.mark.parametrize(
    ("answer", "fix"),
    [
        (f"Sure! Here's the bio:\n{WITH}", "preamble"),  # boilerplate: the chat goes
        (f"{WITH} She also likes long", "trim"),  # not complete: cut to its last sentence
    ],
    ids=["preamble", "unfinished"],
)
def test_a_repaired_answer_is_not_asked_again(site: SiteProject, answer: str, fix: str) -> None:
    answer_always(site.server, answer)
    project = with_review(prepare(site.root, environ={}))

    report = build(project)

    assert len(bio_requests(site.server)) == 1
    bio = bio_result(report)
    assert (bio.repairs, bio.reasks, bio.failed_checks) == ([fix], 0, [])
    page = site.html("about/index.html")
    assert WITH in page
    assert "Sure" not in page and "likes long" not in page
    assert report.totals()["repaired"] == 1


def test_personal_data_under_pii_warn_is_published_and_told_without_the_data(
    site: SiteProject, caplog: pytest.LogCaptureFixture
) -> None:
    answer = "Mara Quinn builds data tools in Oslo. Write to mara@example.com."
    answer_always(site.server, answer)
    project = with_review(prepare(site.root, environ={}), replace(MENTIONS_OSLO, pii="warn"))

    with caplog.at_level(logging.WARNING, logger="trinity"):
        report = build(project)

    bio = bio_result(report)
    assert (bio.failed_checks, bio.reasks, bio.repairs) == ([], 0, [])
    assert "mara@example.com" in site.html("about/index.html")
    told = [r.getMessage() for r in caplog.records if "personal data" in r.getMessage()]
    assert told == [
        "about: bio: the answer holds personal data (email), published as checks.pii is warn"
    ]
    assert "mara@example.com" not in caplog.text


@pytest.mark.parametrize("repair_attempts", [0, 1, 2])
def test_re_asks_stop_at_repair_attempts_and_the_block_fails_naming_the_check(
    site: SiteProject, repair_attempts: int
) -> None:
    answer_always(site.server, WITHOUT)
    project = with_review(prepare(site.root, environ={}), repair_attempts=repair_attempts)

    with pytest.raises(BuildFailed) as failed:
        build(project)

    turns = [len(c) for c in conversations(site.server)]
    assert turns == [1 + 2 * n for n in range(repair_attempts + 1)]
    assert failed.value.failures == [("about", "bio", FAILED)]
    assert not site.output.exists()


def test_a_cached_answer_that_fails_a_changed_check_is_asked_again_not_served_stale(
    site: SiteProject,
) -> None:
    answer_always(site.server, WITHOUT)
    build(prepare(site.root, environ={}))
    assert len(bio_requests(site.server)) == 1

    loose = with_review(prepare(site.root, environ={}), CheckSpec(mentions=("data tools",)))
    report = build(loose)

    assert site.server.chat_count == 2, "a check the cached answers pass needs no model"
    assert bio_result(report).source == "cache"

    strict = with_review(prepare(site.root, environ={}), repair_attempts=1)
    with pytest.raises(BuildFailed):
        build(strict, keep_going=True)

    assert [len(c) for c in conversations(site.server)] == [1, 3]
    (bio,) = [b for b in site.report()["blocks"] if b["block"] == "bio"]
    assert (bio["source"], bio["reasks"]) == ("failed", 1)
    assert bio["failed_checks"] == [str(MISSING)]
    assert WITHOUT not in site.html("about/index.html")


@pytest.mark.parametrize("checked", [False, True])
def test_a_stale_answer_stands_in_for_a_dead_model_only_if_it_passes_its_checks(
    site: SiteProject, checked: bool
) -> None:
    answer_always(site.server, WITHOUT)
    build(prepare(site.root, environ={}))
    site.server.fail_rate(1.0)
    fact = "Oslo" if checked else "data tools"
    project = with_review(prepare(site.root, environ={}), CheckSpec(mentions=(fact,)))

    if checked:
        with pytest.raises(BuildFailed) as failed:
            build(project, refresh_cache=True)
        ((page, block, reason),) = failed.value.failures
        assert (page, block) == ("about", "bio")
        # The model's failure is why: the stale answer it failed over to was not served.
        assert reason.startswith(("http://", "the circuit breaker")), reason
    else:
        report = build(project, refresh_cache=True)
        bio = bio_result(report)
        assert (bio.source, bio.failed_checks) == ("stale", [])
        assert WITHOUT in site.html("about/index.html")


# ---------------------------------------------------------------------------- the cascade


@pytest.fixture
def strong_server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(models=["strong-model"]) as server:
        yield server


def with_strong(project: Project, server: FakeLLMServer, cascade: tuple[str, ...]) -> Project:
    """`project` with `cascade`, one re-ask, and an alias `strong`: an OpenAI-protocol
    model on `server` (another provider than the main one, on its own endpoint)."""
    return with_review(
        project,
        cascade=cascade,
        repair_attempts=1,
        aliases=MappingProxyType({"strong": Target("openai", "strong-model")}),
        endpoints=MappingProxyType({"openai": Endpoint("openai", server.url)}),
    )


def test_a_block_that_still_fails_goes_to_the_next_model_of_the_cascade(
    site: SiteProject, strong_server: FakeLLMServer
) -> None:
    answer_always(site.server, WITHOUT)
    strong_server.script(MARKER, WITH)
    main = site.settings()["llm"]["model"]
    project = with_strong(prepare(site.root, environ={}), strong_server, (main, "strong"))

    report = build(project)

    assert [len(c) for c in conversations(site.server)] == [1, 3]  # the ask and one re-ask
    assert conversations(strong_server) == [[("user", PROMPT)]]
    (escalated,) = bio_requests(strong_server)
    assert escalated.body["model"] == "strong-model"
    bio = bio_result(report)
    assert (bio.escalations, bio.model, bio.reasks, bio.attempts) == (
        ["strong"],
        "strong-model",
        1,
        3,
    )
    assert WITH in site.html("about/index.html")
    assert report.totals()["escalated"] == 1
    sent = (site.server.chat_count, strong_server.chat_count)

    build(project)

    assert (site.server.chat_count, strong_server.chat_count) == sent


def test_with_a_cascade_a_block_without_a_model_starts_at_its_first(
    site: SiteProject, strong_server: FakeLLMServer
) -> None:
    strong_server.script(MARKER, WITH)
    project = with_strong(prepare(site.root, environ={}), strong_server, ("strong",))

    dry = build(project, dry_run=True)
    assert dry.count("pending") == 2
    report = build(project)

    assert site.server.chat_count == 0
    assert strong_server.chat_count == 2
    assert {b.model for b in report.blocks} == {"strong-model"}


@pytest.mark.parametrize(
    "llm", [None, LLMSettings(provider="local", style="completion")], ids=["chat", "base"]
)
def test_a_cascade_step_asks_as_the_plan_asks_the_block_s_own_model(
    site_project: SiteProject, llm: LLMSettings | None
) -> None:
    project = prepare(site_project.root, environ={})
    client = AsyncLLMClient(llm or project.settings.llm)
    jobs = list(plan_jobs(project, client))
    assert jobs
    for job in jobs:
        made = block_request(project, client, job.page, job.block, job.request.model)
        assert made == job.request


# ---------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str
    cost: float = 0.0
    input_tokens: int = 7
    output_tokens: int = 3


class FakeJudge:
    """Scores "Vague" answers 0.2, others 0.9; or fails like a dead judge model."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.asked: list[str] = []

    async def verdict(self, page: Page, block: Block, text: str) -> Verdict:
        self.asked.append(text)
        if self.fails:
            raise LLMError("the judge's server is down")
        return Verdict(0.2, "vague") if "Vague" in text else Verdict(0.9, "on point")


def test_an_answer_the_judge_scores_below_the_threshold_is_asked_again(
    site: SiteProject,
) -> None:
    site.server.script(MARKER, "Vague words.", turn=0)
    site.server.script(MARKER, "Precise words.", turn=1)
    judge = FakeJudge()
    judging = JudgeSpec("judge", threshold=0.7)
    project = with_review(prepare(site.root, environ={}), CheckSpec(), judge=judging)

    report = build(project, judge=judge)

    judged = CheckFailure("judge", "scored 0.20, below 0.7: vague")
    assert conversations(site.server)[1][1:] == [
        ("assistant", "Vague words."),
        ("user", correction([judged])),
    ]
    bio = bio_result(report)
    assert (bio.judge_score, bio.reasks, bio.failed_checks) == (0.9, 1, [])
    assert "judge" in bio.checks
    assert judge.asked.count("Vague words.") == 1
    assert report.totals()["judged"] == 2  # the motto was judged too
    # The block's tokens are its two answers' (as the server counted them: words) and its
    # two verdicts' (7 in, 3 out each).
    bio_requests = [
        r for r in site.server.chat_requests if MARKER in json.dumps(r.body["messages"])
    ]
    asked = sum(
        len(" ".join(m["content"] for m in r.body["messages"]).split()) for r in bio_requests
    )
    assert (bio.input_tokens, bio.output_tokens) == (asked + 2 * 7, 2 + 2 + 2 * 3)
    assert "Precise words." in site.html("about/index.html")


def test_a_judge_that_cannot_judge_is_said_once_and_fails_no_block(
    site: SiteProject, caplog: pytest.LogCaptureFixture
) -> None:
    project = with_review(prepare(site.root, environ={}), CheckSpec(), judge=JudgeSpec("judge"))

    with caplog.at_level(logging.INFO):
        report = build(project, judge=FakeJudge(fails=True))

    assert report.failures == []
    assert {b.judge_score for b in report.blocks} == {None}
    warnings = [r for r in caplog.records if "judge could not" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_without_judge_settings_a_judge_passed_in_is_not_asked(site: SiteProject) -> None:
    judge = FakeJudge()
    build(prepare(site.root, environ={}), judge=judge)
    assert judge.asked == []


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture
def checked_cli(site: SiteProject, monkeypatch: pytest.MonkeyPatch) -> SiteProject:
    """`trinity build` of `site` with the bio to mention Oslo and one re-ask (what
    the settings readers will make of `checks:` and `llm.repair_attempts`)."""
    original = trinity.project.prepare_settings

    def prepared(*args: Any, **kwargs: Any) -> Project:
        return with_review(original(*args, **kwargs), repair_attempts=1)

    monkeypatch.setattr(trinity.project, "prepare_settings", prepared)
    return site


def test_the_cli_fails_the_build_naming_the_check(checked_cli: SiteProject) -> None:
    answer_always(checked_cli.server, WITHOUT)

    result = checked_cli.build()

    assert result.exit_code == 1, result.describe()
    assert FAILED in result.stderr
    assert "Blocks that failed" in result.stderr
    assert not checked_cli.output.exists()


def test_the_cli_keeps_going_with_a_placeholder_and_counts_the_checks(
    checked_cli: SiteProject,
) -> None:
    answer_always(checked_cli.server, WITHOUT)

    result = checked_cli.build("--keep-going")

    assert result.exit_code == 1, result.describe()
    assert FAILED in result.stderr
    page = checked_cli.html("about/index.html")
    assert WITHOUT not in page
    assert "is not available yet" in page
    totals = checked_cli.report()["totals"]
    assert (totals["checks_failed"], totals["reasked"], totals["failed"]) == (1, 1, 1)


def test_the_cli_summary_counts_what_the_checks_did(checked_cli: SiteProject) -> None:
    checked_cli.server.script(MARKER, WITHOUT, turn=0)
    checked_cli.server.script(MARKER, WITH, turn=1)

    result = checked_cli.build()

    assert result.exit_code == 0, result.describe()
    assert "checks" in result.stderr
    assert "0 repaired, 1 re-asked, 0 escalated, 0 failed" in result.flat
