"""Logging: correlation ids, JSON lines, secret redaction, and installing a profile.

Every record carries the build's `correlation_id`, and the `page` and `block` being
generated when there is one. They live in context variables, which anyio's task groups
copy into every task they start, so they stay right however many blocks run at once.

A `RedactingFilter` sits on every handler: API keys, `Authorization` and `x-api-key`
headers, values named like secrets, and the user-info and key-like query values of URLs
never reach a console, a file or a report.

`get_logger(__name__)` is the public way in; `install_logging` is for the CLI (and any
script that wants Trinity's profiles).
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import re
import stat as statmodule
import sys
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from trinity.messages import shown_path
from trinity.oserrors import os_reason
from trinity.urls import URL_SECRET_PATTERNS, URL_SECRET_TRIGGERS

if TYPE_CHECKING:
    from rich.console import Console

LogFormat = Literal["text", "json"]

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trinity_correlation_id", default=None
)
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "trinity_log_context", default=MappingProxyType({})
)

# Loggers of libraries that log every request at INFO or DEBUG: quiet below WARNING.
QUIET_LOGGERS = ("httpx", "httpcore")
# Names ending so hold secrets: masked in logs, and refused in settings.yaml.
SECRET_SUFFIXES = ("key", "token", "secret", "password")
# Fields whose whole value is masked: secrets, and headers that carry them.
_SECRET_FIELDS = (*SECRET_SUFFIXES, "authorization")
MASK = "***"


# A library's records go where the application sends them, and nowhere otherwise: without
# this, Python's last-resort handler prints Trinity's warnings on stderr in commands and
# scripts that set up no logging (`trinity doctor` reports a crash in its table, once).
logging.getLogger("trinity").addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """A logger under Trinity's hierarchy (`trinity.*`), for `get_logger(__name__)`."""
    return logging.getLogger(name if name.startswith("trinity") else f"trinity.{name}")


