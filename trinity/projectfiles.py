"""Where a project keeps what a build reads, relative to the project folder, and where the
built-in themes are. Only paths: read by the page loader and the themes, and by the
unchanged-site check, which must not load either."""

from __future__ import annotations

from pathlib import Path

CONTENT_DIR = Path("content")
PAGES_FILE = CONTENT_DIR / "pages.yaml"
DATA_DIR = CONTENT_DIR / "data"
PROJECT_THEMES_DIR = Path("themes")
# A project's own templates, looked up before its theme's.
SITE_TEMPLATES_DIR = Path("templates")
BUILTIN_THEMES_DIR = Path(__file__).resolve().parent / "themes"

__all__ = [
    "BUILTIN_THEMES_DIR",
    "CONTENT_DIR",
    "DATA_DIR",
    "PAGES_FILE",
    "PROJECT_THEMES_DIR",
    "SITE_TEMPLATES_DIR",
]
