"""trinity.metrics and the client's listener (llm/events.py): what is counted, how a
report becomes metrics, and the options checked before a build."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from trinity.errors import (
    AuthenticationError,
    BadRequestError,
    BudgetExceeded,
    CircuitBreakerOpen,
    InputError,
    LLMConnectionError,
    LLMError,
    LLMStatusError,
    LLMTimeoutError,
    MalformedResponseError,
    ModelCrashed,
    RateLimitedError,
    ServerError,
)
from trinity.llm.breaker import BreakerPolicy
from trinity.llm.client import AsyncLLMClient
from trinity.llm.events import OUTCOMES, attempt_outcome
from trinity.llm.retry import RetryPolicy
from trinity.llm.settings import LLMSettings, Target
from trinity.llm.types import Usage
from trinity.metrics import BuildMeter, MetricsRequest, _last_success_in, metrics_request
from trinity.report import BlockResult, BuildReport

TARGET = Target("ollama", "m")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RateLimitedError("slow down"), "rate_limited"),
        (ServerError("boom", status=503), "server_error"),
        (BadRequestError("no", status=404), "client_error"),
        (AuthenticationError("who?"), "client_error"),
        (LLMStatusError("timeout", status=408), "client_error"),
        (LLMTimeoutError("late"), "timeout"),
        (LLMConnectionError("refused"), "connection_error"),
        (MalformedResponseError("not JSON"), "malformed"),
        (CircuitBreakerOpen("ollama", retry_at=1.0, remaining=1.0), "breaker_open"),
        (BudgetExceeded("over"), "budget_exceeded"),
        (ModelCrashed("SIGSEGV"), "model_failed"),
        (LLMError("else"), "error"),
    ],
)
def test_every_failure_has_one_outcome_of_the_small_set(error: LLMError, outcome: str) -> None:
    assert attempt_outcome(error) == outcome
    assert outcome in OUTCOMES


# --------------------------------------------------------------------------- the client


class Recorder:
    """A ClientEvents listener that writes down what it hears."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str, int, int, float]] = []
        self.retries: list[Target] = []
        self.breaker: list[tuple[str, str]] = []

    def attempted(
        self, target: Target, outcome: str, seconds: float, usage: Usage | None, cost: float
    ) -> None:
        tokens = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
        self.attempts.append((str(target), outcome, *tokens, cost))

    def retried(self, target: Target) -> None:
        self.retries.append(target)

    def breaker_changed(self, endpoint: str, old: str, new: str) -> None:
        self.breaker.append((old, new))


def answers(*statuses: int) -> httpx.MockTransport:
    """The statuses in turn, then 200s: an Ollama answer of 11 tokens in and 7 out."""
    left = list(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        status = left.pop(0) if left else 200
        if status != 200:
            return httpx.Response(status, json={"error": "injected"})
        body = {
            "model": "m",
            "message": {"role": "assistant", "content": "Hello."},
            "done": True,
            "prompt_eval_count": 11,
            "eval_count": 7,
        }
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handle)


async def no_wait(seconds: float) -> None:
    pass


def client_settings(**changes: object) -> LLMSettings:
    return LLMSettings(
        provider="ollama",
        api_url="http://llm.test:1234",
        model="m",
        retry=RetryPolicy(base_delay=0.0, max_delay=0.0),
        prices={"ollama:m": {"input": 1.0, "output": 2.0}},
        **changes,  # type: ignore[arg-type]
    )


@pytest.mark.anyio
async def test_the_client_tells_its_listener_each_attempt_and_retry() -> None:
    heard = Recorder()
    client = AsyncLLMClient(client_settings(), transport=answers(500), sleep=no_wait, events=heard)
    async with client:
        await client.complete(client.request("Say hi."))
        await client.complete(client.request("Say hi."))  # the memory-less client asks again

    price = (11 * 1.0 + 7 * 2.0) / 1_000_000
    assert heard.attempts == [
        ("ollama:m", "server_error", 0, 0, 0.0),
        ("ollama:m", "ok", 11, 7, pytest.approx(price)),
        ("ollama:m", "ok", 11, 7, pytest.approx(price)),
    ]
    assert heard.retries == [TARGET]


@pytest.mark.anyio
async def test_the_client_tells_its_listener_of_breaker_changes() -> None:
    heard = Recorder()
    settings = client_settings(breaker=BreakerPolicy(failure_threshold=1, timeout=60))
    client = AsyncLLMClient(settings, transport=answers(500, 500), sleep=no_wait, events=heard)
    async with client:
        with pytest.raises(CircuitBreakerOpen):
            await client.complete(client.request("Say hi."))

    assert heard.breaker == [("closed", "open")]
    assert [outcome for _, outcome, *_ in heard.attempts] == ["server_error", "breaker_open"]


# --------------------------------------------------------------------------- the report


