"""trinity.logs: JSON lines, correlation ids and context, redaction, installing a profile."""

from __future__ import annotations

import io
import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from trinity.logs import (
    MASK,
    QUIET_LOGGERS,
    ContextFilter,
    InstalledLogging,
    LogFormat,
    LogProfile,
    RedactingFilter,
    Redactor,
    correlation,
    current_correlation_id,
    get_logger,
    install_logging,
    json_formatter,
    log_context,
    secrets_from_environment,
)

SECRET = "sk-unit-test-0123456789abcdefSECRET"
KNOWN = "plain-known-secret-value-42"
LOGGER = "trinity.tests.logs"
# Loggers whose level install_logging changes (and remove() must put back).
TOUCHED_LOGGERS = ("", "trinity", *QUIET_LOGGERS)


Fields = dict[str, Any]


class RecordList(logging.Handler):
    """Keeps the fields of every record it is given, with `message` formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[Fields] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({**vars(record), "message": record.getMessage()})


@contextmanager
def attached(handler: logging.Handler) -> Iterator[logging.Logger]:
    """A logger of the tests' own that sends everything to `handler` and nowhere else."""
    logger = logging.getLogger(LOGGER)
    saved = (logger.level, logger.propagate)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@pytest.fixture
def records() -> Iterator[list[Fields]]:
    """Records logged to LOGGER, with the context filter applied (see `log`)."""
    handler = RecordList()
    handler.addFilter(ContextFilter())
    with attached(handler):
        yield handler.records


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger(LOGGER)


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """LOGGER through the JSON formatter with context and redaction (known: SECRET, KNOWN)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(Redactor([SECRET, KNOWN])))

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    with attached(handler):
        yield lines


# ---------------------------------------------------------------------------- JSON shape


def test_a_json_line_has_the_documented_fields(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    with correlation("build-1"), log_context(page="index", block="intro"):
        log.info("wrote %d pages", 3, extra={"event": "build_finished", "tokens": 17})

    (line,) = json_lines()
    assert line["level"] == "INFO"
    assert line["logger"] == LOGGER
    assert line["message"] == "wrote 3 pages"
    assert line["correlation_id"] == "build-1"
    assert (line["page"], line["block"]) == ("index", "intro")
    assert (line["event"], line["tokens"]) == ("build_finished", 17)
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    # No leftovers of the LogRecord's own attributes.
    assert not {"levelname", "name", "args", "msg", "levelno"} & set(line)


def test_outside_a_build_the_correlation_id_is_null(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    log.warning("no build")

    (line,) = json_lines()
    assert line["correlation_id"] is None
    assert line["level"] == "WARNING"
    assert "page" not in line


def test_get_logger_puts_names_under_trinity() -> None:
    trinity = logging.getLogger("trinity")

    assert get_logger("trinity.build").name == "trinity.build"
    assert get_logger("myscript").name == "trinity.myscript"
    assert get_logger("myscript").parent is trinity


# ---------------------------------------------------------------------------- context


def test_correlation_nests_and_resets() -> None:
    assert current_correlation_id() is None
    with correlation("outer") as outer:
        assert outer == current_correlation_id() == "outer"
        with correlation("inner") as inner:
            assert inner == current_correlation_id() == "inner"
        assert current_correlation_id() == "outer"
    assert current_correlation_id() is None


def test_correlation_without_an_id_makes_a_new_uuid() -> None:
    with correlation() as first, correlation(None) as second:
        assert current_correlation_id() == second
    for made in (first, second):
        assert uuid.UUID(hex=made).hex == made
    assert first != second


def test_correlation_and_context_reset_when_an_error_leaves_them(
    records: list[Fields], log: logging.Logger
) -> None:
    with pytest.raises(RuntimeError), correlation("failing"), log_context(page="p"):
        raise RuntimeError("boom")
    log.info("after")

    assert current_correlation_id() is None
    (record,) = records
    assert record["correlation_id"] is None
    assert "page" not in record


def test_log_context_nests_merges_and_resets(records: list[Fields], log: logging.Logger) -> None:
    with log_context(page="about", block="intro"):
        log.info("outer")
        with log_context(block="now", attempt=2):
            log.info("inner")
        log.info("outer again")
    log.info("outside")

    fields = [{name: r.get(name) for name in ("page", "block", "attempt")} for r in records]
    assert fields == [
        {"page": "about", "block": "intro", "attempt": None},
        {"page": "about", "block": "now", "attempt": 2},
        {"page": "about", "block": "intro", "attempt": None},
        {"page": None, "block": None, "attempt": None},
    ]


def test_explicit_extra_fields_win_over_the_context(
    records: list[Fields], log: logging.Logger
) -> None:
    with correlation("from-context"), log_context(page="from-context"):
        log.info("x", extra={"page": "explicit", "correlation_id": "explicit-id"})

    (record,) = records
    assert (record["page"], record["correlation_id"]) == ("explicit", "explicit-id")


@pytest.mark.anyio
@pytest.mark.parametrize("own_ids", [True, False], ids=["own-id-per-task", "shared-build-id"])
async def test_fifty_concurrent_tasks_keep_their_own_ids(
    records: list[Fields], log: logging.Logger, own_ids: bool
) -> None:
    tasks, steps = 50, 4

    async def task(n: int) -> None:
        chosen = f"id-{n:02d}" if own_ids else None
        with correlation(chosen or current_correlation_id()), log_context(page=f"page-{n}"):
            for step in range(steps):
                with log_context(block=f"block-{n}-{step}"):
                    await anyio.sleep(0)
                    log.info("step", extra={"task": n, "step": step})
                    await anyio.sleep(0)
                log.debug("between", extra={"task": n, "step": step})

    with correlation("the-build"):
        async with anyio.create_task_group() as group:
            for n in range(tasks):
                group.start_soon(task, n)

    assert len(records) == tasks * steps * 2
    assert current_correlation_id() is None
    for record in records:
        n, step = record["task"], record["step"]
        assert record["correlation_id"] == (f"id-{n:02d}" if own_ids else "the-build")
        assert record["page"] == f"page-{n}"
        if record["message"] == "step":
            assert record["block"] == f"block-{n}-{step}"
        else:
            assert "block" not in record
    # The tasks really ran interleaved: records of one task are not all together.
    switches = sum(1 for a, b in itertools.pairwise(records) if a["task"] != b["task"])
    assert switches > tasks * steps


# ---------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"the server refused {KNOWN}.", KNOWN),
        ("Authorization: Bearer opaque.token-123", "opaque.token-123"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("{'Authorization': 'Bearer opaque-tok-456'}", "opaque-tok-456"),
        ('{"authorization": "Basic b3BhcXVlOnRvaw=="}', "b3BhcXVlOnRvaw=="),
        ("x-api-key: opaque-anthropic-789", "opaque-anthropic-789"),
        ("X-Api-Key=opaque-anthropic-789", "opaque-anthropic-789"),
        ("OPENAI_API_KEY=opaque-env-value", "opaque-env-value"),
        ("export LLM_API_KEY='opaque-env-value'", "opaque-env-value"),
        ("GITHUB_TOKEN: opaque-gh-value", "opaque-gh-value"),
        ('{"token": "opaque-json-token", "n": 1}', "opaque-json-token"),
        ("password: hunter2hunter2", "hunter2hunter2"),
        ("redis://u:x@h?password=hunter2hunter2&db=0", "hunter2hunter2"),
        ("client_secret = 'opaque-client-secret'", "opaque-client-secret"),
        ("key sk-proj-abcdefghijklmnop1234 was used", "sk-proj-abcdefghijklmnop1234"),
        ("(sk-ant-api03-abcdefghijklmnopqrstuv)", "sk-ant-api03-abcdefghijklmnopqrstuv"),
        (f"a known provider key {SECRET}", SECRET),
        ("cannot reach http://user:opaque-pw@127.0.0.1:9/v1: refused", "opaque-pw"),
        ("cannot reach http://opaque-user:pw@127.0.0.1:9/v1: refused", "opaque-user"),
        ("GET https://h.example/v1?sig=opaque-signature&x=1", "opaque-signature"),
    ],
)
def test_the_redactor_masks_secrets_in_text(text: str, gone: str) -> None:
    masked = Redactor([SECRET, KNOWN]).text(text)

    assert gone not in masked
    assert MASK in masked


@pytest.mark.parametrize(
    "text",
    [
        "build of 6 pages with theme minimal started",
        "LLM ollama:fake-chat-model attempt 1: ok in 14 ms",
        "input_tokens: 78, output_tokens: 17, max_tokens=200",
        "risk-assessment-for-the-whole-project and sk-short",
        "the keyboard and the tokenizer",
        "cannot reach http://127.0.0.1:9/v1: write to me@example.com",
    ],
)
def test_the_redactor_leaves_ordinary_text_alone(text: str) -> None:
    assert Redactor([SECRET]).text(text) == text


def test_the_redactor_masks_a_longer_secret_whole_and_ignores_tiny_ones() -> None:
    redactor = Redactor(["abcd1234", "abcd1234-and-more", "abc"])

    assert redactor.text("x abcd1234-and-more y") == f"x {MASK} y"
    assert redactor.text("x abcd1234 y") == f"x {MASK} y"
    # Three characters would mask ordinary words: no credential is that short.
    assert redactor.text("abc is the alphabet") == "abc is the alphabet"


def test_secrets_added_later_are_masked_too() -> None:
    redactor = Redactor()
    assert redactor.text(f"value {KNOWN}") == f"value {KNOWN}"

    redactor.add([KNOWN])

    assert redactor.text(f"value {KNOWN}") == f"value {MASK}"


def test_secrets_from_environment_takes_values_named_like_secrets() -> None:
    environ = {
        "LLM_API_KEY": "k-one",
        "GITHUB_TOKEN": "t-two",
        "MY_SECRET": "s-three",
        "DB_PASSWORD": "   ",
        "HOME": "/home/user",
        "LOG_LEVEL": "DEBUG",
        "KEYBOARD": "us",
    }

    assert sorted(secrets_from_environment(environ)) == ["k-one", "s-three", "t-two"]


def test_secret_like_extra_fields_are_masked_whole(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    log.info(
        "x",
        extra={
            "api_key": "opaque-1",
            "redis_password": "opaque-2",
            "token": 12345,
            "input_tokens": 78,
            "note": f"uses {KNOWN}",
            "empty_key": "",
        },
    )

    (line,) = json_lines()
    assert (line["api_key"], line["redis_password"], line["token"]) == (MASK,) * 3
    assert line["input_tokens"] == 78
    assert line["note"] == f"uses {MASK}"
    assert line["empty_key"] == ""


def test_nested_extra_fields_are_masked(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    log.info(
        "request",
        extra={
            "request": {
                "url": "http://127.0.0.1/v1/chat/completions",
                "headers": {"x-api-key": "opaque-xkey-1", "Content-Type": "application/json"},
                "body": ["hello", {"password": "opaque-pw-2"}, ("tuple", KNOWN)],
            },
            "attempts": [{"note": f"sent Authorization: Bearer {SECRET}"}],
        },
    )

    (line,) = json_lines()
    text = json.dumps(line)
    for secret in ("opaque-xkey-1", "opaque-pw-2", KNOWN, SECRET):
        assert secret not in text
    request = line["request"]
    assert request["url"] == "http://127.0.0.1/v1/chat/completions"
    assert request["headers"] == {"x-api-key": MASK, "Content-Type": "application/json"}
    assert request["body"] == ["hello", {"password": MASK}, ["tuple", MASK]]


def test_an_authorization_header_in_nested_extra_fields_is_masked(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """Headers logged as a mapping: the value of `Authorization` is the credential."""
    log.info(
        "request",
        extra={
            "headers": {
                "Authorization": "Bearer opaque-bearer-token-1",
                "Proxy-Authorization": "Basic b3BhcXVlOmJhc2lj",
            }
        },
    )

    (line,) = json_lines()
    text = json.dumps(line)
    assert "opaque-bearer-token-1" not in text
    assert "b3BhcXVlOmJhc2lj" not in text


def test_message_arguments_are_masked(
    log: logging.Logger, json_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    log.warning("sent %s to %s", {"Authorization": "Bearer opaque-arg-1"}, f"key={KNOWN}")

    (line,) = json_lines()
    assert "opaque-arg-1" not in line["message"]
    assert KNOWN not in line["message"]
    assert line["message"].startswith("sent {'Authorization': 'Bearer ***'} to ")


@pytest.mark.parametrize("formatter", ["json", "text"])
def test_a_traceback_that_holds_a_secret_is_masked(formatter: str) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(json_formatter() if formatter == "json" else logging.Formatter())
    handler.addFilter(RedactingFilter(Redactor([KNOWN])))

    with attached(handler) as logger:
        try:
            try:
                raise KeyError(f"no account for {KNOWN}")
            except KeyError as inner:
                raise RuntimeError(f"login failed: Authorization: Bearer {SECRET}") from inner
        except RuntimeError:
            logger.exception("request failed")

    text = out.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: login failed: Authorization: Bearer ***" in text
    assert "KeyError" in text
    assert KNOWN not in text
    assert SECRET not in text


def test_redaction_reaches_every_handler(log: logging.Logger) -> None:
    """A record is rewritten once, by the first handler's filter; the next sees it masked."""
    first, second = RecordList(), RecordList()
    first.addFilter(RedactingFilter(Redactor([KNOWN])))
    second.addFilter(RedactingFilter(Redactor()))
    for handler in (first, second):
        log.addHandler(handler)
    try:
        log.error("using %s", KNOWN, extra={"detail": [KNOWN]})
    finally:
        for handler in (first, second):
            log.removeHandler(handler)

    for handler in (first, second):
        (record,) = handler.records
        assert record["message"] == f"using {MASK}"
        assert record["detail"] == [MASK]