# ---------------------------------------------------------------------------- context


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextmanager
def correlation(correlation_id: str | None = None) -> Iterator[str]:
    """Tag every record logged inside with `correlation_id` (a new one if None)."""
    chosen = correlation_id or new_correlation_id()
    token = _correlation_id.set(chosen)
    try:
        yield chosen
    finally:
        _correlation_id.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (such as page and block) to every record logged inside."""
    token = _context.set(MappingProxyType({**_context.get(), **fields}))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the correlation id and the context fields on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = _correlation_id.get()
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


# ---------------------------------------------------------------------------- redaction

_SECRET_NAME = r"[A-Za-z0-9_.-]*(?:" + "|".join(SECRET_SUFFIXES) + r")"
_PATTERNS = (
    # Authorization: Bearer sk-...  /  'authorization': 'Basic ...'
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer\s+|basic\s+)?)([^\s'\",}]+)"),
    # x-api-key: ...   and any NAME_KEY=..., "token": "...", password: ...
    re.compile(r"(?i)(\b" + _SECRET_NAME + r"['\"]?\s*[:=]\s*['\"]?)([^\s'\",}&]+)"),
    # Provider key shapes, wherever they appear.
    re.compile(r"()\b((?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,})"),
    # user:password@ and ?api_key=... in any URL, whoever quotes it (httpx, a library).
    *URL_SECRET_PATTERNS,
)
# Words one of the patterns above needs (in any case) before it can match: most log text
# has none, and looking for them costs far less than any of the patterns.
_TRIGGERS = ("authorization", "sk-", "pk-", "rk-", *SECRET_SUFFIXES, *URL_SECRET_TRIGGERS)


def _might_match(text: str) -> bool:
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


class Redactor:
    """Masks known secret values and anything shaped like a credential in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Mask these values too (from settings read after logging began)."""
        # Longest first, so a secret that contains another is masked whole. Very short
        # values would mask ordinary words; a credential is never that short.
        known = {*self.secrets, *(s for s in secrets if len(s) >= 4)}
        self.secrets = sorted(known, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if not _might_match(text):
            return text
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text

    def clean(self, text: str) -> bool:
        """True when `text` certainly holds nothing that `text()` would mask."""
        return not _might_match(text) and not any(s in text for s in self.secrets)

    def value(self, value: Any, name: str = "") -> Any:
        """`value` with secrets masked; a whole value under a secret-like name is masked."""
        if _secret_name(name) and value not in (None, ""):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def _secret_name(name: str) -> bool:
    return name.lower().endswith(_SECRET_FIELDS)


# Attributes every LogRecord has: not user data, never rewritten.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "correlation_id",
}


class RedactingFilter(logging.Filter):
    """Rewrites a record so that no secret survives in its message, extras or traceback."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.args = None
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
        if self._plain(record, message, extras):
            # The common case, a record of plain fields with nothing to mask in any of them,
            # tested with one search over them all rather than one per field (redaction
            # was a large share of the cost of every record).
            record.msg = message
            for name, value in extras.items():
                if _secret_name(name) and value not in (None, ""):
                    setattr(record, name, MASK)
            return True
        record.msg = self.redactor.text(message)
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.text(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        for name, value in extras.items():
            setattr(record, name, self.redactor.value(value, name))
        return True

    def _plain(self, record: logging.LogRecord, message: str, extras: dict[str, Any]) -> bool:
        """True when no traceback, and only scalars with nothing to mask, are in `record`."""
        if record.exc_info or record.exc_text:
            return False
        texts = [message]
        for value in extras.values():
            if isinstance(value, str):
                texts.append(value)
            elif not (value is None or isinstance(value, int | float)):  # bool is an int
                return False
        # Joined, the texts can only match more than each alone: never less.
        return self.redactor.clean("\n".join(texts))


def secrets_from_environment(environ: Mapping[str, str]) -> list[str]:
    """Values of environment variables named like secrets (…_KEY, …_TOKEN, …)."""
    return [
        value
        for name, value in environ.items()
        if name.lower().endswith(SECRET_SUFFIXES) and value.strip()
    ]


# ---------------------------------------------------------------------------- formatting


def json_formatter() -> logging.Formatter:
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message,
    correlation_id, and any structured fields passed with `extra=`."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        ["levelname", "name", "message", "correlation_id"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


# ---------------------------------------------------------------------------- installing


@dataclass(frozen=True)
class LogProfile:
    """How one profile logs. Files always hold JSON lines, for jq and log shippers."""

    name: str
    level: str = "INFO"
    format: LogFormat = "text"
    color: bool = True
    console: bool = True
    # The least level the console shows (default: `level`); files get `level`.
    console_level: str | None = None
    directory: Path | None = Path("logs")
    max_bytes: int = 10 * 1024 * 1024
    backup_count: int = 5


@dataclass
class InstalledLogging:
    """Handlers put in place by `install_logging`; `remove()` puts everything back."""

    profile: LogProfile
    redactor: Redactor = field(default_factory=Redactor)
    handlers: list[logging.Handler] = field(default_factory=list)
    levels: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def remove(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        for name, level in self.levels.items():
            logging.getLogger(name or None).setLevel(level)
        self.handlers.clear()


def install_logging(
    profile: LogProfile,
    *,
    console: Console | None = None,
    secrets: Iterable[str] = (),
    base_dir: Path = Path(),
) -> InstalledLogging:
    """Route Trinity's records (and other libraries' warnings) as `profile` says.

    The console handler writes to stderr (through `console` when given, so log lines
    and the progress bar share one Rich console), and stdout stays clean for `--json`.
    A log folder that cannot be written costs the files, after a warning, not the build.
    """
    installed = InstalledLogging(profile, Redactor(secrets))
    level = logging.getLevelName(profile.level)
    root = logging.getLogger()
    # Other libraries speak from WARNING up (or the profile's level, if higher).
    for name, wanted in (("", max(logging.WARNING, level)), ("trinity", level)):
        installed.levels[name] = logging.getLogger(name or None).level
        logging.getLogger(name or None).setLevel(wanted)
    for name in QUIET_LOGGERS:
        installed.levels[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(logging.WARNING)
    filters: list[logging.Filter] = [ContextFilter(), RedactingFilter(installed.redactor)]
    handlers: list[logging.Handler] = []
    if profile.console:
        handlers.append(_console_handler(profile, console))
    if profile.directory is not None:
        handlers += _file_handlers(profile, base_dir / profile.directory, installed)
    for handler in handlers:
        for log_filter in filters:
            handler.addFilter(log_filter)
        root.addHandler(handler)
        installed.handlers.append(handler)
    for problem in installed.problems:
        get_logger(__name__).warning("%s", problem)
    return installed


def _console_handler(profile: LogProfile, console: Console | None) -> logging.Handler:
    handler: logging.Handler
    if profile.format == "json":
        handler = logging.StreamHandler(console.file if console is not None else sys.stderr)
        handler.setFormatter(json_formatter())
    elif profile.color and console is not None and console.is_terminal:
        # Rich's columns wrap each record to the width: only a terminal has one.
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(console.file if console is not None else sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.setLevel(profile.console_level or profile.level)
    return handler


class _LogFiles:
    """The log files of one folder, which stop together, after one warning, when one of
    them cannot be written (a full disk, a read-only folder): logging must never cost a
    build, nor bury its output under a traceback for every record."""

    def __init__(self, *, console: bool) -> None:
        self.stopped = False
        self._console = console

    def stop(self, path: str, exc: OSError) -> None:
        if self.stopped:
            return
        self.stopped = True
        message = f"cannot write {shown_path(path)} ({os_reason(exc)}); log files are off "
        message += "for the rest of this run"
        if self._console:
            get_logger(__name__).warning("%s", message)
        else:  # the profile logs to no console: stderr is still the user's
            sys.stderr.write(f"Warning: {message}\n")


class _LazyRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Creates its folder and file with the first record, so a run that logs nothing
    (a command refused for bad input, say) leaves no trace in the project.

    It also formats each record once. The standard library's `shouldRollover` formats
    every record a second time to measure it, and stats and seeks the file: a large
    share of a warm rebuild's time per block. This handler counts the bytes it writes
    instead.

    A file that cannot be written stops `files` (its folder's log files) instead of
    printing Python's "--- Logging error ---" traceback for each record.
    """

    def __init__(self, path: Path, max_bytes: int, backup_count: int, files: _LogFiles) -> None:
        super().__init__(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8", delay=True
        )
        self._size = 0
        self._rotates = True
        self._files = files

    def _open(self) -> Any:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        stream = super()._open()
        status = os.fstat(stream.fileno())
        self._size = status.st_size
        # Never rotate anything but a regular file (a log sent to /dev/null, say).
        self._rotates = statmodule.S_ISREG(status.st_mode)
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        if self._files.stopped:
            return
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            size = len(line.encode("utf-8")) if not line.isascii() else len(line)
            if self._should_rotate(size):
                self.doRollover()
                if self.stream is None:
                    self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self._size += size
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _should_rotate(self, size: int) -> bool:
        # An empty file is never rotated, even for a record larger than max_bytes.
        return self._rotates and 0 < self.maxBytes <= self._size + size and self._size > 0

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)  # a bug in a log call: worth its traceback
            return
        self._files.stop(self.baseFilename, error)
        stream, self.stream = self.stream, None
        if stream is not None:
            with suppress(OSError):  # what it still buffers cannot be written either
                stream.close()

    def close(self) -> None:
        # Closing flushes what is buffered, which can meet the full disk too.
        try:
            super().close()
        except OSError as exc:
            self._files.stop(self.baseFilename, exc)


def _file_handlers(
    profile: LogProfile, directory: Path, installed: InstalledLogging
) -> list[logging.Handler]:
    if not _writable(directory):
        installed.problems.append(f"cannot write logs to {directory}; logging to the console only")
        return []
    handlers: list[logging.Handler] = []
    files = _LogFiles(console=profile.console)
    for name, level in (("trinity.log", profile.level), ("errors.log", "ERROR")):
        handler = _LazyRotatingFileHandler(
            directory / name, profile.max_bytes, profile.backup_count, files
        )
        handler.setFormatter(json_formatter())
        handler.setLevel(level)
        handlers.append(handler)
    return handlers


def _writable(directory: Path) -> bool:
    """True if `directory` exists and is writable, or could be created."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


__all__ = [
    "ContextFilter",
    "InstalledLogging",
    "LogProfile",
    "RedactingFilter",
    "Redactor",
    "correlation",
    "current_correlation_id",
    "get_logger",
    "install_logging",
    "log_context",
    "new_correlation_id",
]
