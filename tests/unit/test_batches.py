"""The batch APIs' parts that need no server: the ledger, the runner's polling (with a
fake API and an injected sleep), the results URL check, and `llm.batch` settings."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from trinity.config import load_settings
from trinity.errors import EXIT_BAD_INPUT, BadRequestError, ConfigError, ServerError
from trinity.llm.batches.api import BatchCounts, BatchHTTP, BatchResult, BatchStatus
from trinity.llm.batches.ledger import BatchLedger, PendingBatch, custom_id, endpoint_id
from trinity.llm.batches.runner import MAX_FAILED_LOOKS, BatchRunner
from trinity.llm.providers import ProviderAdapter, get_adapter
from trinity.llm.settings import BatchSettings, Endpoint
from trinity.llm.types import LLMRequest

WriteSettings = Callable[[str], Path]
ENDPOINT = endpoint_id("openai", "http://127.0.0.1:1")


def pending(batch_id: str = "batch_1", ids: Sequence[str] = ("a" * 64,)) -> PendingBatch:
    return PendingBatch("openai", ENDPOINT, batch_id, frozenset(ids), 1)


# --------------------------------------------------------------------------- the ledger


def test_the_ledger_keeps_batches_across_runs_in_a_private_file(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "batches"
    ledger = BatchLedger(folder)
    ledger.add(pending("batch_1"))
    ledger.add(pending("batch_2", ["b" * 64, "c" * 64]))
    ledger.remove(pending("batch_1"))

    again = BatchLedger(folder)

    assert again.batches == [pending("batch_2", ["b" * 64, "c" * 64])]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "pending.json").stat().st_mode) == 0o600


def test_builds_sharing_the_cache_folder_keep_each_others_batches(tmp_path: Path) -> None:
    # Two shards of a site, from one project at once: each read the ledger before the
    # other wrote it; neither write may drop the other's batch.
    folder = tmp_path / "batches"
    first, second = BatchLedger(folder), BatchLedger(folder)
    first.add(pending("batch_1"))
    second.add(pending("batch_2", ["b" * 64]))
    first.add(pending("batch_3", ["c" * 64]))
    second.remove(pending("batch_1"))

    assert {b.batch_id for b in BatchLedger(folder).batches} == {"batch_2", "batch_3"}


def test_changes_from_many_threads_are_all_kept(tmp_path: Path) -> None:
    import threading

    folder = tmp_path / "batches"

    def send(number: int) -> None:
        BatchLedger(folder).add(pending(f"batch_{number}", [f"{number:064x}"]))

    threads = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(BatchLedger(folder).batches) == 12


ENTRY: dict[str, Any] = {
    "provider": "openai",
    "endpoint": ENDPOINT,
    "id": "batch_1",
    "custom_ids": ["a" * 64],
    "round": 1,
}


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "ollama"},
        {"endpoint": "http://evil.example"},
        {"id": "../../etc/passwd"},
        {"id": "batch?x=1"},
        {"id": ""},
        {"custom_ids": []},
        {"custom_ids": ["not hex"]},
        {"custom_ids": ["A" * 64]},
        {"custom_ids": "a" * 64},
        {"round": True},
        {"round": 0},
        {"round": "1"},
    ],
)
def test_a_malformed_ledger_entry_is_dropped_with_a_warning(
    tmp_path: Path, change: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    good = {**ENTRY, "id": "batch_good"}
    data = {"version": 1, "batches": [{**ENTRY, **change}, good]}
    (tmp_path / "pending.json").write_text(json.dumps(data))

    with caplog.at_level(logging.WARNING):
        ledger = BatchLedger(tmp_path)

    assert [b.batch_id for b in ledger.batches] == ["batch_good"]
    assert "malformed; dropped" in caplog.text


def test_a_ledger_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    ledger = BatchLedger(blocker / "batches")

    with caplog.at_level(logging.WARNING):
        ledger.add(pending())

    assert "will send them again" in caplog.text
    assert ledger.batches == [pending()]


def test_a_custom_id_is_a_digest_of_the_cache_key() -> None:
    assert custom_id("v1:abc") == custom_id("v1:abc") != custom_id("v1:abd")
    assert len(custom_id("v1:abc")) == 64


# --------------------------------------------------------------------------- the runner


class FakeAPI:
    """A batch API whose statuses are scripted, one per look."""

    provider = "openai"
    adapter: ProviderAdapter = get_adapter("openai")

    def __init__(self, looks: list[BatchStatus | Exception]) -> None:
        self.looks = looks
        self.sent: list[Sequence[tuple[str, LLMRequest]]] = []

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        self.sent.append(items)
        return "batch_1"

    async def status(self, batch_id: str) -> BatchStatus:
        look = self.looks.pop(0)
        if isinstance(look, Exception):
            raise look
        return look

    async def results(self, status: BatchStatus, expected: int) -> list[BatchResult]:
        return [BatchResult("a" * 64, error="x"), BatchResult("f" * 64, error="stray")]


def status(ended: bool, done: int = 0) -> BatchStatus:
    return BatchStatus("batch_1", "x", ended, BatchCounts(1, done, 0))


def runner(
    api: FakeAPI, tmp_path: Path, sleeps: list[float], seen: list[BatchCounts]
) -> BatchRunner:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return BatchRunner(
        api,
        BatchLedger(tmp_path),
        ENDPOINT,
        poll_interval=7.0,
        sleep=sleep,
        on_progress=seen.append,
    )


@pytest.mark.anyio
async def test_polling_sleeps_the_interval_and_tells_the_counts(tmp_path: Path) -> None:
    sleeps: list[float] = []
    seen: list[BatchCounts] = []
    api = FakeAPI([status(False), ServerError("busy", status=503), status(True, 1)])
    batches = runner(api, tmp_path, sleeps, seen)

    (ended,) = await batches.wait([pending()])

    assert ended.status is not None and ended.status.ended
    assert sleeps == [7.0, 7.0]
    assert seen[-1] == BatchCounts(1, 1, 0)
    results = await batches.read(ended)
    assert [r.custom_id for r in results] == ["a" * 64], "the stray id is left out"


@pytest.mark.anyio
async def test_an_unknown_batch_is_dropped_and_a_refusal_raised(tmp_path: Path) -> None:
    api = FakeAPI([BadRequestError("gone", status=404)])
    batches = runner(api, tmp_path, [], [])
    batches.ledger.add(pending())

    (ended,) = await batches.wait([pending()])

    assert ended.status is None
    assert batches.ledger.batches == []
    refused = FakeAPI([BadRequestError("no", status=400)])
    with pytest.raises(BadRequestError):
        await runner(refused, tmp_path, [], []).wait([pending()])


@pytest.mark.anyio
async def test_a_server_failing_every_look_ends_the_wait(tmp_path: Path) -> None:
    failures: list[BatchStatus | Exception] = [
        ServerError("down", status=500) for _ in range(MAX_FAILED_LOOKS + 1)
    ]
    batches = runner(FakeAPI(failures), tmp_path, [], [])
    batches.ledger.add(pending())

    with pytest.raises(ServerError):
        await batches.wait([pending()])
    assert batches.ledger.batches == [pending()], "kept for the next build"


# --------------------------------------------------------------------------- results_url


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("https://api.example.com/v1/messages/batches/b/results", "/v1/messages/batches/b/results"),
        ("https://api.example.com:443/v1/x?page=2", "/v1/x?page=2"),
        ("https://evil.example/v1/messages/batches/b/results", None),
        ("http://api.example.com/v1/x", None),
        ("https://api.example.com:8443/v1/x", None),
        ("https://api.example.com.evil.example/v1/x", None),
        ("//evil.example/v1/x", None),
        ("not a url at all", None),
    ],
)
def test_a_url_is_followed_only_on_the_configured_endpoint(url: str, path: str | None) -> None:
    endpoint = Endpoint("anthropic", "https://api.example.com")
    wire = BatchHTTP(endpoint, httpx.AsyncClient(), timeout=1, max_bytes=1024, api_key=None)
    assert wire.same_endpoint(url) == path


# --------------------------------------------------------------------------- settings


def test_batch_settings_are_read_and_checked(write_settings: WriteSettings) -> None:
    project = write_settings("site: {title: T}\nllm:\n  batch: {poll_interval: 5, rounds: 2}\n")
    assert load_settings(project, environ={}).llm.batch == BatchSettings(5.0, 2)

    for bad in ("poll_interval: 0", "rounds: 0", "rounds: 11", "poll: 3"):
        project = write_settings(f"site: {{title: T}}\nllm:\n  batch: {{{bad}}}\n")
        with pytest.raises(ConfigError) as caught:
            load_settings(project, environ={})
        assert caught.value.exit_code == EXIT_BAD_INPUT
        assert "llm.batch" in str(caught.value)
