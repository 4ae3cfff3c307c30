"""Reading `checks:` (site-wide in config/settings.yaml, and under a block in
content/pages.yaml) and `guards:` into the types of trinity.checks.spec.

A block's checks overlay the site's key by key: a check the block names replaces the
site's, except `forbid`, whose patterns add to the site's. So `read_checks` returns only
the checks a mapping names, and `overlay` lays them over a CheckSpec. `mentions` stay
template sources here: trinity.site renders them with each page's data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from trinity.checks.patterns import compile_pattern
from trinity.checks.spec import (
    CheckSpec,
    GuardAction,
    GuardSpec,
    LinkRule,
    Pattern,
    PiiAction,
    Range,
)
from trinity.schema import Fields, describe

PII_ACTIONS = ("block", "redact", "warn")
GUARD_ACTIONS = ("block", "warn", "off")
BOILERPLATE_CHOICES = ("forbid", "allow")

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
# A host name: labels of letters, digits and '-', separated by dots ("docs.example.com").
_DOMAIN = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")

CheckChanges = Mapping[str, Any]


def _read_range(f: Fields, name: str) -> Range | None:
    """`{min: N, max: N}` (either may be left out), or null for no bound at all."""
    raw = f.value(name)
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise f.fail(f"expected {{min: N, max: N}}, got {describe(raw)}", name)
    bounds = f.child(name)
    low = bounds.integer("min", None, minimum=0)
    high = bounds.integer("max", None, minimum=1)
    bounds.done()
    if low is None and high is None:
        raise f.fail("expected {min: N, max: N}, with min, max or both", name)
    if low is not None and high is not None and low > high:
        raise f.fail(f"min ({low}) is above max ({high})", name)
    return Range(low, high)


def _read_flag(f: Fields, name: str) -> bool:
    return f.boolean(name)


def _read_mentions(f: Fields, name: str) -> tuple[str, ...]:
    return f.strings(name) or ()


def _read_forbid(f: Fields, name: str) -> tuple[Pattern, ...]:
    patterns = []
    for index, source in enumerate(f.strings(name) or ()):
        try:
            patterns.append(compile_pattern(source))
        except ValueError as exc:
            raise f.fail(str(exc), f"{name}[{index}]") from None
    return tuple(patterns)


def _read_boilerplate(f: Fields, name: str) -> bool:
    return bool(f.string(name, choices=BOILERPLATE_CHOICES) == "forbid")


def _read_pii(f: Fields, name: str) -> PiiAction | None:
    if f.value(name) is False:
        return None  # `pii: off` (YAML 1.1 reads a bare `off` as false): no PII check
    return f.string(name, None, choices=PII_ACTIONS)  # type: ignore[no-any-return]


def _read_links(f: Fields, name: str) -> LinkRule | None:
    """`{schemes: [https], domains: [example.com]}`; `{}` for the default schemes."""
    if f.value(name) is None:
        return None
    rule = f.child(name)
    schemes = rule.strings("schemes")
    domains = rule.strings("domains")
    rule.done()
    for index, scheme in enumerate(schemes or ()):
        if not _SCHEME.fullmatch(scheme.lower()):
            raise rule.fail(f"'{scheme}' is not a URL scheme such as https", f"schemes[{index}]")
    for index, domain in enumerate(domains or ()):
        if not _DOMAIN.fullmatch(domain.lower()):
            raise rule.fail(
                f"'{domain}' is not a domain name such as example.com", f"domains[{index}]"
            )
    return LinkRule(
        schemes=LinkRule.schemes if schemes is None else tuple(s.lower() for s in schemes),
        domains=None if domains is None else tuple(d.lower() for d in domains),
    )


_READERS: dict[str, Callable[[Fields, str], Any]] = {
    "words": _read_range,
    "chars": _read_range,
    "complete": _read_flag,
    "mentions": _read_mentions,
    "forbid": _read_forbid,
    "boilerplate": _read_boilerplate,
    "links": _read_links,
    "pii": _read_pii,
    "repeats": _read_flag,
}
CHECKS = tuple(_READERS)


def read_checks(f: Fields) -> CheckChanges:
    """The checks a `checks:` mapping names, read and validated, by name."""
    changes = {}
    for name, reader in _READERS.items():
        if f.has(name):
            changes[name] = reader(f, name)
        else:
            f.value(name)  # a known name, so that a misspelling of it gets a "did you mean"
    f.done()
    return changes


def overlay(base: CheckSpec, changes: CheckChanges) -> CheckSpec:
    """`base` with `changes` laid over it: each named check replaces base's, except
    `forbid`, which adds its patterns after base's (a pattern listed twice counts once)."""
    if "forbid" in changes:
        changes = {**changes, "forbid": tuple(dict.fromkeys(base.forbid + changes["forbid"]))}
    return replace(base, **changes)


def read_guards(f: Fields) -> GuardSpec:
    """`guards: {injection: block|warn|off, pii: block|warn|off}`."""
    guards = GuardSpec(
        injection=_guard_action(f, "injection", GuardSpec.injection),
        pii=_guard_action(f, "pii", GuardSpec.pii),
    )
    f.done()
    return guards


def _guard_action(f: Fields, name: str, default: GuardAction) -> GuardAction:
    if f.value(name) is False:
        return "off"  # YAML 1.1 reads a bare `off` as false
    return f.string(name, default, choices=GUARD_ACTIONS)  # type: ignore[no-any-return]


__all__ = [
    "BOILERPLATE_CHOICES",
    "CHECKS",
    "GUARD_ACTIONS",
    "PII_ACTIONS",
    "CheckChanges",
    "overlay",
    "read_checks",
    "read_guards",
]
