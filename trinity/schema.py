"""Typed reading of user-written mappings, with errors that name the file and key path.

A `Fields` reader hands out one typed value per key and remembers which keys it was asked
for; `done()` then rejects every other key with a "did you mean" hint. So the set of
allowed keys is exactly the set of keys the code reads, and cannot drift from it. A
required key that is missing while a misspelling of it is present is reported as that
misspelling.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

from trinity.errors import InputError
from trinity.messages import did_you_mean

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


def describe(value: Any) -> str:
    """How a YAML value reads to a user: 'a string', 'a list', 'null'."""
    if value is None:
        return "null"
    for kind, name in _TYPE_NAMES.items():
        if type(value) is kind:
            return name
    return type(value).__name__


class Fields:
    """Reads typed values from one mapping of a file, at a key path such as `llm`."""

    def __init__(
        self, raw: Any, *, path: str, key: str, error: type[InputError], optional: bool = True
    ) -> None:
        self.path = path
        self.key = key
        self.error = error
        self._seen: set[str] = set()
        if raw is None and optional:
            raw = {}
        if not isinstance(raw, Mapping):
            raise self.fail(f"expected a mapping, got {describe(raw)}")
        bad_keys = [k for k in raw if not isinstance(k, str)]
        if bad_keys:
            raise self.fail(f"keys must be strings, got {bad_keys[0]!r}")
        self.raw: Mapping[str, Any] = raw

    def at(self, name: str) -> str:
        """The key path of one field, as shown in messages."""
        if not self.key:
            return name
        return f"{self.key}{name}" if name.startswith("[") else f"{self.key}.{name}"

    def fail(self, message: str, name: str | None = None) -> InputError:
        return self.error(message, path=self.path, key=self.at(name) if name else self.key or None)

    def child(self, name: str) -> Fields:
        """The mapping under `name` (empty when absent), read with the same file and error."""
        return Fields(self.value(name, None), path=self.path, key=self.at(name), error=self.error)

    def has(self, name: str) -> bool:
        return name in self.raw

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self.raw:
            return self.raw[name]
        if default is REQUIRED:
            raise self._missing(name)
        return default

    def _missing(self, name: str) -> InputError:
        """The error for a required key that is absent.

        A key still unread that looks like a misspelling of it ('tittle' for 'title') is
        the real mistake: report that one, since "is required" alone hides the typo.
        """
        for other in self.raw:
            if other not in self._seen and did_you_mean(other, [name]):
                return self._unknown(other, [name])
        return self.fail("is required", name)

    def _unknown(self, name: str, known: Iterable[str], also: str | None = None) -> InputError:
        hint = did_you_mean(name, known) or (f" ({also})" if also else "")
        return self.fail(f"unknown key '{name}'{hint}", name)

    def value(self, name: str, default: Any = None) -> Any:
        """Any value, unchecked (for free-form data)."""
        return self._get(name, default)

    def string(
        self,
        name: str,
        default: str | _Required | None = REQUIRED,
        *,
        choices: tuple[str, ...] | None = None,
        nonempty: bool = False,
    ) -> Any:
        value = self._get(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"expected a string, got {describe(value)}", name)
        if nonempty and not value.strip():
            raise self.fail("must not be empty", name)
        if choices is not None and value not in choices:
            hint = did_you_mean(value, choices)
            raise self.fail(f"'{value}' is not one of {', '.join(choices)}{hint}", name)
        return value

    def boolean(self, name: str, default: bool | _Required = REQUIRED) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.fail(f"expected true or false, got {describe(value)}", name)
        return value

    def integer(
        self,
        name: str,
        default: int | _Required | None = REQUIRED,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self._get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"expected an integer, got {describe(value)}", name)
        self._check_range(name, value, minimum, maximum)
        return value

    def number(
        self,
        name: str,
        default: float | _Required | None = REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> Any:
        value = self._get(name, default)
        if value is None and default is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f"expected a number, got {describe(value)}", name)
        self._check_range(name, value, minimum, maximum)
        return float(value)

    def strings(self, name: str) -> tuple[str, ...] | None:
        """A list of non-empty strings, or None when absent."""
        value = self._get(name, None)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(f"expected a list of non-empty strings, got {describe(value)}", name)
        return tuple(value)

    def mapping(self, name: str, default: Mapping[str, Any] | None = None) -> dict[str, Any]:
        value = self._get(name, default if default is not None else {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(f"expected a mapping, got {describe(value)}", name)
        return dict(value)

    def _check_range(
        self, name: str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.fail(f"must be at least {minimum}, got {value}", name)
        if maximum is not None and value > maximum:
            raise self.fail(f"must be at most {maximum}, got {value}", name)

    def done(self, also: str | None = None) -> None:
        """Reject every key that was never read: it is a typo or a setting we do not have.

        `also` is advice added when no known key is close to the unknown one.
        """
        for name in self.raw:
            if name not in self._seen:
                raise self._unknown(name, self._seen, also)
