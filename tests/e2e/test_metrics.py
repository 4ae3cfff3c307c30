"""`trinity build --metrics-file/--metrics-push` (issue 18): real builds against the fake
LLM server, the metrics parsed back with prometheus-client's parser and held against the
build report; a loopback fake Pushgateway; and what goes wrong (a dead gateway, a bad URL,
a file that cannot be written, a build that fails or is interrupted)."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.sitekit import BLOCKS, ITEM_BLOCKS, SiteProject, interrupt_when

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def samples_of(text: str) -> Samples:
    """Sample name -> its labels -> its value, as prometheus-client's parser reads them."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels`."""
    wanted = set(labels.items())
    return sum(value for key, value in samples.get(name, {}).items() if wanted <= key)


def value(samples: Samples, name: str) -> float:
    (only,) = samples[name].values()
    return only


def assert_agrees_with_report(samples: Samples, report: dict[str, Any]) -> None:
    """The metrics count what the build report counts."""
    totals = report["totals"]
    blocks = "trinity_blocks_total"
    assert total(samples, blocks) == totals["blocks"]
    assert total(samples, blocks, source="generated") == totals["llm_calls"]
    cache_blocks = sum(total(samples, blocks, source=s) for s in ("cache", "in-flight", "kept"))
    assert cache_blocks == totals["cache_hits"]
    assert total(samples, blocks, source="failed") == totals["failed"]
    assert total(samples, blocks, source="stale") == totals["stale"]
    assert total(samples, "trinity_llm_requests_total") == totals["attempts"]
    tokens = "trinity_llm_tokens_total"
    assert total(samples, tokens, direction="input") == totals["input_tokens"]
    assert total(samples, tokens, direction="output") == totals["output_tokens"]
    assert total(samples, "trinity_llm_cost_usd_total") == pytest.approx(totals["cost_usd"])
    lookups = "trinity_cache_lookups_total"
    for tier, hits in report["cache"].get("hits", {}).items():
        assert total(samples, lookups, tier=tier, result="hit") == hits
    if report["cache"]:
        assert total(samples, lookups, tier="disk", result="miss") == report["cache"]["misses"]
    status = "trinity_build_status"
    assert total(samples, status, status=report["status"]) == 1
    assert total(samples, status) == 1
    assert value(samples, "trinity_build_duration_seconds") == report["timings"]["total"]


def metrics_file(site_project: SiteProject) -> Path:
    return site_project.root.parent / "textfile" / "trinity.prom"


