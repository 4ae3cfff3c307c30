"""Every error Trinity raises on purpose, and the exit code each one maps to.

Exception hierarchy::

    TrinityError                      exit 1
    ├── InputError                    exit 2  (bad settings, content, theme or command line)
    │   ├── ConfigError                       config/settings.yaml and the environment
    │   ├── ContentError                      content/pages.yaml and content/data/
    │   ├── ThemeError                        themes and their templates
    │   └── MissingDependencyError            an optional extra is not installed
    ├── BuildFailed                   exit 1  (some blocks could not be generated)
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
`trinity.llm.http.error_for_status` picks the LLMStatusError subclass for an HTTP status,
`trinity.llm.headers.parse_retry_after` reads a Retry-After header, and
`trinity.oserrors.resource_error` words a write the file system refused (full, read-only,
not permitted) as a ResourceError.

Messages name the file and key at fault, and never contain secrets.
"""

from __future__ import annotations

EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: the CLI exits with it (an interrupt raises no TrinityError)

# HTTP statuses worth trying again: the request may succeed later unchanged.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class TrinityError(Exception):
    """Base class of every error Trinity raises on purpose."""

    exit_code = EXIT_BUILD_FAILED


class InputError(TrinityError):
    """The user gave us something we cannot use; they must change it.

    Where it is: a file (`path`) and the key in it, an environment variable (`path`
    "environment"), or an `argument` of the call (a keyword of `build_site`, which the CLI
    shows as its flag: `max_cost` is `--max-cost`).
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        argument: str | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.argument = argument
        self.detail = message
        where = ": ".join(part for part in (path, key) if part) or argument
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
            # No countdown in the message: every block refused by one open breaker then
            # fails for the same reason, told once and grouped as one (`remaining` has it).
            message = f"{who} is open after repeated failures; the request was not sent"
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
