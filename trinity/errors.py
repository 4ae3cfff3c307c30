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
    └── LLMError                              one failed request to a model
        ├── LLMConnectionError                cannot reach the server (retryable)
        ├── LLMTimeoutError                   no answer in time (retryable)
        ├── LLMStatusError                    the server answered an HTTP error
        └── MalformedResponseError            the answer is not what the protocol promises

Messages name the file and key at fault, and never contain secrets.
"""

from __future__ import annotations

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


class BuildInterrupted(TrinityError):
    """The user interrupted the build; output/ was left untouched."""

    exit_code = EXIT_INTERRUPTED


class LLMError(TrinityError):
    """A request to a language model failed."""

    retryable = False


class LLMConnectionError(LLMError):
    """The server could not be reached, or dropped the connection."""

    retryable = True


class LLMTimeoutError(LLMError):
    """The server did not answer within the request timeout."""

    retryable = True


class LLMStatusError(LLMError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status in RETRYABLE_STATUSES


class MalformedResponseError(LLMError):
    """The server answered, but not in the shape its protocol promises."""