def read_metrics(path: Path) -> Samples:
    return samples_of(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- the file


def test_the_metrics_file_counts_what_the_report_counts(site_project: SiteProject) -> None:
    path = metrics_file(site_project)
    site_project.server.fail_next(1, 500)  # one block is asked twice: a retry

    first = site_project.build("--metrics-file", path)

    assert first.exit_code == 0, first.describe()
    samples = read_metrics(path)
    report = site_project.report()
    assert_agrees_with_report(samples, report)
    assert report["totals"]["llm_calls"] == BLOCKS
    assert total(samples, "trinity_llm_requests_total", outcome="server_error") == 1
    assert total(samples, "trinity_llm_requests_total", outcome="ok") == BLOCKS
    assert total(samples, "trinity_llm_retries_total") == 1
    durations = "trinity_llm_request_duration_seconds_count"
    assert total(samples, durations) == BLOCKS + 1
    assert "trinity_build_last_success_timestamp_seconds" in samples
    assert sorted(p.name for p in path.parent.iterdir()) == ["trinity.prom"]


def test_a_rebuild_from_the_cache_and_a_kept_site_have_metrics_too(
    site_project: SiteProject,
) -> None:
    path = metrics_file(site_project)
    assert site_project.build().exit_code == 0
    # Without the output folder the site is built again, every answer from the disk cache.
    for file in sorted(site_project.output.rglob("*"), reverse=True):
        file.unlink() if file.is_file() else file.rmdir()
    site_project.output.rmdir()

    from_cache = site_project.build("--metrics-file", path)

    assert from_cache.exit_code == 0, from_cache.describe()
    samples = read_metrics(path)
    assert_agrees_with_report(samples, site_project.report())
    assert total(samples, "trinity_blocks_total", source="cache") == BLOCKS
    assert total(samples, "trinity_cache_lookups_total", tier="disk", result="hit") == BLOCKS
    assert total(samples, "trinity_cache_lookups_total", tier="memory", result="miss") == BLOCKS
    assert "trinity_llm_requests_total" not in samples  # no model was asked

    kept = site_project.build("--metrics-file", path)

    assert kept.exit_code == 0, kept.describe()
    assert "Nothing changed" in kept.output
    samples = read_metrics(path)
    assert_agrees_with_report(samples, site_project.report())
    assert total(samples, "trinity_blocks_total", source="kept") == BLOCKS
    assert total(samples, "trinity_build_status", status="built") == 1


def test_a_failed_build_writes_its_metrics_and_keeps_the_last_success(
    site_project: SiteProject,
) -> None:
    path = metrics_file(site_project)
    assert site_project.build("--metrics-file", path).exit_code == 0
    succeeded = value(read_metrics(path), "trinity_build_last_success_timestamp_seconds")
    site_project.add_item("Newcomer", "A project added after the first build.")
    site_project.rescript_highlights()
    site_project.server.fail_next(len(ITEM_BLOCKS), 400)  # never retried

    failed = site_project.build("--metrics-file", path)

    assert failed.exit_code == 1, failed.describe()
    samples = read_metrics(path)
    report = site_project.report()  # the site's report is still the last success's
    assert total(samples, "trinity_build_status", status="failed") == 1
    assert total(samples, "trinity_blocks_total", source="failed") == len(ITEM_BLOCKS)
    assert total(samples, "trinity_llm_requests_total", outcome="client_error") == len(ITEM_BLOCKS)
    assert total(samples, "trinity_blocks_total") == report["totals"]["blocks"] + len(ITEM_BLOCKS)
    assert value(samples, "trinity_build_last_success_timestamp_seconds") == succeeded
    assert value(samples, "trinity_build_last_run_timestamp_seconds") > succeeded


def test_a_shard_generating_into_the_cache_has_its_metrics(site_project: SiteProject) -> None:
    path = metrics_file(site_project)

    result = site_project.build("--generate-only", "--shard", "1/2", "--metrics-file", path)

    assert result.exit_code == 0, result.describe()
    samples = read_metrics(path)
    generated = total(samples, "trinity_blocks_total", source="generated")
    assert 0 < generated < BLOCKS
    assert total(samples, "trinity_llm_requests_total", outcome="ok") == generated
    assert total(samples, "trinity_build_status", status="generated") == 1
    assert "trinity_build_last_success_timestamp_seconds" in samples
    assert not site_project.output.exists()


def test_the_file_is_replaced_whole_by_a_rename(site_project: SiteProject) -> None:
    path = metrics_file(site_project)
    path.parent.mkdir()
    path.write_text("# an older file\n", encoding="utf-8")
    before = path.stat().st_ino

    assert site_project.build("--metrics-file", path).exit_code == 0

    # A new file renamed over the old one, not the old one written again in place: the
    # textfile collector reads either the old file or the new one, never half of one.
    assert path.stat().st_ino != before
    assert sorted(p.name for p in path.parent.iterdir()) == ["trinity.prom"]


def test_a_metrics_file_that_cannot_be_written_is_one_line_and_exit_1(
    site_project: SiteProject,
) -> None:
    blocker = site_project.root.parent / "not-a-folder"
    blocker.write_text("a file where a folder should be", encoding="utf-8")

    result = site_project.build("--metrics-file", blocker / "trinity.prom")

    assert result.exit_code == 1, result.describe()
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "not-a-folder/trinity.prom" in errors[0]
    assert "metrics" in errors[0]
    assert "the site is in place" in errors[0]
    assert site_project.report()["status"] == "built"  # the site was built all the same
    assert sorted(p.name for p in blocker.parent.iterdir() if "trinity.prom" in p.name) == []


def test_an_interrupted_build_writes_its_metrics(site_project: SiteProject) -> None:
    path = metrics_file(site_project)
    site_project.server.latency = 0.5
    proc = site_project.popen("build", "--project", site_project.root, "--metrics-file", path)

    result, _ = interrupt_when(
        proc, lambda: len(site_project.server.answered) >= 1, "got an answer"
    )

    assert result.exit_code == 130, result.describe()
    samples = read_metrics(path)
    assert total(samples, "trinity_build_status", status="interrupted") == 1
    assert "trinity_build_last_success_timestamp_seconds" not in samples


# --------------------------------------------------------------------------- the Pushgateway


@dataclass(frozen=True)
class Push:
    method: str
    path: str
    body: str
    authorization: str | None


class FakePushgateway:
    """A loopback HTTP server that records each push and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.pushes: list[Push] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                auth = self.headers.get("Authorization")
                gateway.pushes.append(Push(self.command, self.path, body, auth))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakePushgateway]:
    server = FakePushgateway()
    try:
        yield server
    finally:
        server.close()


def test_the_metrics_are_pushed_to_the_pushgateway(
    site_project: SiteProject, gateway: FakePushgateway
) -> None:
    result = site_project.build(
        "--metrics-push", gateway.url, "--metrics-instance", "runner-1", "--quiet"
    )

    assert result.exit_code == 0, result.describe()
    (push,) = gateway.pushes
    # PUT after a success: the group holds this build's metrics and nothing older.
    assert (push.method, push.path) == ("PUT", "/metrics/job/trinity/instance/runner-1")
    samples = samples_of(push.body)
    assert_agrees_with_report(samples, site_project.report())
    assert "trinity_build_last_success_timestamp_seconds" in samples


def test_a_failed_build_pushes_with_post_and_leaves_the_last_success(
    site_project: SiteProject, gateway: FakePushgateway
) -> None:
    site_project.server.fail_next(BLOCKS, 400)

    result = site_project.build("--metrics-push", gateway.url)

    assert result.exit_code == 1, result.describe()
    (push,) = gateway.pushes
    # POST replaces only the metrics it carries: the last success's time stays as it was.
    assert (push.method, push.path) == ("POST", "/metrics/job/trinity")
    samples = samples_of(push.body)
    assert "trinity_build_last_success_timestamp_seconds" not in samples
    assert total(samples, "trinity_build_status", status="failed") == 1
    assert total(samples, "trinity_blocks_total", source="failed") == BLOCKS


def test_a_user_and_password_in_the_push_url_are_basic_auth_never_shown(
    site_project: SiteProject, gateway: FakePushgateway
) -> None:
    gateway.status = 401  # refused, so that the URL is shown in a warning
    url = gateway.url.replace("http://", "http://ci:s3cret@")

    result = site_project.build("--metrics-push", url)

    assert result.exit_code == 0, result.describe()
    (push,) = gateway.pushes
    assert push.authorization == "Basic " + base64.b64encode(b"ci:s3cret").decode()
    assert f"Pushgateway at {gateway.url}: HTTP 401" in result.output
    assert "s3cret" not in result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("gateway_state", ["down", "refusing"])
def test_a_pushgateway_that_fails_is_one_warning_and_the_site_is_built(
    site_project: SiteProject, gateway: FakePushgateway, gateway_state: str
) -> None:
    if gateway_state == "down":
        url, why = f"http://127.0.0.1:{free_port()}", "connection refused"
    else:
        gateway.status = 500
        url, why = gateway.url, "HTTP 500"

    result = site_project.build("--metrics-push", url)

    assert result.exit_code == 0, result.describe()
    warnings = [line for line in result.output.splitlines() if "Pushgateway" in line]
    assert len(warnings) == 1, result.output
    assert f"{url}: {why}" in warnings[0]
    assert site_project.report()["status"] == "built"


def test_a_push_url_that_is_not_http_is_bad_input_before_the_build(
    site_project: SiteProject,
) -> None:
    result = site_project.build("--metrics-push", "ftp://127.0.0.1:9091")

    assert result.exit_code == 2, result.describe()
    assert "--metrics-push" in result.stderr
    assert "Traceback" not in result.output
    assert site_project.server.chat_count == 0
    assert not site_project.output.exists()


# --------------------------------------------------------------------------- imports


def test_only_a_build_that_asks_for_metrics_imports_prometheus_client(
    site_project: SiteProject, tmp_path: Path
) -> None:
    imports = {"PYTHONPROFILEIMPORTTIME": "1"}
    for args in (["--version"], ["--help"], ["build", "--help"]):
        quick = site_project.run(*args, env=imports)
        assert quick.exit_code == 0, quick.describe()
        assert "prometheus_client" not in quick.stderr, args
    plain = site_project.run("build", "--project", site_project.root, env=imports)
    assert plain.exit_code == 0, plain.describe()
    assert "prometheus_client" not in plain.stderr

    measured = site_project.run(
        "build", "--project", site_project.root, "--metrics-file", tmp_path / "m.prom", env=imports
    )

    assert measured.exit_code == 0, measured.describe()
    assert "prometheus_client" in measured.stderr
    assert (tmp_path / "m.prom").stat().st_size > 0