FRAGMENTS = [
    "",
    "plain words",
    KNOWN,
    f"x{KNOWN}y",
    "authorization:",
    "Bearer abc123",
    "api_key=",
    "value",
    "sk-" + "a" * 20,
    "token",
    ": hunter22",
    "\n",
]


@given(
    message=st.lists(st.sampled_from(FRAGMENTS), max_size=3).map(" ".join),
    fields=st.dictionaries(
        st.sampled_from(["detail", "status", "page", "api_key", "reason", "count"]),
        st.one_of(
            st.lists(st.sampled_from(FRAGMENTS), max_size=3).map("".join),
            st.integers(),
            st.none(),
            st.booleans(),
        ),
        max_size=4,
    ),
)
def test_the_quick_path_masks_exactly_what_field_by_field_masking_does(
    message: str, fields: dict[str, Any]
) -> None:
    redactor = Redactor([KNOWN])
    record = logging.LogRecord("trinity.t", logging.INFO, "f", 1, "%s", (message,), None)
    for name, value in fields.items():
        setattr(record, name, value)

    assert RedactingFilter(redactor).filter(record)

    assert record.getMessage() == redactor.text(message)
    for name, value in fields.items():
        assert getattr(record, name) == redactor.value(value, name), name


# ---------------------------------------------------------------------------- installing


