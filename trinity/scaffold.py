"""`trinity init`: write the example project (the one this repository builds) into a folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from trinity.errors import InputError
from trinity.messages import shown_path
from trinity.oserrors import resource_error

EXAMPLE_DIR = Path(__file__).resolve().parent / "example"
# Stored without the dot so that packaging tools do not treat it as the package's own.
_RENAMES = {"gitignore": ".gitignore"}


def example_files() -> list[Path]:
    """The example project's files, relative to its folder."""
    return sorted(p.relative_to(EXAMPLE_DIR) for p in EXAMPLE_DIR.rglob("*") if p.is_file())


def write_project(directory: Path, *, force: bool = False) -> list[Path]:
    """Copy the example project into `directory`; refuse to overwrite unless `force`."""
    targets = {
        source: directory / _RENAMES.get(str(source), str(source)) for source in example_files()
    }
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not force:
        raise InputError(
            f"{existing[0]} already exists; use --force to overwrite "
            f"({len(existing)} file{'s' if len(existing) > 1 else ''} would be replaced)",
            key="init",
        )
    for source, target in targets.items():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(EXAMPLE_DIR / source, target)
        except OSError as exc:
            where = shown_path(directory) + os.sep
            raise resource_error(exc, where, f"writing {source.as_posix()}") from exc
    return list(targets.values())
