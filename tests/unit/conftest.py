"""Fixtures shared by the unit tests: a tiny project on disk, and the anyio backend."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from trinity.config import Settings, load_settings

MINIMAL_SETTINGS = "site:\n  title: Test Site\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from tmp_path, as a user runs from their project: messages show relative paths."""
    monkeypatch.chdir(tmp_path)


class ProjectFactory:
    """Writes config/settings.yaml, content/pages.yaml and content/data/ under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def settings_file(self, text: str = MINIMAL_SETTINGS) -> Path:
        path = self.root / "config" / "settings.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def pages(self, pages: Any) -> Path:
        """`pages` is the list under `pages:` (dumped as YAML), or raw YAML text."""
        path = self.root / "content" / "pages.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            pages if isinstance(pages, str) else yaml.safe_dump({"pages": pages}, sort_keys=False)
        )
        path.write_text(text, encoding="utf-8")
        return path

    def data(self, name: str, value: Any) -> Path:
        """A data file; the suffix of `name` chooses JSON or YAML."""
        path = self.root / "content" / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".json"):
            path.write_text(json.dumps(value), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(value, sort_keys=False), encoding="utf-8")
        return path

    def load(self, environ: Mapping[str, str] | None = None) -> Settings:
        if not (self.root / "config" / "settings.yaml").exists():
            self.settings_file()
        return load_settings(self.root, environ=environ or {})


@pytest.fixture
def project(tmp_path: Path) -> ProjectFactory:
    return ProjectFactory(tmp_path)


@pytest.fixture
def write_settings(tmp_path: Path) -> Callable[[str], Path]:
    """Write config/settings.yaml in a fresh project and return the project folder."""

    def write(text: str) -> Path:
        ProjectFactory(tmp_path).settings_file(text)
        return tmp_path

    return write
