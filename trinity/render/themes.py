"""Themes: finding them, following `extends`, and rendering their Jinja templates.

Templates resolve through a ChoiceLoader, first match wins: the project's `templates/`
(site overrides), then the theme's, then each parent's. Every template is parsed when the
theme loads, so a syntax error is reported before any LLM call.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
from markupsafe import Markup

from trinity.errors import ConfigError, ThemeError
from trinity.layout.findings import LayoutLimits, SlotLimits
from trinity.messages import did_you_mean, shown_path
from trinity.projectfiles import BUILTIN_THEMES_DIR, PROJECT_THEMES_DIR, SITE_TEMPLATES_DIR
from trinity.schema import Fields
from trinity.yamlfile import load_data_file

THEME_FILE = "theme.yaml"
REQUIRED_TEMPLATES = ("base.html", "index.html", "page.html", "item.html")


@dataclass(frozen=True)
class Theme:
    """A theme and its parents, child first in `folders`."""

    name: str
    description: str
    voice: str | None
    defaults: Mapping[str, Any]
    folders: tuple[Path, ...]
    extends: str | None = None
    # What the layout guardian holds its pages to (`guard:`; the nearest theme that says).
    guard: LayoutLimits = field(default_factory=LayoutLimits)

    @property
    def folder(self) -> Path:
        return self.folders[0]

    @property
    def builtin(self) -> bool:
        return self.folder.parent == BUILTIN_THEMES_DIR


def _search_path(project_dir: Path) -> list[Path]:
    return [project_dir / PROJECT_THEMES_DIR, BUILTIN_THEMES_DIR]


def _theme_folders(project_dir: Path) -> dict[str, list[Path]]:
    """Theme name -> its folders, project themes before built-in ones of the same name."""
    found: dict[str, list[Path]] = {}
    for root in _search_path(project_dir):
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / THEME_FILE).is_file():
                    found.setdefault(folder.name, []).append(folder)
    return found


def list_themes(project_dir: Path) -> list[Theme]:
    """Every theme the project can use, by name; a broken theme raises ThemeError."""
    return [load_theme(name, project_dir) for name in sorted(_theme_folders(project_dir))]


def load_theme(name: str, project_dir: Path) -> Theme:
    """Read a theme and its `extends` chain."""
    available = _theme_folders(project_dir)
    if name not in available:
        hint = did_you_mean(name, available)
        known = ", ".join(sorted(available)) or "none"
        raise ThemeError(f"unknown theme '{name}'{hint}; available: {known}", argument="theme")
    folders: list[Path] = []
    voices: list[str | None] = []
    guards: list[LayoutLimits | None] = []
    first: dict[str, Any] | None = None
    current: str | None = name
    while current is not None:
        # A project theme may extend the built-in theme it shadows, so skip folders in use.
        candidates = [f for f in available.get(current, []) if f not in folders]
        if not candidates:
            # Every folder of that name is already in the chain: it goes round in a circle.
            problem = (
                "'extends' goes round in a circle: "
                + " -> ".join([*(f.name for f in folders), current])
                if current in available
                else f"extends unknown theme '{current}'{did_you_mean(current, available)}"
            )
            raise ThemeError(problem, path=shown_path(folders[-1] / THEME_FILE), key="extends")
        folder = candidates[0]
        meta = _read_theme_file(folder)
        folders.append(folder)
        voices.append(meta["voice"])
        guards.append(meta["guard"])
        first = first or meta
        current = meta["extends"]
    assert first is not None
    return Theme(
        name=name,
        description=first["description"],
        # A child that says nothing about its voice speaks with its parent's.
        voice=next((v for v in voices if v is not None), None),
        defaults=MappingProxyType(_merged_defaults(folders)),
        folders=tuple(folders),
        extends=first["extends"],
        guard=next((g for g in guards if g is not None), LayoutLimits()),
    )


def _read_theme_file(folder: Path) -> dict[str, Any]:
    path = folder / THEME_FILE
    f = Fields(load_data_file(path, ThemeError), path=shown_path(path), key="", error=ThemeError)
    name = f.string("name", folder.name, nonempty=True)
    if name != folder.name:
        raise f.fail(f"'{name}' must match the theme's folder name '{folder.name}'", "name")
    meta = {
        "description": f.string("description", ""),
        "extends": f.string("extends", None, nonempty=True),
        "voice": f.string("voice", None),
        "defaults": f.mapping("defaults"),
        "guard": _read_guard(f.child("guard")) if f.has("guard") else None,
    }
    f.done()
    return meta


def _read_guard(f: Fields) -> LayoutLimits:
    """`guard:` in theme.yaml: the default slot's limits, slots by block name (each key
    falling back on the default's), and the class that heals overflow (docs/themes.md,
    "The layout guardian")."""
    default = _read_slot(f, SlotLimits())
    slots = f.child("slots")
    by_name = {}
    for name in slots.raw:
        slot = slots.child(name)
        by_name[name] = _read_slot(slot, default)
        slot.done()
    slots.done()
    limits = LayoutLimits(
        default=default,
        slots=MappingProxyType(by_name),
        heal_class=_css_class(f, "heal_class"),
    )
    f.done()
    return limits


def _read_slot(f: Fields, base: SlotLimits) -> SlotLimits:
    return SlotLimits(
        heading_lines=f.integer("heading_lines", base.heading_lines, minimum=1),
        block_lines=f.integer("block_lines", base.block_lines, minimum=1),
    )


def _css_class(f: Fields, name: str) -> str | None:
    value: str | None = f.string(name, None, nonempty=True)
    if value is not None and not re.fullmatch(r"-?[A-Za-z_][A-Za-z0-9_-]*", value):
        raise f.fail(f"'{value}' is not a CSS class name", name)
    return value


def _merged_defaults(folders: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for folder in reversed(folders):  # parents first, children override
        merged.update(_read_theme_file(folder)["defaults"])
    return merged


class ThemeRenderer:
    """A theme's Jinja environment: autoescaped, StrictUndefined, all templates parsed."""

    def __init__(
        self,
        theme: Theme,
        project_dir: Path,
        option_overrides: Mapping[str, Any] | None = None,
        settings_path: str = "config/settings.yaml",
    ) -> None:
        self.theme = theme
        self.options = self._options(option_overrides or {}, settings_path)
        loaders: list[jinja2.BaseLoader] = []
        site_templates = project_dir / SITE_TEMPLATES_DIR
        if site_templates.is_dir():
            loaders.append(jinja2.FileSystemLoader(site_templates))
        loaders.extend(jinja2.FileSystemLoader(f / "templates") for f in theme.folders)
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
            trim_blocks=True,
            lstrip_blocks=True,
            # Every template is parsed once, below, for the whole build: without this, Jinja
            # stats each template file (and every one it extends) on every page it renders.
            auto_reload=False,
        )
        self._parse_all()

    def _options(self, overrides: Mapping[str, Any], settings_path: str) -> dict[str, Any]:
        for key in overrides:
            if key not in self.theme.defaults:
                hint = did_you_mean(key, self.theme.defaults)
                declared = ", ".join(sorted(self.theme.defaults)) or "none"
                raise ConfigError(
                    f"theme '{self.theme.name}' has no option '{key}'{hint}; "
                    f"its options: {declared}",
                    path=settings_path,
                    key=f"build.theme_options.{key}",
                )
        return {**self.theme.defaults, **overrides}

    def _parse_all(self) -> None:
        digest = hashlib.sha256()
        for name in self.env.list_templates():
            try:
                self.env.get_template(name)
            except jinja2.TemplateSyntaxError as exc:
                raise ThemeError(
                    f"template syntax error at line {exc.lineno}: {exc.message}",
                    path=shown_path(exc.filename) if exc.filename else name,
                ) from None
            source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            digest.update(f"{len(name)}:{name}{len(source)}:{source}".encode())
        # Every template the pages could use: a page rendered with the same templates and
        # the same context is the same page (the build reuses it instead of rendering).
        self.digest = digest.hexdigest()

    def require(
        self, used_by: Mapping[str, str] | None = None, pages_path: str = "content/pages.yaml"
    ) -> None:
        """Raise ThemeError for a missing required template, or one a page asks for.

        `used_by` maps template names to the key path of a page that uses them.
        """
        known = set(self.env.list_templates())
        for name in REQUIRED_TEMPLATES:
            if name not in known:
                raise ThemeError(
                    f"template '{name}' is required by every theme but '{self.theme.name}' "
                    "has none (nor do its parents)",
                    path=shown_path(self.theme.folder / "templates"),
                )
        for name, source in sorted((used_by or {}).items()):
            if name not in known:
                raise ThemeError(
                    f"template '{name}' not found in theme '{self.theme.name}'"
                    f"{did_you_mean(name, known)}",
                    path=pages_path,
                    key=f"{source}.template",
                )

    def render(self, template_name: str, context: Mapping[str, Any]) -> str:
        template = self.env.get_template(template_name)
        try:
            return template.render(context)
        except jinja2.UndefinedError as exc:
            message = f"unknown variable: {exc.message}"
            failure: Exception = exc
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            message = f"template error: {exc}"
            failure = exc
        raise ThemeError(message, path=_failing_template(failure, template)) from None

    def placeholder(self, page_title: str, block_name: str) -> Markup:
        """What stands in for a block that could not be generated (`--keep-going`).

        A theme may style it with `placeholder.html`; otherwise a plain note is used.
        """
        context = {"page_title": page_title, "block": block_name, "theme": self.theme}
        if "placeholder.html" in self.env.list_templates():
            return Markup(self.render("placeholder.html", context))
        return Markup('<p class="placeholder">This section is not available yet.</p>')

    def static_folders(self) -> list[Path]:
        """Static folders to copy, parents first so children override their files."""
        return [f / "static" for f in reversed(self.theme.folders) if (f / "static").is_dir()]


def _failing_template(exc: Exception, template: jinja2.Template) -> str:
    """'file, line N' of the template frame that raised (Jinja keeps template frames)."""
    where = template.filename or template.name or "template"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".htm", ".xml")):
            where = f"{shown_path(filename)}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return where
