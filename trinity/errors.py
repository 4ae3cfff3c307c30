"""Every error Trinity raises on purpose, and the exit code each one maps to.

Exception hierarchy::

    TrinityError                      exit 1
    ├── InputError                    exit 2  (bad settings, content, theme or command line)
    │   ├── ConfigError                       config/settings.yaml and the environment
    │   ├── ContentError                      content/pages.yaml and content/data/
    │   ├── ThemeError                        themes and their templates
    │   └── MissingDependencyError            an optional extra is not installed
    ├── BuildFailed                   exit 1  (some blocks could not be generated)
    ├── BuildInterrupted              exit 130
    ├── LockBusy                      exit 1  (another build holds the output folder)
    ├── ResourceError                 exit 1  (the disk is full, read-only or not ours to write)
    └── LLMError                              one failed request to a model      retryable?
        ├── LLMConnectionError                cannot reach the server             yes
        ├── LLMTimeoutError                   no answer in time                   yes
        ├── LLMStatusError                    the server answered an HTTP error   408, 409: yes
        │   ├── RateLimitedError              429 (carries retry_after)           yes
        │   ├── AuthenticationError           401, 403                            never
        │   ├── BadRequestError               400, 404, 422 and any other 4xx     never
        │   └── ServerError                   5xx                                 500, 502-504
        ├── MalformedResponseError            the answer is not what the protocol promises  no
        ├── CircuitBreakerOpen                the endpoint is failing; not called  no
        ├── BudgetExceeded                    `--max-cost` would be exceeded       never
        └── ModelFailed                       the embedded model could not load or  never
            │                                 generate (an error in its worker)
            └── ModelCrashed                  its worker process died (a signal,   never
                                              e.g. SIGSEGV in llama.cpp, or an exit)

Every LLMError has `retryable` (may the same request succeed later, unchanged?) and
`attempts` (how many calls were made before it was raised; set by the retry layer).
`error_for_status` picks the LLMStatusError subclass for an HTTP status,
`parse_retry_after` reads a Retry-After header, and `resource_error` words a write the
file system refused (full, read-only, not permitted) as a ResourceError.

Messages name the file and key at fault, and never contain secrets.
"""

from __future__ import annotations

import errno as errnos
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# HTTP statuses worth trying again: the request may succeed later unchanged.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class TrinityError(Exception):
    """Base class of every error Trinity raises on purpose."""

    exit_code = EXIT_BUILD_FAILED


class InputError(TrinityError):
    """The user gave us something we cannot use; they must change it."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        self.detail = message
        where = ": ".join(part for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(InputError):
    """Invalid settings in config/settings.yaml or the environment."""


class ContentError(InputError):
    """Invalid pages, blocks, prompts or data."""


class ThemeError(InputError):
    """A missing or broken theme or template."""


class MissingDependencyError(InputError):
    """An optional extra is needed for what the settings ask for."""


class BuildFailed(TrinityError):
    """The build ran but some blocks could not be generated; output/ was left untouched."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]]) -> None:
        # Each failure is (page slug, block name, reason).
        self.failures = failures
        super().__init__(message)


class LockBusy(TrinityError):
    """Another process holds the lock on a folder and the caller chose not to wait."""


class ResourceError(TrinityError):
    """The file system refused a write: no space left, over quota, read-only, or not
    permitted. `path` is the folder the user knows (output/, say), `errno` the refusal's
    number; the message says what was being written and what to do about it."""

    def __init__(self, message: str, *, path: str, errno: int | None = None) -> None:
        self.path = path
        self.errno = errno
        super().__init__(message)


class BuildInterrupted(TrinityError):
    """The user interrupted the build; output/ was left untouched."""

    exit_code = EXIT_INTERRUPTED


class LLMError(TrinityError):
    """A request to a language model failed.

    `retryable` says whether the same request may succeed if sent again unchanged;
    `attempts` is how many calls were made in all (the retry layer sets it).
    """

    retryable: bool = False
    attempts: int = 1


class LLMConnectionError(LLMError):
    """The server could not be reached, or dropped the connection."""

    retryable = True


class LLMTimeoutError(LLMError):
    """The server did not answer within the request timeout."""

    retryable = True


class LLMStatusError(LLMError):
    """The server answered with an HTTP error status.

    Raised as is for statuses no subclass claims (408 and 409, which are retryable, and
    anything outside 4xx/5xx, which is not). `retry_after` is the server's Retry-After in
    seconds, when it sent one (429 and 503 often do).
    """

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        self.status = status
        self.retry_after = retry_after
        self.retryable = status in RETRYABLE_STATUSES
        super().__init__(message)


