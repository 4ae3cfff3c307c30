"""`evaluate_project` with checks and a judge (set with dataclasses.replace, as the settings
readers would): two models on the fake server, each block's checks and score per side,
regressions by a failed check or by a score that dropped more than the margin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import anyio
import pytest

from tests.e2e.sitekit import SiteProject
from trinity.checks.spec import CheckSpec, JudgeSpec, Range
from trinity.errors import InputError
from trinity.evaluation import Evaluation, evaluate_project
from trinity.project import Project, prepare

JUDGE = "judge-model"
JUDGE_SPEC = JudgeSpec(JUDGE)
CHECKS = CheckSpec(words=Range(max=20))
# What the new model answers for items 2, 3 and 4 (items are "Item 001", ...).
INVENTED = "A BAD line about Item 002."
VAGUE = "A MEDIOCRE line about Item 003."
LONG = "word " * 30 + "end."


@pytest.fixture
def site(make_site_project: Callable[..., SiteProject]) -> SiteProject:
    site = make_site_project()
    site.use_collection(4)
    site.update_settings("llm", aliases={"old": "ollama:old-model", "new": "ollama:new-model"})
    server = site.server
    server.clear_scripts()
    for marker, score, reason in (("BAD", 0.2, "Invented."), ("MEDIOCRE", 0.75, "Vague.")):
        server.script(marker, f'{{"score": {score}, "reason": "{reason}"}}', model=JUDGE)
    server.script("Score the answer", '{"score": 0.9, "reason": "Accurate."}', model=JUDGE)
    for item, answer in (("Item 002", INVENTED), ("Item 003", VAGUE), ("Item 004", LONG)):
        server.script(item, answer, model="new-model")
    return site


def judged(site: SiteProject, judge: JudgeSpec | None = JUDGE_SPEC) -> Project:
    """The project with CHECKS on every block and `judge` in its settings."""
    project = prepare(site.root)
    settings = replace(project.settings, judge=judge)
    pages = tuple(
        replace(page, blocks=tuple(replace(block, checks=CHECKS) for block in page.blocks))
        for page in project.site.pages
    )
    return replace(project, settings=settings, site=replace(project.site, pages=pages))


def run(
    project: Project, base: str = "old", candidate: str = "new", **options: float
) -> Evaluation:
    return anyio.run(lambda: evaluate_project(project, base, candidate, **options))


def by_page(result: Evaluation) -> dict[str, tuple[str, str]]:
    return {block.page: (block.verdict, block.reason) for block in result.blocks}


def test_regressions_by_failed_checks_the_judges_threshold_and_a_dropped_score(
    site: SiteProject,
) -> None:
    result = run(judged(site))

    assert by_page(result) == {
        "projects/item-001": ("same", ""),
        "projects/item-002": (
            "regression",
            "passed on base, fails on candidate: judge: scored 0.20, below 0.7: Invented.",
        ),
        "projects/item-003": ("regression", "score 0.90 -> 0.75"),
        "projects/item-004": ("regression", result.blocks[3].reason),
    }
    assert result.blocks[3].reason.startswith("passed on base, fails on candidate: words: ")
    assert result.blocks[3].candidate.score == 0.9  # the judge liked it; the checks did not
    assert (result.base.passed, result.candidate.passed) == (4, 2)
    assert result.base.mean_score == pytest.approx(0.9)
    assert result.candidate.mean_score == pytest.approx((0.9 + 0.2 + 0.75 + 0.9) / 4)
    assert (len(result.regressions), result.regression_rate) == (3, 0.75)
    assert result.gate_failed
    assert result.judge == JUDGE


def test_the_margin_decides_whether_a_lower_score_regresses(site: SiteProject) -> None:
    result = run(judged(site), margin=0.2)

    assert by_page(result)["projects/item-003"] == ("same", "")
    assert len(result.regressions) == 2
    assert not run(judged(site), margin=0.2, max_regressions=0.5).gate_failed


def test_the_other_way_round_is_an_improvement(site: SiteProject) -> None:
    result = run(judged(site), base="new", candidate="old")

    assert {verdict for verdict, _ in by_page(result).values()} == {"same", "improved"}
    assert by_page(result)["projects/item-003"] == ("improved", "score 0.75 -> 0.90")
    assert not result.gate_failed


def test_answers_and_verdicts_come_from_the_cache_the_second_time(site: SiteProject) -> None:
    first = run(judged(site))
    # Per side one answer per block; verdicts once per distinct answer (item 1 is the same).
    assert site.server.chat_count == 2 * 4 + 4 + 3

    again = run(judged(site))

    assert site.server.chat_count == 2 * 4 + 4 + 3
    assert again == first


def test_a_judge_that_fails_leaves_the_score_out_and_says_why(site: SiteProject) -> None:
    # "no-judge" is not scripted: the fake answers JSON without a score.
    result = run(judged(site, JudgeSpec("no-judge")), base="old", candidate="old")

    assert {block.verdict for block in result.blocks} == {"same"}
    outcome = result.blocks[0].base
    assert (outcome.passed, outcome.score) == (True, None)
    assert outcome.error is not None
    assert outcome.error.startswith("the judge failed: the judge gave no score")


def test_without_a_judge_only_the_checks_count(site: SiteProject) -> None:
    result = run(judged(site, None))

    assert [block.verdict for block in result.blocks] == ["same", "same", "same", "regression"]
    assert result.base.mean_score is None
    assert result.judge is None
    assert all(r.body["model"] != JUDGE for r in site.server.chat_requests)


@pytest.mark.parametrize("options", [{"margin": -0.1}, {"max_regressions": 1.5}])
def test_limits_out_of_range_are_bad_input(site: SiteProject, options: dict[str, float]) -> None:
    with pytest.raises(InputError, match="must be between 0 and 1"):
        run(judged(site), **options)