@pytest.fixture
def saved_logging() -> Iterator[tuple[list[logging.Handler], dict[str, int]]]:
    """The root handlers and the levels install_logging touches, put back after the test."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: logging.getLogger(name or None).level for name in TOUCHED_LOGGERS}
    yield handlers, levels
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


Install = Callable[..., tuple[InstalledLogging, io.StringIO]]


@pytest.fixture
def install(
    tmp_path: Path, saved_logging: tuple[list[logging.Handler], dict[str, int]]
) -> Iterator[Install]:
    """install_logging(profile) with a console into a string; removed after the test."""
    done: list[InstalledLogging] = []

    def run(
        profile: LogProfile, secrets: tuple[str, ...] = (), *, terminal: bool = False
    ) -> tuple[InstalledLogging, io.StringIO]:
        out = io.StringIO()
        console = Console(file=out, width=300, color_system=None, force_terminal=terminal)
        installed = install_logging(profile, console=console, secrets=secrets, base_dir=tmp_path)
        done.append(installed)
        return installed, out

    yield run
    for installed in reversed(done):
        installed.remove()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PROFILE = LogProfile("test", level="DEBUG", format="json", color=False)


def test_install_and_remove_put_root_handlers_and_levels_back(
    install: Install, saved_logging: tuple[list[logging.Handler], dict[str, int]]
) -> None:
    root = logging.getLogger()
    # Levels the test chose, so that remove() must really restore rather than reset.
    logging.getLogger("httpx").setLevel(logging.DEBUG)
    logging.getLogger("trinity").setLevel(logging.CRITICAL)
    before_handlers = list(root.handlers)
    before_levels = {name: logging.getLogger(name or None).level for name in TOUCHED_LOGGERS}

    installed, _ = install(PROFILE)

    assert len(installed.handlers) == 3  # console, trinity.log, errors.log
    assert root.handlers == [*before_handlers, *installed.handlers]
    assert logging.getLogger("trinity").level == logging.DEBUG
    assert root.level == logging.WARNING  # other libraries speak from WARNING up
    for name in QUIET_LOGGERS:
        assert logging.getLogger(name).level == logging.WARNING

    installed.remove()

    assert root.handlers == before_handlers
    after = {name: logging.getLogger(name or None).level for name in TOUCHED_LOGGERS}
    assert after == before_levels
    assert installed.handlers == []


def test_after_remove_nothing_reaches_the_files(install: Install, tmp_path: Path) -> None:
    installed, out = install(PROFILE)
    log = get_logger("tests.install")
    log.info("kept")

    installed.remove()
    log.info("after remove")

    assert [line["message"] for line in read_lines(tmp_path / "logs" / "trinity.log")] == ["kept"]
    assert "after remove" not in out.getvalue()


def test_the_root_level_follows_a_profile_above_warning(install: Install) -> None:
    install(replace(PROFILE, level="ERROR"))

    assert logging.getLogger().level == logging.ERROR
    assert logging.getLogger("trinity").level == logging.ERROR


def test_chatty_libraries_are_quiet_below_warning(install: Install, tmp_path: Path) -> None:
    _, out = install(PROFILE)

    for name in (*QUIET_LOGGERS, "httpx._client", "some.library"):
        logging.getLogger(name).info("HTTP Request: POST http://127.0.0.1/ (from %s)", name)
        logging.getLogger(name).warning("trouble in %s", name)
    get_logger("tests.install").debug("ours")

    messages = [line["message"] for line in read_lines(tmp_path / "logs" / "trinity.log")]
    assert messages == [
        "trouble in httpx",
        "trouble in httpcore",
        "trouble in httpx._client",
        "trouble in some.library",
        "ours",
    ]
    assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == messages


def test_the_console_shows_from_console_level_and_the_file_from_level(
    install: Install, tmp_path: Path
) -> None:
    _, out = install(replace(PROFILE, format="text", console_level="WARNING"))
    log = get_logger("tests.install")

    log.debug("detail")
    log.info("progress")
    log.warning("careful")

    (shown,) = out.getvalue().splitlines()
    assert shown.endswith(f" WARNING {log.name}: careful")
    # The files hold JSON lines whatever the console's format.
    lines = read_lines(tmp_path / "logs" / "trinity.log")
    assert [(line["level"], line["message"]) for line in lines] == [
        ("DEBUG", "detail"),
        ("INFO", "progress"),
        ("WARNING", "careful"),
    ]


@pytest.mark.parametrize(
    ("log_format", "color", "terminal", "check"),
    [
        ("json", False, True, "json"),
        ("text", False, True, "plain"),
        ("text", True, True, "rich"),
        # Piped or in a CI log: one line a record, never wrapped into Rich's columns.
        ("text", True, False, "plain"),
    ],
    ids=["json", "plain", "rich", "colour-off-a-terminal"],
)
def test_console_formats(
    install: Install, log_format: LogFormat, color: bool, terminal: bool, check: str
) -> None:
    profile = replace(PROFILE, format=log_format, color=color, directory=None)
    installed, out = install(profile, terminal=terminal)
    log = get_logger("tests.install")

    with correlation("console-id"):
        log.warning("hello %s", "console")

    (handler,) = installed.handlers
    text = out.getvalue()
    if check == "json":
        line = json.loads(text)
        assert (line["message"], line["correlation_id"]) == ("hello console", "console-id")
    elif check == "plain":
        assert text.endswith(f" WARNING {log.name}: hello console\n")
        assert type(handler) is logging.StreamHandler
    else:
        assert type(handler).__name__ == "RichHandler"
        assert "WARNING" in text
        assert "hello console" in text


def test_secrets_are_masked_on_the_console_and_in_the_files(
    install: Install, tmp_path: Path
) -> None:
    installed, out = install(PROFILE, secrets=(SECRET,))
    # The CLI adds the settings' secrets once it has read them.
    installed.redactor.add([KNOWN])
    log = get_logger("tests.install")

    log.error("refused %s and %s", SECRET, KNOWN, extra={"api_key": SECRET})

    for text in (
        out.getvalue(),
        (tmp_path / "logs" / "trinity.log").read_text(encoding="utf-8"),
        (tmp_path / "logs" / "errors.log").read_text(encoding="utf-8"),
    ):
        assert "refused *** and ***" in text
        assert SECRET not in text
        assert KNOWN not in text


def test_the_log_files_are_created_with_the_first_record(install: Install, tmp_path: Path) -> None:
    installed, _ = install(replace(PROFILE, level="INFO", directory=Path("deep/logs")))
    folder = tmp_path / "deep" / "logs"
    log = get_logger("tests.install")

    log.debug("below the profile's level")
    assert not (tmp_path / "deep").exists()

    log.info("first")
    assert (folder / "trinity.log").is_file()
    assert not (folder / "errors.log").exists()

    log.error("first error")
    assert (folder / "errors.log").is_file()
    assert len(installed.handlers) == 3


def test_errors_log_holds_only_errors(install: Install, tmp_path: Path) -> None:
    install(PROFILE)
    log = get_logger("tests.install")

    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("x")

    errors = read_lines(tmp_path / "logs" / "errors.log")
    assert [(line["level"], line["message"]) for line in errors] == [
        ("ERROR", "e"),
        ("CRITICAL", "c"),
        ("ERROR", "x"),
    ]
    assert "ValueError: bad value" in errors[-1]["exc_info"]
    everything = read_lines(tmp_path / "logs" / "trinity.log")
    assert [line["level"] for line in everything] == [
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "ERROR",
    ]


def test_the_log_file_rotates_at_max_bytes(install: Install, tmp_path: Path) -> None:
    install(replace(PROFILE, max_bytes=1024, backup_count=2, console=False))
    log = get_logger("tests.install")

    for n in range(60):
        log.info("record %03d %s", n, "x" * 40)

    folder = tmp_path / "logs"
    assert {p.name for p in folder.iterdir()} == {"trinity.log", "trinity.log.1", "trinity.log.2"}
    for path in folder.iterdir():
        assert path.stat().st_size <= 1024
        read_lines(path)  # whole JSON lines, never a record cut in two
    assert read_lines(folder / "trinity.log")[-1]["message"].startswith("record 059 ")


def test_rotation_counts_what_an_earlier_run_wrote(install: Install, tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    earlier = json.dumps({"message": "an earlier run"}) + "\n"
    (folder / "trinity.log").write_text(earlier * 25, encoding="utf-8")  # 800 bytes
    install(replace(PROFILE, max_bytes=1024, backup_count=20, console=False))
    log = get_logger("tests.install")

    for n in range(12):
        log.info("record %03d %s", n, "é" * 40)

    files = sorted(folder.iterdir(), key=lambda p: -int(p.suffix[1:] if p.suffix != ".log" else 0))
    assert all(path.stat().st_size <= 1024 for path in files)
    # The earlier run's 800 bytes and the first record (~380) would not fit: rotated first.
    assert {line["message"] for line in read_lines(files[0])} == {"an earlier run"}
    records = [line["message"] for path in files[1:] for line in read_lines(path)]
    assert records == [f"record {n:03d} {'é' * 40}" for n in range(12)]


def test_an_unwritable_log_folder_costs_the_files_not_the_run(
    install: Install, tmp_path: Path
) -> None:
    # A file where a parent folder should be: nobody (root included) can create it.
    (tmp_path / "blocker").write_text("not a folder", encoding="utf-8")
    installed, out = install(replace(PROFILE, directory=Path("blocker/logs")))
    log = get_logger("tests.install")

    log.error("still logged")

    assert len(installed.problems) == 1
    assert "cannot write logs to" in installed.problems[0]
    assert "blocker" in installed.problems[0]
    (handler,) = installed.handlers  # the console only
    assert not isinstance(handler, logging.FileHandler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("WARNING", installed.problems[0]),
        ("ERROR", "still logged"),
    ]
    assert (tmp_path / "blocker").is_file()


def test_a_profile_without_console_or_files_installs_nothing(
    install: Install, tmp_path: Path
) -> None:
    installed, out = install(replace(PROFILE, console=False, directory=None))

    get_logger("tests.install").error("nowhere")

    assert installed.handlers == []
    assert out.getvalue() == ""
    assert list(tmp_path.iterdir()) == []
