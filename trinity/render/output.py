"""The output tree: written into a staging folder, swapped into place only on success.

A failed or interrupted build therefore leaves the previous site exactly as it was. The
swap refuses to replace a folder Trinity did not write (one without `.trinity/`), so a
mistyped `--output` can never wipe someone's files.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape as xml_escape

from trinity.errors import ConfigError
from trinity.yamlfile import shown_path

MARKER_DIR = ".trinity"
STATIC_DIR = "static"


class StagedOutput:
    """Files for the next version of `output_dir`, committed all at once."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        check_output_dir(self.output_dir)
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        self.staging = self.output_dir.parent / f".{self.output_dir.name}.staging-{tag}"
        self._retired = self.output_dir.parent / f".{self.output_dir.name}.old-{tag}"
        self.staging.mkdir()
        (self.staging / MARKER_DIR).mkdir()

    def path(self, relative: str) -> Path:
        """A path inside the staging folder; anything that would leave it is refused."""
        target = (self.staging / relative).resolve()
        # self.staging is already resolved: it is a new folder beside the resolved output.
        if not target.is_relative_to(self.staging):
            raise ValueError(f"refusing to write outside the output folder: {relative}")
        return target

    def write_text(self, relative: str, text: str) -> None:
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def copy_static(self, folders: Iterable[Path]) -> int:
        """Copy theme static folders into static/, later folders overriding; files copied."""
        copied = 0
        destination = self.path(STATIC_DIR)
        for folder in folders:
            for source in sorted(folder.rglob("*")):
                if source.is_file():
                    target = destination / source.relative_to(folder)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    copied += 1
        return copied

    def commit(self) -> None:
        """Swap the staging folder into place of the output folder."""
        had_output = self.output_dir.exists()
        if had_output:
            self.output_dir.rename(self._retired)
        try:
            self.staging.rename(self.output_dir)
        except OSError:
            if had_output:
                self._retired.rename(self.output_dir)
            raise
        if had_output:
            shutil.rmtree(self._retired, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also on success: after commit() the staging folder is gone and this is a no-op.
        self.discard()


def check_output_dir(output_dir: Path) -> None:
    """Refuse an output folder that a build could not safely replace."""
    shown = shown_path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"{shown} exists and is not a folder", key="build.output_dir")
    written_by_us = (output_dir / MARKER_DIR).is_dir()
    if output_dir.is_dir() and not written_by_us and any(output_dir.iterdir()):
        raise ConfigError(
            f"{shown} is not empty and was not written by Trinity (no {MARKER_DIR}/ "
            "inside); choose another output folder or empty it",
            key="build.output_dir",
        )


def sitemap_xml(base_url: str, urls: Iterable[str]) -> str:
    """A sitemaps.org urlset for pages at `urls` relative to `base_url`."""
    entries = "".join(f"  <url><loc>{xml_escape(base_url + url)}</loc></url>\n" for url in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{entries}</urlset>\n"
    )


def robots_txt(base_url: str) -> str:
    return f"User-agent: *\nAllow: /\n\nSitemap: {base_url}sitemap.xml\n"
