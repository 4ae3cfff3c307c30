"""A build's Prometheus metrics: counted while it runs, written or pushed when it ends.

A build is a batch job, so its metrics are pushed rather than scraped: `--metrics-file`
writes node_exporter's textfile format (into a temporary file beside it, then renamed,
so the collector never reads half a file) and `--metrics-push` sends them to a
Pushgateway, as job `trinity` (grouped by `--metrics-instance` when given). Both go
through the official `prometheus-client`, imported only when metrics are written: a build
that asked for none never loads it, and pays nothing while it runs (the client's
`events` listener is None).

Where the numbers come from:

- each attempt, retry and breaker change, from the client (`BuildMeter` is its
  `trinity.llm.events.ClientEvents` listener): requests by outcome, their durations,
  tokens and cost;
- everything else from the build report when the build ends (blocks by source, cache
  lookups, the build's duration and status), so the two always agree; a site kept
  unchanged (trinity.unchanged) has a report and no client, and gets these alone.

Metrics are written and pushed also when the build failed or was interrupted (when an
operator needs them most), and for a kept site. `trinity_build_last_success_timestamp_seconds`
is set only by a build that succeeded; one that did not keeps the last success's value
(read back from the file it replaces; pushed with POST, which leaves the Pushgateway's
other metrics of the group, that one included, in place), so an alert on its age fires
when builds stop succeeding. A Pushgateway that is down or refuses is one warning; a
metrics file that cannot be written is one line and exit 1 after a build that succeeded
(the site stays), and a warning after one that did not (its own error is what counts).
The README lists every metric.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from trinity.errors import InputError, ResourceError
from trinity.llm.events import UNTIMED
from trinity.llm.settings import Target
from trinity.llm.types import Usage
from trinity.logs import correlation, get_logger
from trinity.messages import one_line, shown_path
from trinity.oserrors import os_reason, resource_error
from trinity.report import BlockResult, BuildObserver, BuildReport
from trinity.urls import shown_url
from trinity.version import __version__

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = get_logger(__name__)

PUSH_JOB = "trinity"
# A Pushgateway answers in milliseconds; one that hangs must not hold a finished build.
PUSH_TIMEOUT = 10.0
# Request durations, seconds: LLM calls take from a tenth of a second to minutes.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
BUILD_STATUSES = ("built", "generated", "failed", "interrupted")
# The statuses of a build that did what it was asked: a site, or (`--generate-only`, a
# shard) the answers cached.
SUCCEEDED = frozenset({"built", "generated"})
# A block's source, as the metrics name it: the report's source, a cache answer told
# apart by where it came from (an identical request in flight, or a kept site's page).
# The tokens counted, by direction: cached_input and cache_write are parts of input (what
# the provider's prompt cache read and wrote), priced at their own rates.
TOKEN_DIRECTIONS = ("input", "output", "cached_input", "cache_write")
BLOCK_SOURCES = ("generated", "cache", "in-flight", "kept", "stale", "failed")
LAST_SUCCESS = "trinity_build_last_success_timestamp_seconds"
# A metrics file read back for its last success is Trinity's own, and small.
_MOST_READ_BACK = 1 << 20
_INSTANCE_LIMIT = 128


@dataclass(frozen=True)
class MetricsRequest:
    """Where a build's metrics go: a file, a Pushgateway (its URL without credentials,
    which are kept apart and never shown), or both."""

    file: Path | None = None
    push: str | None = None
    instance: str | None = None
    credentials: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def grouping_key(self) -> dict[str, str]:
        return {"instance": self.instance} if self.instance else {}


def metrics_request(
    file: Path | None,
    push: str | None,
    instance: str | None = None,
    *,
    dry_run: bool = False,
) -> MetricsRequest | None:
    """The `--metrics-file`, `--metrics-push` and `--metrics-instance` options, checked
    before anything is built (InputError naming the option); None when none was given."""
    if file is None and push is None:
        if instance is not None:
            raise InputError("only goes with --metrics-push", argument="metrics_instance")
        return None
    if dry_run:
        raise InputError(
            "a dry run builds nothing to measure; leave it out or build",
            argument="metrics_file" if file is not None else "metrics_push",
        )
    if file is not None and file.is_dir():
        raise InputError(
            f"{shown_path(file)} is a folder; name a file (such as trinity.prom)",
            argument="metrics_file",
        )
    if push is None:
        return MetricsRequest(file=file)
    if instance is not None:
        _check_instance(instance)
    url, credentials = _gateway(push)
    return MetricsRequest(file, url, instance, credentials)


def _gateway(url: str) -> tuple[str, tuple[str, str] | None]:
    """A Pushgateway's URL (http or https, a host, maybe a port and a path) without its
    user and password, and those apart; anything else is bad input."""
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (read for its check: a port that is not a number raises)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(
            f"'{shown}' is not an http(s) URL of a Pushgateway (such as http://localhost:9091)",
            argument="metrics_push",
        )
    if parts.query or parts.fragment:
        raise InputError(
            f"'{shown}' has a query or a fragment; give the Pushgateway's base URL",
            argument="metrics_push",
        )
    userinfo, _, host = parts.netloc.rpartition("@")
    credentials = None
    if userinfo:
        user, _, password = userinfo.partition(":")
        credentials = (unquote(user), unquote(password))
    return parts._replace(netloc=host).geturl(), credentials


def _check_instance(instance: str) -> None:
    if not instance or len(instance) > _INSTANCE_LIMIT or not instance.isprintable():
        raise InputError(
            f"must be 1 to {_INSTANCE_LIMIT} printable characters", argument="metrics_instance"
        )
    if any(character.isspace() for character in instance):
        raise InputError("may not hold spaces", argument="metrics_instance")


# --------------------------------------------------------------------------- counting

Labels = tuple[str, ...]


class _Histogram:
    """Observations of one label set: counts per bucket (the last for +Inf), and a sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        # As Go writes floats, and Prometheus reads `le`: 0.1, 1.0, 120.0.
        bounds = [*(repr(bound) for bound in DURATION_BUCKETS), "+Inf"]
        running, buckets = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            buckets.append((bound, float(running)))
        return buckets