class RateLimitedError(LLMStatusError):
    """HTTP 429: too many requests or tokens for now; wait `retry_after` seconds if given."""

    def __init__(
        self, message: str, *, status: int = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.retryable = True


class AuthenticationError(LLMStatusError):
    """HTTP 401 or 403: the API key is missing, wrong or not allowed; never retried."""

    def __init__(
        self, message: str, *, status: int = 401, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.retryable = False


class BadRequestError(LLMStatusError):
    """HTTP 400, 404, 422 or another 4xx: the request itself is wrong; never retried."""

    def __init__(
        self, message: str, *, status: int = 400, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)
        self.retryable = False


class ServerError(LLMStatusError):
    """HTTP 5xx: the server failed; 500, 502, 503 and 504 are retried, 501 and others not."""

    def __init__(
        self, message: str, *, status: int = 500, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after)


class MalformedResponseError(LLMError):
    """The server answered, but not in the shape its protocol promises."""


class CircuitBreakerOpen(LLMError):
    """The breaker for an endpoint is open: the request was refused without being sent.

    `retry_at` is the breaker clock's time (time.monotonic by default) when a trial call
    will be let through; `remaining` is the seconds left until then when this was raised.
    Not retryable here: a caller may fail over to another endpoint instead.
    """

    def __init__(self, name: str, *, retry_at: float, remaining: float, detail: str = "") -> None:
        self.name = name
        self.retry_at = retry_at
        self.remaining = max(0.0, remaining)
        who = f"the circuit breaker for {name}" if name else "the circuit breaker"
        if detail:
            message = f"{who} is open ({detail}); the request was not sent"
        else:
            message = (
                f"{who} is open after repeated failures; the request was not sent "
                f"(next trial in {self.remaining:.1f} s)"
            )
        super().__init__(message)


class BudgetExceeded(LLMError):
    """A request was refused because it would take the build past `--max-cost`."""

    def __init__(
        self, message: str, *, spent: float | None = None, limit: float | None = None
    ) -> None:
        self.spent = spent
        self.limit = limit
        super().__init__(message)


class ModelFailed(LLMError):
    """The embedded model could not be loaded, or failed while generating."""


class ModelCrashed(ModelFailed):
    """The embedded model's worker process died: a signal (`signal_name`) or an exit.

    The build survives it, because the model runs in a child process; what killed it
    (`returncode`, negative for a signal, as subprocess reports it) is in the message,
    with the likely cause and the command that fixes it.
    """

    def __init__(self, summary: str, *, fix: str = "", returncode: int | None = None) -> None:
        # `summary` says what happened; `fix`, the likely cause and what to do about it.
        self.summary = summary
        self.fix = fix
        self.returncode = returncode
        super().__init__(f"{summary}; {fix}" if fix else summary)


def error_for_status(status: int, message: str, retry_after: float | None = None) -> LLMStatusError:
    """The LLMStatusError subclass that fits an HTTP error `status`."""
    kind: type[LLMStatusError]
    if status == 429:
        kind = RateLimitedError
    elif status in (401, 403):
        kind = AuthenticationError
    elif status in (408, 409):
        kind = LLMStatusError  # 4xx, but the same request may well succeed later
    elif 400 <= status < 500:
        kind = BadRequestError
    elif 500 <= status < 600:
        kind = ServerError
    else:
        kind = LLMStatusError
    return kind(message, status=status, retry_after=retry_after)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    Returns a number >= 0 (a date in the past gives 0), or None when the header is
    absent or cannot be read. `now` (default: the current UTC time) is for dates.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


_PERMISSION_FIX = (
    "let this user write to it and to the folder that holds it, or choose {instead}, and {again}"
)
# What the user can do about each refusal of a write; any other error gets _OTHER_FIX.
_RESOURCE_FIXES = {
    errnos.ENOSPC: "free some space and {again}",
    errnos.EDQUOT: "free some space or raise the disk quota, and {again}",
    errnos.EROFS: "choose {instead} on a writable file system and {again}",
    errnos.EACCES: _PERMISSION_FIX,
    errnos.EPERM: _PERMISSION_FIX,
}
_OTHER_FIX = "check the file system and {again}"


def resource_error(
    exc: OSError,
    folder: str,
    doing: str,
    *,
    instead: str = "another folder",
    again: str = "try again",
    after: str = "",
) -> ResourceError:
    """`exc` as one line: the `folder` at fault, the system's reason, what was being done,
    what to do (choose `instead`, then do it `again`), and what became of the old files."""
    fix = _RESOURCE_FIXES.get(exc.errno or 0, _OTHER_FIX).format(instead=instead, again=again)
    message = f"{folder}: {os_reason(exc)} while {doing}; {fix}"
    return ResourceError(f"{message}; {after}" if after else message, path=folder, errno=exc.errno)


def os_reason(exc: OSError) -> str:
    """What the system said about `exc`, as a message phrase: "no space left on device"."""
    reason = exc.strerror or one_line(exc)
    return reason[:1].lower() + reason[1:]


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (for a warning), or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__
