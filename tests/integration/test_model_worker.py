"""The embedded model's worker process, for real: started, asked, crashed, cancelled.

The factories in tests/modelfactories.py stand in for llama.cpp inside a real child
process; the crashing ones die of a real SIGSEGV.
"""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path

import anyio
import pytest

from tests.fakechild import fake_python
from trinity.errors import ModelCrashed, ModelFailed
from trinity.llm.client import AsyncLLMClient
from trinity.llm.providers.local import LocalBackend, generate_once
from trinity.llm.providers.worker import (
    ModelWorker,
    crash_error,
    decode_request,
    decode_response,
    encode_request,
)
from trinity.llm.settings import LLMSettings
from trinity.llm.types import CompletionFrame, LLMRequest, LLMResponse

DOCUMENT = "Mara\n\n# Home\n\n## Intro\n\n"
FRAME = CompletionFrame(DOCUMENT + "Mara", lead="Mara", stop=("\n\n",))
ECHO = "tests.modelfactories:echo"


def settings(tmp_path: Path) -> LLMSettings:
    return LLMSettings(provider="local", api_url="", base_dir=tmp_path, max_tokens=16)


def request(settings: LLMSettings, lead: str = "Mara") -> LLMRequest:
    client = AsyncLLMClient(settings)
    return client.request("Write.", frame=CompletionFrame(DOCUMENT + lead, lead, FRAME.stop))


def test_a_request_survives_the_trip_to_the_worker_and_back(tmp_path: Path) -> None:
    original = LLMRequest.from_prompt(
        "p",
        model="m",
        system="s",
        temperature=0.3,
        max_tokens=9,
        top_p=0.5,
        response_format="json",
        json_schema={"type": "object"},
        options={"seed": 3},
        frame=FRAME,
    )
    assert decode_request(encode_request(original)) == original


@pytest.mark.parametrize(
    "reply", [None, {}, [], {"text": 3}, {"text": "t", "input_tokens": "many"}]
)
def test_a_malformed_reply_from_the_worker_is_a_model_failure(reply: object) -> None:
    with pytest.raises(ModelFailed, match="malformed"):
        decode_response(reply)


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (-signal.SIGSEGV, "crashed (SIGSEGV) in llama.cpp; most likely llama-cpp-python"),
        (-signal.SIGILL, "crashed (SIGILL)"),
        (-signal.SIGKILL, "killed (SIGKILL); most likely the system ran out of memory"),
        (-signal.SIGTERM, "stopped by SIGTERM"),
        (3, "exited unexpectedly (exit code 3)"),
    ],
)
def test_each_way_of_dying_is_told_with_its_likely_cause(returncode: int, expected: str) -> None:
    crash = crash_error(returncode)
    assert expected in str(crash)
    assert crash.returncode == returncode
    assert str(crash).startswith(crash.summary)


def test_generate_once_answers_from_a_worker(tmp_path: Path) -> None:
    assert generate_once(settings(tmp_path), ECHO).startswith("is written by a model")


def test_generate_once_reports_a_crash_without_restarting(tmp_path: Path) -> None:
    with pytest.raises(ModelCrashed, match=r"SIGSEGV") as caught:
        generate_once(settings(tmp_path), "tests.modelfactories:segfaults_when_generating")
    assert caught.value.returncode == -signal.SIGSEGV


def test_a_model_that_cannot_load_is_not_started_again(tmp_path: Path) -> None:
    config = settings(tmp_path)
    worker = ModelWorker(config, "tests.modelfactories:cannot_load")

    async def main() -> list[str]:
        messages = []
        for _ in range(3):
            with pytest.raises(ModelFailed) as caught:
                await worker.generate(request(config))
            messages.append(str(caught.value))
        await worker.aclose()
        return messages

    messages = anyio.run(main)
    assert messages == ["the embedded model failed: cannot load the model: not a GGUF file"] * 3
    assert worker.started == 1


def test_a_dead_model_fails_later_requests_at_once_without_a_third_process(
    tmp_path: Path,
) -> None:
    config = settings(tmp_path)
    worker = ModelWorker(config, "tests.modelfactories:segfaults_when_generating")

    async def main() -> int:
        failures = 0
        for _ in range(4):
            with pytest.raises(ModelCrashed):
                await worker.generate(request(config))
            failures += 1
        await worker.aclose()
        return failures

    assert anyio.run(main) == 4
    assert worker.started == 2  # the first, and its one restart


