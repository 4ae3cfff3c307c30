"""`trinity build --batch` (issue 19): the uncached blocks asked through OpenAI's Batch API
or Anthropic's Message Batches API on the fake server, at half price, resumable.

Every test builds against the loopback fake server (tests/fakebatch.py), with a short
`llm.batch.poll_interval`; none waits on a clock to assert anything.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import MODEL, RunResult, SiteProject

BLOCKS = 200
PRICES = {MODEL: {"input": 2.0, "output": 8.0}}


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def batch_site(make: Callable[..., SiteProject], provider: str, pages: int = BLOCKS) -> SiteProject:
    """`pages` one-block pages on `provider`, priced, polling the fake server often."""
    project = make(provider=provider)
    project.use_collection(pages)
    project.update_settings("llm", prices=PRICES, batch={"poll_interval": 0.02})
    return project


def assert_site_complete(project: SiteProject, pages: int = BLOCKS) -> None:
    for slug in project.item_slugs:
        assert "Generated answer " in project.html(f"projects/{slug}/index.html")
    assert len(project.item_slugs) == pages


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_200_block_site_builds_in_one_batch_at_half_the_live_cost(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = batch_site(make_site_project, provider)
    server = project.server

    assert_ok(project.build("--batch"))

    assert server.batches.requests_per_batch == [BLOCKS]
    assert server.chat_count == 0, "no block was asked live"
    assert_site_complete(project)
    report = project.report()
    totals = report["totals"]
    assert totals["llm_calls"] == BLOCKS and totals["cache_hits"] == 0
    assert totals["batched"] == BLOCKS
    assert all(block["batch"] for block in report["blocks"])
    assert report["batch"]["answered"] == BLOCKS
    batch_cost = totals["cost_usd"]

    # The same site built live, every block asked again: the same usage numbers (the fake
    # server's), twice the cost.
    assert_ok(project.build("--no-cache"))
    live_totals = project.report()["totals"]
    assert live_totals["batched"] == 0 and live_totals["llm_calls"] == BLOCKS
    assert batch_cost > 0
    assert batch_cost == pytest.approx(live_totals["cost_usd"] / 2, rel=1e-9)


# --------------------------------------------------------------------------- resuming

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool]) -> None:
    """Until `condition` holds (a generous bound only against a hung test)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_build_interrupted_while_its_batch_is_pending_resumes_it_without_paying_again(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = batch_site(make_site_project, provider)
    server = project.server
    server.batches.delay = 3600  # pending until the test says otherwise

    proc = project.popen(
        "build", "--project", project.root, "--batch", env={"PYTHONPATH": str(REPO)}
    )
    try:
        wait_for(lambda: server.batches.polls >= 1 or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert server.batches.created == 1
    assert not (project.output / "index.html").exists()

    server.batches.delay = 0  # the batch has ended meanwhile
    result = project.build("--batch")

    assert_ok(result)
    assert server.batches.created == 1, "the re-run polled the same batch, sent none"
    assert server.chat_count == 0
    assert_site_complete(project)
    report = project.report()
    assert len(report["batch"]["batches_resumed"]) == 1 and report["batch"]["batches_sent"] == []
    assert report["totals"]["batched"] == BLOCKS
    assert not list(project.root.rglob("batches/pending.json")) or _ledger(project) == []


def _ledger(project: SiteProject) -> list[object]:
    (path,) = project.root.rglob("batches/pending.json")
    data = json.loads(path.read_text("utf-8"))
    batches = data["batches"]
    assert isinstance(batches, list)
    return batches


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("provider", "kind"),
    [("openai", "errored"), ("anthropic", "expired"), ("anthropic", "errored")],
)
def test_requests_a_batch_failed_are_asked_again_in_the_next_batch(
    make_site_project: Callable[..., SiteProject], provider: str, kind: str
) -> None:
    project = batch_site(make_site_project, provider, 20)
    project.server.batches.fail_next(3, kind)  # type: ignore[arg-type]

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [20, 3]
    assert project.server.chat_count == 0
    assert_site_complete(project, 20)
    report = project.report()
    assert report["totals"]["batched"] == 20
    assert report["batch"]["failed"] == 3 and report["batch"]["answered"] == 20


def test_with_then_live_the_failed_requests_are_asked_live(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 20)
    project.server.batches.fail_next(3)

    result = project.build("--batch=then-live")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [20]
    assert project.server.chat_count == 3
    assert_site_complete(project, 20)
    totals = project.report()["totals"]
    assert (totals["batched"], totals["llm_calls"]) == (17, 20)
    assert "3 blocks are asked live: --batch=then-live" in result.flat


def test_what_the_last_round_failed_is_asked_live_with_a_warning(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "anthropic", 10)
    project.update_settings("llm", batch={"poll_interval": 0.02, "rounds": 2})
    project.server.batches.fail_next(20)  # all of the first batch, and of the second

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [10, 10]
    assert project.server.chat_count == 10
    assert "llm.batch.rounds (2) batches failed them" in result.flat
    assert_site_complete(project, 10)


# --------------------------------------------------------------------------- hostile


def ledger_path(project: SiteProject) -> Path:
    return project.root / ".cache" / "batches" / "pending.json"


def openai_line(custom_id: str, text: str) -> bytes:
    body = {
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    response = {"status_code": 200, "body": body}
    return json.dumps({"custom_id": custom_id, "response": response, "error": None}).encode()


def test_results_for_unknown_custom_ids_and_malformed_lines_are_ignored(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 10)
    project.server.batches.extra_lines = [
        openai_line("f" * 64, "EVIL answer for a request never sent"),
        openai_line("../../etc/passwd", "EVIL"),
        b"this line is not JSON",
        b'{"custom_id": 5}',
        b"[1, 2, 3]",
    ]

    result = project.build("--batch")

    assert_ok(result)
    assert_site_complete(project, 10)
    assert project.server.chat_count == 0
    assert "match no request it was sent" in result.flat
    for page in project.output.rglob("*.html"):
        assert "EVIL" not in page.read_text("utf-8")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_repeated_custom_id_keeps_the_first_answer_only(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    project = batch_site(make_site_project, provider, 3)
    project.server.batches.duplicate_text = "EVIL second answer"

    result = project.build("--batch")

    assert_ok(result)
    assert_site_complete(project, 3)
    assert "match no request it was sent" in result.flat
    for page in project.output.rglob("*.html"):
        assert "EVIL" not in page.read_text("utf-8")


def test_custom_ids_are_digests_of_the_cache_keys(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 3)
    assert_ok(project.build("--batch"))
    ids = [json.loads(line)["custom_id"] for line in _sent_lines(project)]
    assert len(set(ids)) == 3
    assert all(len(i) == 64 and set(i) <= set("0123456789abcdef") for i in ids)


def _sent_lines(project: SiteProject) -> list[bytes]:
    uploads = [r for r in project.server.requests if r.path == "/v1/files"]
    (upload,) = uploads
    start = upload.raw.index(b'{"custom_id"')
    end = upload.raw.rindex(b"}\n") + 1
    return upload.raw[start:end].splitlines()


def test_a_huge_results_file_is_a_clear_error_and_nothing_is_stored(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 5)
    project.update_settings("llm", max_response_bytes=65536)
    project.server.batches.huge = True

    result = project.build("--batch")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    # One answer's bound for each of the 5 requests, and one more.
    assert "more than 393,216 bytes" in result.flat
    assert not (project.output / "index.html").exists()


def test_results_named_on_another_host_are_never_fetched(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "anthropic", 5)
    project.server.batches.results_url_host = "evil.example:80"

    result = project.build("--batch")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    assert "somewhere other than the configured endpoint" in result.flat


@pytest.mark.parametrize(
    "ledger",
    [
        b"not json at all",
        b'{"version": 99, "batches": []}',
        b'{"version": 1, "batches": "nope"}',
        b'{"version": 1, "batches": [{"provider": "openai", "endpoint": "x", "id": "../../x",'
        b' "custom_ids": ["y"]}]}',
        b"[" * 10000 + b"]" * 10000,
    ],
    ids=["not-json", "other-version", "no-list", "bad-entry", "deep"],
)
def test_a_hostile_ledger_is_ignored_and_a_new_batch_sent(
    make_site_project: Callable[..., SiteProject], ledger: bytes
) -> None:
    project = batch_site(make_site_project, "openai", 5)
    ledger_path(project).parent.mkdir(parents=True, exist_ok=True)
    ledger_path(project).write_bytes(ledger)

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.requests_per_batch == [5]
    assert_site_complete(project, 5)


def test_a_ledger_naming_a_batch_the_endpoint_does_not_know_is_dropped(
    make_site_project: Callable[..., SiteProject],
) -> None:
    from trinity.llm.batches.ledger import endpoint_id

    project = batch_site(make_site_project, "openai", 5)
    server = project.server
    # Our own custom ids, from a first build's upload, under a batch id never made.
    assert_ok(project.build("--batch"))
    ours = [json.loads(line)["custom_id"] for line in _sent_lines(project)]
    planted = {
        "provider": "openai",
        "endpoint": endpoint_id("openai", server.url),
        "id": "batch_forged",
        "custom_ids": ours,
        "round": 1,
    }
    strangers = {**planted, "id": "batch_strangers", "custom_ids": ["e" * 64]}
    ledger_path(project).write_text(json.dumps({"version": 1, "batches": [planted, strangers]}))
    server.reset()

    result = project.build("--batch", "--no-cache")

    assert_ok(result)
    assert server.batches.requests_per_batch == [5], "the forged batch's requests sent anew"
    polled = {r.path for r in server.requests if r.method == "GET"}
    assert "/v1/batches/batch_forged" in polled
    assert "/v1/batches/batch_strangers" not in polled, "not this build's requests"
    assert "batch_forged cannot be read" in result.flat


# --------------------------------------------------------------------------- flags


def test_a_dry_run_with_batch_estimates_at_the_batch_price_and_sends_nothing(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 20)

    live = project.build("--dry-run", "--json")
    batched = project.build("--dry-run", "--json", "--batch")

    assert live.exit_code == batched.exit_code == 0, batched.describe()
    live_estimate, batch_estimate = (json.loads(r.stdout)["estimate"] for r in (live, batched))
    assert batch_estimate["cost_usd"] == pytest.approx(live_estimate["cost_usd"] / 2, rel=1e-4)
    assert all(block["batch"] for block in batch_estimate["blocks"])
    assert not any(block["batch"] for block in live_estimate["blocks"])
    assert project.server.request_count == 0


def test_a_dry_run_with_batch_says_a_batch_over_max_cost_stops_the_build(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "anthropic", 20)
    planned = json.loads(project.build("--dry-run", "--json", "--batch").stdout)["estimate"]
    cap = planned["cost_usd"] / 2  # enough for half the blocks one by one

    verdict = json.loads(
        project.build("--dry-run", "--json", "--batch", "--max-cost", f"{cap:.8f}").stdout
    )["estimate"]["max_cost"]
    refused = project.build("--batch", "--max-cost", f"{cap:.8f}")

    # The batch holds every block's ceiling at once: it does not fit, nothing is sent.
    assert verdict == {
        "max_cost_usd": pytest.approx(cap),
        "stops": True,
        "blocks_before_stop": 0,
        "blocks_refused": 20,
    }
    assert refused.exit_code == 1 and project.server.batches.created == 0


def test_an_unknown_batch_mode_is_bad_input_naming_the_flag(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 2)
    result = project.build("--batch=later")
    assert result.exit_code == 2, result.describe()
    assert "--batch" in result.flat and "rebatch, then-live" in result.flat


def test_blocks_of_a_provider_without_a_batch_api_go_live_with_one_line(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "ollama", 5)

    result = project.build("--batch")

    assert_ok(result)
    assert project.server.batches.created == 0
    assert project.server.chat_count == 5
    assert result.flat.count("no batch API") == 1


def test_max_cost_reserves_the_batch_estimate_before_sending(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 20)

    result = project.build("--batch", "--max-cost", "0.0000001")

    assert result.exit_code == 1, result.describe()
    assert project.server.batches.created == 0
    assert "would be exceeded" in result.flat


def test_generate_only_fills_the_cache_by_batch_and_a_build_renders_from_it(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "anthropic", 10)

    assert_ok(project.build("--batch", "--generate-only"))
    assert not (project.output / "index.html").exists()
    assert_ok(project.build())

    assert project.server.batches.requests_per_batch == [10]
    assert project.server.chat_count == 0
    assert project.report()["totals"]["cache_hits"] == 10
    assert_site_complete(project, 10)


# --------------------------------------------------------------------------- progress


class BatchRecorder:
    """An observer that keeps the batch's counts, as the CLI's bar shows them."""

    def __init__(self) -> None:
        self.counts: list[tuple[int, int, int]] = []
        self.blocks = 0

    def planned(self, report: object) -> None:
        pass

    def block_done(self, result: object) -> None:
        self.blocks += 1

    def layout_checked(self, done: int, total: int) -> None:
        pass

    def batch_progress(self, done: int, failed: int, total: int) -> None:
        self.counts.append((done, failed, total))


def test_the_observer_hears_the_batch_counts_through_the_metrics_wrapper(
    make_site_project: Callable[..., SiteProject], tmp_path: Path
) -> None:
    from trinity.build import build_site
    from trinity.metrics import metrics_request, recorded

    project = batch_site(make_site_project, "anthropic", 10)
    project.server.batches.fail_next(2)
    recorder = BatchRecorder()

    with recorded(metrics_request(tmp_path / "build.prom", None, None)) as meter:
        report = build_site(project.root, batch="rebatch", observer=meter.observing(recorder))

    # The fake's batches end at their first look: the first batch, then the second (of
    # the first one's two failures).
    assert recorder.counts == [(8, 2, 10), (2, 0, 2)]
    assert recorder.blocks == 10
    assert report.batch is not None and report.batch["batches_sent"] == [
        "msgbatch_000001",
        "msgbatch_000002",
    ]


def test_batch_answers_are_counted_in_the_metrics_as_the_report_counts_them(
    make_site_project: Callable[..., SiteProject],
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    project = batch_site(make_site_project, "openai", 12)
    metrics = project.root / "build.prom"

    assert_ok(project.build("--batch", "--metrics-file", metrics))

    samples = [
        sample
        for family in text_string_to_metric_families(metrics.read_text(encoding="utf-8"))
        for sample in family.samples
    ]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value for s in samples if s.name == name and labels.items() <= s.labels.items()
        )

    totals = project.report()["totals"]
    assert total("trinity_llm_requests_total", outcome="batch") == totals["batched"] == 12
    assert total("trinity_llm_requests_total", outcome="ok") == 0
    assert total("trinity_llm_tokens_total", direction="output") == totals["output_tokens"]
    assert total("trinity_llm_cost_usd_total") == pytest.approx(totals["cost_usd"], abs=1e-6)
    # A batch's answers have no latency of their own: none is observed.
    assert total("trinity_llm_request_duration_seconds_count") == 0


def test_batch_answers_are_remembered_by_the_semantic_cache(
    make_site_project: Callable[..., SiteProject],
) -> None:
    project = batch_site(make_site_project, "openai", 10)
    project.update_settings("llm", temperature=0)
    project.update_settings("cache", semantic={"enabled": True})
    prompt = (
        "Write one short and friendly line about {{ item.name }} for its page on the site, "
        "in plain words that a busy reader will take in at a glance, with no list at all."
    )

    def ask(prompt: str) -> None:
        def change(pages: list[dict[str, Any]]) -> None:
            pages[0]["blocks"]["summary"]["prompt"] = prompt

        project.edit_pages(change)

    ask(prompt)
    assert_ok(project.build("--batch"))
    ask(prompt.replace("busy", "hurried"))
    assert_ok(project.build())

    totals = project.report()["totals"]
    assert project.server.batches.requests_per_batch == [10]
    assert totals["semantic_hits"] > 0, "the batch's prompts were never embedded"
    assert totals["semantic_hits"] + totals["llm_calls"] == 10


def test_the_progress_bar_shows_the_batch_then_the_blocks() -> None:
    import io

    from rich.console import Console

    from trinity.cli import _Progress
    from trinity.report import BlockResult

    console = Console(file=io.StringIO(), width=100, force_terminal=True)
    with _Progress(console, enabled=True) as progress:
        progress.batch_progress(3, 1, 10)
        task = progress._bar.tasks[0]
        assert (task.completed, task.total) == (4, 10)
        assert task.fields["label"] == "Waiting for the batch"
        progress.block_done(BlockResult(page="p", block="b", source="llm"))
        assert task.fields["label"] == "Generating" and task.completed == 1


# --------------------------------------------------------------------------- the wire


def _batched_bodies(project: SiteProject) -> list[object]:
    server = project.server
    if project.provider == "openai":
        return [json.loads(line)["body"] for line in _sent_lines(project)]
    (made,) = [r for r in server.requests if r.path == "/v1/messages/batches"]
    return [item["params"] for item in made.body["requests"]]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_batch_asks_exactly_what_live_calls_ask_with_the_key_kept_out_of_the_ledger(
    make_site_project: Callable[..., SiteProject], provider: str
) -> None:
    secret = "sk-batch-SECRET-0123456789"
    project = batch_site(make_site_project, provider, 4)
    env = {"LLM_API_KEY": secret}

    assert_ok(project.build("--no-cache", env=env))
    live = sorted(json.dumps(r.body, sort_keys=True) for r in project.server.chat_requests)
    project.server.reset()
    assert_ok(project.build("--batch", "--no-cache", env=env))

    assert sorted(json.dumps(b, sort_keys=True) for b in _batched_bodies(project)) == live
    for request in project.server.requests:
        sent = request.headers.get("authorization", "") + request.headers.get("x-api-key", "")
        assert secret in sent, f"{request.method} {request.path} carries the key"
    for path in (project.root / ".cache" / "batches").iterdir():
        assert secret not in path.read_text("utf-8")
    assert secret not in (project.output / ".trinity" / "report.json").read_text("utf-8")