def parsed(meter: BuildMeter, status: str = "built") -> dict[str, dict[tuple[str, ...], float]]:
    """The meter's metrics as the textfile shows them, parsed back: sample name ->
    (label values in name order) -> value."""
    from prometheus_client import generate_latest

    class Families:
        def collect(self):  # type: ignore[no-untyped-def]
            return iter(meter.families(status, 1000.0, 900.0))

    text = generate_latest(Families()).decode()  # type: ignore[arg-type]
    samples: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(value for _, value in sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def report_of(blocks: list[BlockResult], cache: dict[str, object]) -> BuildReport:
    report = BuildReport("p", "o", "minimal", "ollama", "m", pages=1, status="built")
    report.blocks = blocks
    report.cache = cache
    report.timings["total"] = 2.5
    return report


def test_blocks_cache_lookups_and_the_build_come_from_the_report() -> None:
    meter = BuildMeter()
    meter.track(
        report_of(
            [
                BlockResult("a", "x", "llm"),
                BlockResult("a", "y", "cache", cache_tier="disk"),
                BlockResult("a", "z", "cache", cache_tier="in-flight"),
                BlockResult("b", "x", "failed"),
                BlockResult("b", "y", "stale", cache_tier="disk"),
            ],
            # Memory had 1 of 10 lookups, Redis 2 of the 9 left, disk 3 of the 7 left.
            {"lookups": 10, "misses": 4, "hits": {"memory": 1, "redis": 2, "disk": 3}},
        )
    )

    metrics = parsed(meter)

    assert metrics["trinity_blocks_total"] == {
        ("generated",): 1,
        ("cache",): 1,
        ("in-flight",): 1,
        ("kept",): 0,
        ("stale",): 1,
        ("failed",): 1,
    }
    assert metrics["trinity_cache_lookups_total"] == {
        ("hit", "memory"): 1,
        ("miss", "memory"): 9,
        ("hit", "redis"): 2,
        ("miss", "redis"): 7,
        ("hit", "disk"): 3,
        ("miss", "disk"): 4,
    }
    assert metrics["trinity_build_duration_seconds"] == {(): 2.5}
    assert metrics["trinity_build_status"] == {
        ("built",): 1,
        ("generated",): 0,
        ("failed",): 0,
        ("interrupted",): 0,
    }
    assert metrics["trinity_build_last_run_timestamp_seconds"] == {(): 1000.0}
    assert metrics["trinity_build_last_success_timestamp_seconds"] == {(): 900.0}


def test_durations_fall_in_their_buckets_and_refused_attempts_take_none() -> None:
    meter = BuildMeter()
    meter.track(report_of([], {}))
    for seconds in (0.05, 0.1, 0.3, 45.0, 500.0):
        meter.attempted(TARGET, "ok", seconds, Usage(1, 1), 0.0)
    meter.attempted(TARGET, "breaker_open", 0.0, None, 0.0)

    buckets = parsed(meter)["trinity_llm_request_duration_seconds_bucket"]

    # Labels sort as le, model, provider.
    assert buckets[("0.1", "m", "ollama")] == 2  # an upper bound is inclusive
    assert buckets[("0.5", "m", "ollama")] == 3
    assert buckets[("30.0", "m", "ollama")] == 3
    assert buckets[("60.0", "m", "ollama")] == 4
    assert buckets[("120.0", "m", "ollama")] == 4
    assert buckets[("+Inf", "m", "ollama")] == 5
    requests = parsed(meter)["trinity_llm_requests_total"]
    assert requests == {("m", "ok", "ollama"): 5, ("m", "breaker_open", "ollama"): 1}
    # A model asked has its retries, tokens and cost, at 0 if need be.
    assert parsed(meter)["trinity_llm_retries_total"] == {("m", "ollama"): 0}


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "url",
    [
        "localhost:9091",
        "ftp://localhost:9091",
        "file:///tmp/gateway",
        "http://",
        "http://localhost:port",
        "http://localhost:9091/?job=x",
        "",
    ],
)
def test_a_push_url_that_is_not_a_gateways_is_bad_input(url: str) -> None:
    with pytest.raises(InputError) as caught:
        metrics_request(None, url)
    assert caught.value.argument == "metrics_push"


def test_a_push_url_keeps_its_credentials_apart() -> None:
    request = metrics_request(None, "https://ci:s%40cret@push.example:9091/base", "runner-1")

    assert request == MetricsRequest(
        None, "https://push.example:9091/base", "runner-1", ("ci", "s@cret")
    )
    assert "cret" not in repr(request)
    assert request.grouping_key == {"instance": "runner-1"}


@pytest.mark.parametrize(
    ("file", "push", "instance", "dry_run", "argument"),
    [
        (None, None, "runner-1", False, "metrics_instance"),
        (None, "http://localhost:9091", "two words", False, "metrics_instance"),
        (None, "http://localhost:9091", "", False, "metrics_instance"),
        (Path("m.prom"), None, None, True, "metrics_file"),
        (None, "http://localhost:9091", None, True, "metrics_push"),
        (Path(), None, None, False, "metrics_file"),
    ],
)
def test_metrics_options_that_cannot_be_met_are_bad_input(
    file: Path | None, push: str | None, instance: str | None, dry_run: bool, argument: str
) -> None:
    with pytest.raises(InputError) as caught:
        metrics_request(file, push, instance, dry_run=dry_run)
    assert caught.value.argument == argument


def test_no_metrics_asked_for_is_none() -> None:
    assert metrics_request(None, None) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        (b"trinity_build_last_success_timestamp_seconds 1700000000.5\n", 1700000000.5),
        (b"trinity_build_last_success_timestamp_seconds NaN\n", None),
        (b"not { the text format\n", None),
        (b"\xff\xfe binary\n", None),
    ],
)
def test_the_last_success_is_read_back_only_from_a_file_of_ours(
    tmp_path: Path, content: bytes | None, expected: float | None
) -> None:
    path = tmp_path / "trinity.prom"
    if content is not None:
        path.write_bytes(content)
    assert _last_success_in(path) == expected


def test_a_fifo_is_not_read_for_the_last_success(tmp_path: Path) -> None:
    path = tmp_path / "trinity.prom"
    os.mkfifo(path)  # opened for reading, it would wait for a writer forever
    assert _last_success_in(path) is None
