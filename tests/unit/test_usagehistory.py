"""The usage history kept with the cache: merged, bounded, untrusted, written atomically."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from trinity import usagehistory
from trinity.llm.types import LLMRequest
from trinity.lock import FolderLock
from trinity.plan import Job
from trinity.report import BlockResult
from trinity.site import Block, Page
from trinity.usagehistory import (
    HISTORY_FILE,
    MAX_BYTES,
    MAX_ENTRIES,
    UsageEntry,
    UsageHistory,
    UsageRecorder,
    read_history,
    record_usage,
)


def entry(block: str = "intro", model: str = "m", **counts: int) -> UsageEntry:
    values = {"calls": 1, "input_tokens": 100, "output_tokens": 50, "prompt_chars": 400}
    values.update(counts)
    return UsageEntry(model=model, block=block, format="markdown", max_tokens=300, **values)


def good_data(**changes: Any) -> dict[str, Any]:
    return {**vars(entry()), **changes}


def write(cache: Path, data: Any) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / HISTORY_FILE).write_text(json.dumps(data), "utf-8")


def test_what_is_recorded_is_read_back(tmp_path: Path) -> None:
    record_usage(tmp_path, [entry("intro"), entry("about")])

    assert list(read_history(tmp_path)) == [entry("intro"), entry("about")]


def test_a_newer_build_replaces_the_entry_of_its_kind_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    record_usage(tmp_path, [entry("intro"), entry("about")])
    record_usage(tmp_path, [entry("intro", output_tokens=7)])

    assert list(read_history(tmp_path)) == [entry("intro", output_tokens=7), entry("about")]


def test_the_history_is_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    record_usage(tmp_path, [entry(f"old{n}") for n in range(MAX_ENTRIES)])
    record_usage(tmp_path, [entry("new")])

    history = list(read_history(tmp_path))

    assert len(history) == MAX_ENTRIES
    assert history[0].block == "new"
    assert "old0" in {e.block for e in history}
    assert f"old{MAX_ENTRIES - 1}" not in {e.block for e in history}


def test_no_history_is_an_empty_one(tmp_path: Path) -> None:
    assert len(read_history(tmp_path / "missing")) == 0


@pytest.mark.parametrize(
    "data",
    [
        "[not json",
        {"version": 2, "entries": [vars(entry())]},
        {"version": 1, "entries": {"intro": vars(entry())}},
        {"version": 1},
        [vars(entry())],
    ],
    ids=["not-json", "other-version", "entries-not-a-list", "no-entries", "not-an-object"],
)
def test_a_history_that_is_not_ours_is_an_empty_one(tmp_path: Path, data: Any) -> None:
    if isinstance(data, str):
        tmp_path.joinpath(HISTORY_FILE).write_text(data, "utf-8")
    else:
        write(tmp_path, data)

    assert len(read_history(tmp_path)) == 0


@pytest.mark.parametrize(
    "bad",
    [
        good_data(calls=True),
        good_data(calls=0),
        good_data(input_tokens=-1),
        good_data(output_tokens="50"),
        good_data(output_tokens=1.5),
        good_data(prompt_chars=10**40),
        good_data(block=""),
        good_data(model="m" * 1000),
        good_data(format=None),
        good_data(extra=1),
        good_data(cached_input_tokens=80, cache_write_tokens=30),
        {k: v for k, v in good_data().items() if k != "calls"},
        "entry",
        None,
    ],
)
def test_an_entry_that_is_not_exactly_ours_is_skipped(tmp_path: Path, bad: Any) -> None:
    write(tmp_path, {"version": 1, "entries": [bad, good_data(block="about")]})

    assert [e.block for e in read_history(tmp_path)] == ["about"]


def test_a_repeated_kind_counts_once(tmp_path: Path) -> None:
    write(tmp_path, {"version": 1, "entries": [good_data(), good_data(output_tokens=9999)]})

    assert list(read_history(tmp_path)) == [entry()]


def test_a_huge_history_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tmp_path.joinpath(HISTORY_FILE).write_bytes(b" " * (MAX_BYTES + 1))

    with caplog.at_level(logging.WARNING):
        assert len(read_history(tmp_path)) == 0
    assert "too large" in caplog.text


def test_two_builds_recording_at_once_both_land(tmp_path: Path) -> None:
    def build(number: int) -> None:
        for step in range(5):
            record_usage(tmp_path, [entry(f"b{number}-{step}")])

    threads = [threading.Thread(target=build, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {e.block for e in read_history(tmp_path)} == {
        f"b{n}-{s}" for n in range(6) for s in range(5)
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{HISTORY_FILE}")] == []


def test_a_lock_held_too_long_is_a_warning_not_a_stalled_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_usage(tmp_path, [entry("old")])
    monkeypatch.setattr(usagehistory, "LOCK_WAIT", 0.05)
    holder = FolderLock(tmp_path / ".usage-history.lock", holder="another build", doing="x")
    assert holder.try_acquire()
    try:
        with caplog.at_level(logging.WARNING):
            record_usage(tmp_path, [entry("new")])
    finally:
        holder.release()

    assert "did not record the usage history" in caplog.text
    assert [e.block for e in read_history(tmp_path)] == ["old"]


def test_a_cache_folder_that_cannot_be_written_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")

    with caplog.at_level(logging.WARNING):
        record_usage(blocked / "cache", [entry()])

    assert "could not record the usage history" in caplog.text


def job(name: str = "intro", max_tokens: int = 300) -> Job:
    block = Block(name=name, prompt="Say hi.", max_tokens=max_tokens)
    page = Page(slug="index", title="Home", template="index.html", blocks=(block,))
    request = LLMRequest.from_prompt(
        "Say hi.", model="m", system="Be brief.", temperature=0.2, max_tokens=max_tokens
    )
    return Job(page=page, block=block, request=request, key="k")


def result(source: str = "llm", **values: Any) -> BlockResult:
    numbers = {"model": "m-2025", "input_tokens": 10, "output_tokens": 4, **values}
    return BlockResult(page="index", block="intro", source=source, **numbers)  # type: ignore[arg-type]


def test_a_build_sums_blocks_alike_under_the_model_they_asked_for() -> None:
    recorder = UsageRecorder()
    recorder.add_block(job(), result())
    recorder.add_block(job(), result(output_tokens=6))
    recorder.add_block(job("about"), result())

    assert recorder.entries() == [
        UsageEntry("m", "intro", "markdown", 300, 2, 20, 10, 2 * len("Be brief.Say hi.")),
        UsageEntry("m", "about", "markdown", 300, 1, 10, 4, len("Be brief.Say hi.")),
    ]


def test_what_the_prompt_cache_served_is_recorded_within_the_input() -> None:
    recorder = UsageRecorder()
    recorder.add_block(job(), result(cached_input_tokens=6, cache_write_tokens=99))

    (recorded,) = recorder.entries()
    assert (recorded.cached_input_tokens, recorded.cache_write_tokens) == (6, 4)


@pytest.mark.parametrize("source", ["cache", "failed", "stale"])
def test_blocks_no_model_answered_are_not_recorded(source: str) -> None:
    recorder = UsageRecorder()
    recorder.add_block(job(), result(source))

    assert recorder.entries() == []


def test_a_merged_history_puts_the_newest_first() -> None:
    history = UsageHistory([entry("a"), entry("b")]).merged([entry("c"), entry("a", calls=3)])

    assert [(e.block, e.calls) for e in history] == [("c", 1), ("a", 3), ("b", 1)]