def test_a_cancelled_requests_late_answer_is_dropped_not_handed_to_the_next(
    tmp_path: Path,
) -> None:
    """The answer to a cancelled request must never be read as the next request's; with
    ids on the wire it is dropped, and the worker (its model loaded) lives on."""
    config = settings(tmp_path)
    worker = ModelWorker(config, "tests.modelfactories:slow")

    async def main() -> str:
        await worker.ready()
        with anyio.move_on_after(0.5):
            await worker.generate(request(config, lead="First"))
        answer = await worker.generate(request(config, lead="Second"))
        await worker.aclose()
        return answer.text

    assert anyio.run(main).startswith("Second")
    assert worker.started == 1


def test_the_wait_for_the_model_is_logged_apart_from_its_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first request waits for the worker to start and load; that is not latency."""
    config = settings(tmp_path)
    backend = LocalBackend(config, ECHO)

    async def main() -> None:
        async with AsyncLLMClient(config, backend=backend) as client:
            await client.complete(request(config))
        await backend.aclose()

    with caplog.at_level(logging.INFO, logger="trinity"):
        anyio.run(main)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "llm_request"]
    assert record.wait_ms > record.latency_ms  # type: ignore[attr-defined]


def test_a_crash_mid_batch_fails_only_the_blocks_still_owed(tmp_path: Path) -> None:
    """Six blocks in flight; each worker answers two, then dies. The first two answers
    stand, the four it owed go to the one restart, which answers two of them: only the
    last two fail, and so does every block after, without a third worker."""
    config = settings(tmp_path)
    worker = ModelWorker(config, "tests.modelfactories:crashes_after_two")
    results: dict[int, str | ModelCrashed] = {}

    async def one(n: int) -> None:
        try:
            results[n] = (await worker.generate(request(config, lead=f"Block{n}"))).text
        except ModelCrashed as crash:
            results[n] = crash

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for n in range(6):
                group.start_soon(one, n)
        with pytest.raises(ModelCrashed, match=r"SIGSEGV"):
            await worker.generate(request(config))
        await worker.aclose()

    anyio.run(main)
    answered = {n: text for n, text in results.items() if isinstance(text, str)}
    assert len(answered) == 4
    for n, text in answered.items():
        assert text.startswith(f"Block{n} is written by a model")
    crashes = [result for result in results.values() if isinstance(result, ModelCrashed)]
    assert len(crashes) == 2
    assert all(crash.returncode == -signal.SIGSEGV for crash in crashes)
    assert worker.started == 2


def test_answers_reach_their_own_callers_in_any_order_and_strays_are_dropped(
    tmp_path: Path,
) -> None:
    """A child that answers last first, with an answer for an id nobody asked about, one
    without an id, and nonsense for how long it kept each waiting."""
    config = settings(tmp_path)
    worker = ModelWorker(config, "reverse", python=fake_python(tmp_path))
    leads = ("One", "Two", "Three")
    answers: dict[str, LLMResponse] = {}

    async def one(lead: str) -> None:
        answers[lead] = await worker.generate(request(config, lead=lead))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for lead in leads:
                group.start_soon(one, lead)
        await worker.aclose()

    anyio.run(main)
    assert {lead: answers[lead].text for lead in leads} == {
        lead: f"{lead} answered by a fake worker." for lead in leads
    }
    queued = [answers[lead].queued for lead in leads]
    assert all(math.isfinite(seconds) and seconds >= 0 for seconds in queued)
    assert max(queued) >= 0.25  # the one sane figure the child gave
    assert worker.started == 1


@pytest.mark.parametrize("behaviour", ["oversized", "not-json"])
def test_a_worker_that_breaks_the_protocol_is_stopped(tmp_path: Path, behaviour: str) -> None:
    config = settings(tmp_path)
    worker = ModelWorker(config, behaviour, python=fake_python(tmp_path), restarts=0)

    async def main() -> None:
        with pytest.raises(ModelCrashed, match="worker sent a malformed message"):
            await worker.generate(request(config))
        with pytest.raises(ModelCrashed, match="malformed"):  # and it stays stopped
            await worker.generate(request(config))
        await worker.aclose()

    anyio.run(main)
    assert worker.started == 1