class BuildMeter:
    """Counts what one build's client does (a `ClientEvents` listener), hears the
    build's report (`observing`, `track`), and turns both into Prometheus metrics.

    Plain dictionaries while the build runs: prometheus-client is imported only when
    the metrics are written.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.report: BuildReport | None = None
        self.requests: defaultdict[Labels, int] = defaultdict(int)
        self.durations: defaultdict[Labels, _Histogram] = defaultdict(_Histogram)
        self.tokens: defaultdict[Labels, int] = defaultdict(int)
        self.cost: defaultdict[Labels, float] = defaultdict(float)
        self.retries: defaultdict[Labels, int] = defaultdict(int)
        self.breaker: defaultdict[Labels, int] = defaultdict(int)

    @property
    def events(self) -> BuildMeter:
        """The client's listener: this meter."""
        return self

    # ------------------------------------------------------------------ ClientEvents

    def attempted(
        self, target: Target, outcome: str, seconds: float, usage: Usage | None, cost: float
    ) -> None:
        model = (target.provider, target.model)
        self.requests[(*model, outcome)] += 1
        if outcome not in UNTIMED:
            self.durations[model].observe(max(seconds, 0.0))
        if usage is not None:
            self.tokens[(*model, "input")] += usage.input_tokens
            self.tokens[(*model, "output")] += usage.output_tokens
            # Parts of the input, priced at their own rates: the provider's prompt cache.
            self.tokens[(*model, "cached_input")] += usage.cached_input_tokens
            self.tokens[(*model, "cache_write")] += usage.cache_write_tokens
            self.cost[model] += cost

    def retried(self, target: Target) -> None:
        self.retries[(target.provider, target.model)] += 1

    def breaker_changed(self, endpoint: str, old: str, new: str) -> None:
        self.breaker[(endpoint, new)] += 1

    # ------------------------------------------------------------------ the report

    def track(self, report: BuildReport | None) -> None:
        """The build's report: its metrics are drawn from it when the build ends."""
        if report is not None:
            self.report = report

    def observing(self, observer: BuildObserver) -> BuildObserver:
        """`observer`, with this meter hearing the report the build fills in."""
        return _Observing(self, observer)

    # ------------------------------------------------------------------ metrics

    def families(self, status: str, now: float, last_success: float | None) -> list[Metric]:
        """Every metric of the build, which ended with `status` at `now`; the last
        success's time only when given."""
        report = self.report
        assert report is not None, "metrics are drawn from a report"
        families = [*self._client_families(), *_report_families(report, status, now)]
        if last_success is not None:
            families.append(
                _gauge(
                    LAST_SUCCESS, "When a build last succeeded (Unix time).", [], {(): last_success}
                )
            )
        return families

    def _client_families(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import HistogramMetricFamily

        # Every model asked has its tokens, cost and retries, if only 0: a series that is
        # there at 0 is one a query can read, and one a POST to a Pushgateway replaces.
        asked = {labels[:2] for labels in self.requests}
        tokens = _with_zeros(self.tokens, {(*m, d) for m in asked for d in TOKEN_DIRECTIONS})
        model = ["provider", "model"]
        yield _counter(
            "trinity_llm_requests",
            "Requests sent to models, one per attempt, by outcome.",
            [*model, "outcome"],
            self.requests,
        )
        durations = HistogramMetricFamily(
            "trinity_llm_request_duration_seconds",
            "How long an attempt took (an answer's without its wait for a rate limit).",
            labels=model,
        )
        for labels, histogram in sorted(self.durations.items()):
            durations.add_metric(list(labels), histogram.cumulative(), histogram.sum)
        yield durations
        yield _counter(
            "trinity_llm_tokens",
            "Tokens of the answers models gave, by direction (input, output).",
            [*model, "direction"],
            tokens,
        )
        yield _counter(
            "trinity_llm_cost_usd",
            "What the answers models gave cost, in USD.",
            model,
            _with_zeros(self.cost, asked),
        )
        yield _counter(
            "trinity_llm_retries",
            "Failed attempts tried again (429s waited out included).",
            model,
            _with_zeros(self.retries, asked),
        )
        yield _counter(
            "trinity_llm_breaker_transitions",
            "Changes of an endpoint's circuit breaker, by the state it went to.",
            ["endpoint", "to_state"],
            self.breaker,
        )

    # ------------------------------------------------------------------ emission

    def emit(self, request: MetricsRequest, error: BaseException | None = None) -> None:
        """Push and write the metrics of the build, which ended with `error` (None: it
        succeeded). A refused push is a warning; a refused file is a ResourceError after
        a build that succeeded, else a warning."""
        if self.report is None:
            return  # stopped before it began (bad input): nothing to measure
        with correlation(self.report.correlation_id):  # what is logged is the build's
            self._emit(request, error)

    def _emit(self, request: MetricsRequest, error: BaseException | None) -> None:
        assert self.report is not None
        status = _status(self.report, error)
        now = self.clock()
        succeeded = status in SUCCEEDED
        if request.push is not None:
            pushed = self.families(status, now, now if succeeded else None)
            _push(request, pushed, replace=succeeded)
        if request.file is not None:
            last = now if succeeded else _last_success_in(request.file)
            try:
                _write_textfile(request.file, self.families(status, now, last))
            except OSError as exc:
                if error is not None:
                    log.warning(
                        "could not write the metrics to %s: %s",
                        shown_path(request.file),
                        one_line(exc),
                    )
                    return
                raise _unwritable(exc, request.file) from exc


def _unwritable(exc: OSError, path: Path) -> ResourceError:
    """A metrics file that could not be written, as one line naming what refused: the
    file, or a folder on its way that could not be made."""
    shown = shown_path(path)
    where, doing = shown, "writing the build's metrics"
    if isinstance(exc.filename, str) and path.is_relative_to(exc.filename):
        where, doing = shown_path(exc.filename), f"{doing} to {shown}"
    return resource_error(exc, where, doing, instead="another file", after="the site is in place")


class _Observing:
    """A build's observer, the report it is given also heard by a meter."""

    def __init__(self, meter: BuildMeter, observer: BuildObserver) -> None:
        self.meter = meter
        self.observer = observer

    def planned(self, report: BuildReport) -> None:
        self.meter.track(report)
        self.observer.planned(report)

    def block_done(self, result: BlockResult) -> None:
        self.observer.block_done(result)

    def layout_checked(self, done: int, total: int) -> None:
        self.observer.layout_checked(done, total)

    def batch_progress(self, done: int, failed: int, total: int) -> None:
        self.observer.batch_progress(done, failed, total)


class _NoMeter:
    """What `recorded` yields when no metrics were asked for: nothing is counted."""

    events = None

    def track(self, report: BuildReport | None) -> None:
        pass

    def observing(self, observer: BuildObserver) -> BuildObserver:
        return observer


@contextmanager
def recorded(request: MetricsRequest | None) -> Iterator[BuildMeter | _NoMeter]:
    """A meter for the build run inside; its metrics written and pushed as `request`
    says when the build ends, however it ends."""
    if request is None:
        yield _NoMeter()
        return
    meter = BuildMeter()
    try:
        yield meter
    except BaseException as error:
        meter.emit(request, error)
        raise
    meter.emit(request)


def _status(report: BuildReport, error: BaseException | None) -> str:
    """How the build ended: its report's status, or what stopped it before it set one."""
    if error is None or report.status in ("failed", "interrupted"):
        return report.status
    return "failed" if isinstance(error, Exception) else "interrupted"


# --------------------------------------------------------------------------- from the report


def _report_families(report: BuildReport, status: str, now: float) -> Iterator[Metric]:
    blocks: dict[Labels, int] = {(source,): 0 for source in BLOCK_SOURCES}
    for block in report.blocks:
        key = (_block_source(block),)
        blocks[key] = blocks.get(key, 0) + 1
    yield _counter(
        "trinity_blocks", "The build's blocks, by where their answer came from.", ["source"], blocks
    )
    yield _counter(
        "trinity_cache_lookups",
        "Lookups in each cache tier, by result (hit, miss).",
        ["tier", "result"],
        _cache_lookups(report.cache),
    )
    yield _gauge(
        "trinity_build_duration_seconds",
        "How long the build took.",
        [],
        {(): report.timings.get("total", 0.0)},
    )
    yield _gauge(
        "trinity_build_status",
        "How the build ended: 1 for its status, 0 for the others.",
        ["status"],
        {(name,): float(name == status) for name in BUILD_STATUSES},
    )
    yield _gauge(
        "trinity_build_last_run_timestamp_seconds",
        "When the build ended (Unix time).",
        [],
        {(): now},
    )
    yield _gauge(
        "trinity_build_info", "The Trinity that built the site.", ["version"], {(__version__,): 1}
    )


def _block_source(block: BlockResult) -> str:
    if block.source == "llm":
        return "generated"
    if block.source == "cache" and block.cache_tier in ("in-flight", "kept"):
        return block.cache_tier
    return block.source


def _cache_lookups(counts: dict[str, Any]) -> dict[Labels, int]:
    """Hits and misses of each tier, from the report's counts: the tiers are looked up in
    order, so a lookup reaches a tier when no tier above it had the answer."""
    lookups: dict[Labels, int] = {}
    reached = int(counts.get("lookups", 0))
    for tier, hits in counts.get("hits", {}).items():
        lookups[(tier, "hit")] = hits
        lookups[(tier, "miss")] = reached - hits
        reached -= hits
    return lookups


def _with_zeros(counts: dict[Labels, Any], keys: set[Labels]) -> dict[Labels, Any]:
    return {**dict.fromkeys(keys, 0), **counts}


def _counter(name: str, doc: str, labels: Sequence[str], values: dict[Labels, Any]) -> Metric:
    from prometheus_client.metrics_core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _gauge(name: str, doc: str, labels: Sequence[str], values: dict[Labels, float]) -> Metric:
    from prometheus_client.metrics_core import GaugeMetricFamily

    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


# --------------------------------------------------------------------------- out


class _Families:
    """Metric families as prometheus-client's writers take them (a collector)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _write_textfile(path: Path, families: list[Metric]) -> None:
    """The textfile collector's format at `path`, whole: written beside it, then renamed
    (the temporary file is removed if anything fails)."""
    from prometheus_client import write_to_textfile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), _Families(families))


def _last_success_in(path: Path) -> float | None:
    """The last success a metrics file holds, or None (no file, or not one of ours)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        if not path.is_file():  # a FIFO or a device would be read forever
            return None
        with path.open("rb") as stream:
            text = stream.read(_MOST_READ_BACK).decode("utf-8")
        for family in text_string_to_metric_families(text):
            if family.name == LAST_SUCCESS and family.samples:
                value = float(family.samples[0].value)
                return value if math.isfinite(value) and value > 0 else None
    except (OSError, ValueError):  # UnicodeDecodeError and a bad line are ValueErrors
        return None
    return None


def _push(request: MetricsRequest, families: list[Metric], *, replace: bool) -> None:
    """Send the metrics to the Pushgateway: PUT (replacing the group's metrics) after a
    success, else POST (replacing only those sent). One warning if it cannot be done."""
    # Imported here, as prometheus-client is: only a build that pushes needs them.
    import http.client

    from prometheus_client import push_to_gateway, pushadd_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    assert request.push is not None
    credentials = request.credentials

    def handler(url: str, method: str, timeout: float | None, headers: Any, data: bytes) -> Any:
        if credentials is None:
            return default_handler(url, method, timeout, headers, data)
        return basic_auth_handler(url, method, timeout, headers, data, *credentials)

    send = push_to_gateway if replace else pushadd_to_gateway
    try:
        send(
            request.push,
            job=PUSH_JOB,
            registry=_Families(families),
            grouping_key=request.grouping_key,
            timeout=PUSH_TIMEOUT,
            handler=handler,
        )
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.warning(
            "could not push the build's metrics to the Pushgateway at %s: %s",
            shown_url(request.push),
            _push_failure(exc),
            extra={"event": "metrics_push_failed"},
        )


def _push_failure(exc: Exception) -> str:
    """Why a push failed, as a phrase: urllib wraps the system's reason in its own."""
    from urllib.error import HTTPError, URLError

    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        exc = exc.reason if isinstance(exc.reason, Exception) else exc
    return os_reason(exc) if isinstance(exc, OSError) and exc.strerror else one_line(exc)


__all__ = [
    "BLOCK_SOURCES",
    "BUILD_STATUSES",
    "DURATION_BUCKETS",
    "PUSH_JOB",
    "BuildMeter",
    "MetricsRequest",
    "metrics_request",
    "recorded",
]
