"""Running the checks on an answer (interim: words and chars only; the full set follows)."""

from __future__ import annotations

from trinity.checks.spec import CheckFailure, CheckSpec, Range


def evaluate(text: str, spec: CheckSpec, *, format: str = "markdown") -> list[CheckFailure]:
    """Every check of `spec` that `text` fails, in a stable order; [] when it passes all.
    `format` is the block's ("markdown", "text" or "json")."""
    failures = []
    for name, count, bounds in (
        ("words", len(text.split()), spec.words),
        ("chars", len(text), spec.chars),
    ):
        failure = _out_of(name, count, bounds)
        if failure is not None:
            failures.append(failure)
    return failures


def _out_of(name: str, count: int, bounds: Range | None) -> CheckFailure | None:
    if bounds is None:
        return None
    if bounds.min is not None and count < bounds.min:
        return CheckFailure(name, f"{count} {name}; at least {bounds.min}")
    if bounds.max is not None and count > bounds.max:
        return CheckFailure(name, f"{count} {name}; at most {bounds.max}")
    return None
