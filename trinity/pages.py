"""Writing pages: each rendered the moment its last block arrives, and the page manifest
(`output/.trinity/pages.json`: each page's fingerprint and size) read and written here,
so that a rebuild keeps the pages whose inputs have not changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trinity.answers import block_value
from trinity.layout.fixes import BlockLayout, guardian_css, inject_css
from trinity.plan import Job
from trinity.project import Project
from trinity.render.sitemap import robots_txt, sitemap_xml
from trinity.site import INDEX_SLUG, Block, Page
from trinity.staging import MARKER_DIR, BackgroundWriter, StagedOutput
from trinity.version import GENERATOR

# Each page's fingerprint and size, written by the build: what lets the next one keep them.
# It vouches for the pages on disk, so StagedOutput is told to put it in place last.
MANIFEST_FILE = f"{MARKER_DIR}/pages.json"


def page_root(page: Page) -> str:
    """The relative path from a page's folder back to the site root."""
    return "" if page.slug == INDEX_SLUG else "../" * (page.slug.count("/") + 1)


class PageWriter:
    """Renders each page the moment its last block arrives, then forgets its answers.

    With `keep_going`, a failed block takes the theme's placeholder so its page can still
    be written; otherwise a page with a failed block is never rendered.

    A page whose inputs (templates, the site-wide context, its own fields and its blocks'
    answers) are those of the current output's copy is not rendered again: that file is
    kept where it is. `output/.trinity/pages.json` records each page's fingerprint and size.
    """

    def __init__(
        self,
        project: Project,
        output: StagedOutput,
        files: BackgroundWriter,
        keep_going: bool = False,
    ) -> None:
        self.project = project
        self.output = output
        self.files = files
        self.keep_going = keep_going
        # Pages are rendered and written while blocks are still generating: these add up
        # the time spent on each, which the generate phase's wall time includes.
        self.render_time = 0.0
        self._keep_time = 0.0
        self.reused = 0
        self._pending: dict[str, dict[str, str | None]] = {}
        self._layouts: dict[str, dict[str, BlockLayout]] = {}
        site = project.site
        self._nav = [_link(p) for p in site.pages if p.collection is None]
        self._collections: dict[str, list[dict[str, Any]]] = {}
        for page in site.pages:
            if page.collection is not None:
                self._collections.setdefault(page.collection, []).append(_link(page))
        self._shared: dict[str, Any] = {
            "site": project.settings.site.as_context(),
            "data": site.data,
            "nav": self._nav,
            "collections": self._collections,
            "theme": {
                "name": project.theme.name,
                "description": project.theme.description,
                "options": project.renderer.options,
            },
            "generator": GENERATOR,
        }
        self._shared_digest = _fingerprint(project.renderer.digest, self._shared)
        self._previous = read_page_manifest(output.output_dir / MANIFEST_FILE)
        self._manifest: dict[str, tuple[str, int]] = {}
        for page in site.pages:
            if not page.blocks:
                self._finish_page(page, {}, {})

    def block_ready(self, job: Job, text: str, layout: BlockLayout | None = None) -> None:
        """A block's answer, as published (trinity.review has checked and repaired it), and
        what the layout guardian changed in its box (trinity.guardian), if anything."""
        if layout:
            self._layouts.setdefault(job.page.slug, {})[job.block.name] = layout
        self._settle(job, text)

    def block_failed(self, job: Job) -> None:
        if self.keep_going:
            self._settle(job, None)

    def _settle(self, job: Job, answer: str | None) -> None:
        page = job.page
        answers = self._pending.setdefault(page.slug, {})
        answers[job.block.name] = answer
        if len(answers) == len(page.blocks):
            del self._pending[page.slug]
            self._finish_page(page, answers, self._layouts.pop(page.slug, {}))

    def _finish_page(
        self, page: Page, answers: dict[str, str | None], layouts: Mapping[str, BlockLayout]
    ) -> None:
        """Reuse the page if nothing it is made of changed, else render and write it.

        `answers` holds each block's text, or None for a failed block (`--keep-going`):
        a page with a placeholder is always rendered, and never recorded for reuse.
        """
        fingerprint = self._page_fingerprint(page, answers, layouts)
        if fingerprint is not None and self._reuse(page, fingerprint):
            return
        html = self._render(page, answers, layouts)
        self.files.write_text(page.output_path, html)
        self._record(page, fingerprint, html)

    def rewrite(
        self, page: Page, answers: dict[str, str | None], layouts: Mapping[str, BlockLayout]
    ) -> None:
        """Render a page again and write it now, over the copy this build wrote or kept
        (the layout guardian does, once the background writer is done)."""
        layouts = {name: layout for name, layout in layouts.items() if layout}
        html = self._render(page, answers, layouts)
        self.output.replace_text(page.output_path, html)
        self._record(page, self._page_fingerprint(page, answers, layouts), html)

    def fingerprint(self, page: Page) -> str | None:
        """The fingerprint of the page as this build wrote (or kept) it; None when it has
        none (a placeholder in it, or inputs that cannot be compared)."""
        recorded = self._manifest.get(page.output_path)
        return None if recorded is None else recorded[0]

    def _render(
        self, page: Page, answers: dict[str, str | None], layouts: Mapping[str, BlockLayout]
    ) -> str:
        started = time.perf_counter()
        blocks = {b.name: self._block_value(page, b, answers[b.name]) for b in page.blocks}
        context: dict[str, Any] = {
            **self._shared,
            "page": {**_link(page), "description": page.description},
            "blocks": blocks,
            "headings": {block.name: block.heading for block in page.blocks},
            "heal": _HealClasses(
                {name: layout.heal_class for name, layout in layouts.items() if layout.heal_class}
            ),
            "root": page_root(page),
        }
        html = self.project.renderer.render(page.template, context)
        css = guardian_css({name: layout.css for name, layout in layouts.items()})
        html = inject_css(html, css)
        self.render_time += time.perf_counter() - started
        return html

    def _record(self, page: Page, fingerprint: str | None, html: str) -> None:
        if fingerprint is not None:
            self._manifest[page.output_path] = (fingerprint, len(html.encode("utf-8")))
        else:
            self._manifest.pop(page.output_path, None)

    def _block_value(self, page: Page, block: Block, answer: str | None) -> Any:
        if answer is None:
            return self.project.renderer.placeholder(page.title, block.name)
        return block_value(block, answer)

    def _page_fingerprint(
        self, page: Page, answers: Mapping[str, str | None], layouts: Mapping[str, BlockLayout]
    ) -> str | None:
        if self._shared_digest is None or None in answers.values():
            return None
        own: list[Any] = [
            page.template,
            _link(page),
            page.description,
            page_root(page),
            [(b.name, b.heading, b.format, answers[b.name]) for b in page.blocks],
        ]
        if layouts:  # only then: a page the guardian never touched keeps its fingerprint
            own.append(sorted((name, layout.as_json()) for name, layout in layouts.items()))
        return _fingerprint(self._shared_digest, own)

    def _reuse(self, page: Page, fingerprint: str) -> bool:
        previous = self._previous.get(page.output_path)
        if previous is None or previous[0] != fingerprint:
            return False
        started = time.perf_counter()
        reused = self.output.keep(page.output_path, previous[1])
        self._keep_time += time.perf_counter() - started
        if reused:
            self._manifest[page.output_path] = previous
            self.reused += 1
        return reused

    @property
    def write_time(self) -> float:
        """Seconds spent writing pages (on the writer's thread) and checking kept ones."""
        return self.files.busy_time + self._keep_time

    def copy_static(self) -> None:
        """The theme's static files (before the layout guardian opens the pages)."""
        self.output.copy_static(self.project.renderer.static_folders())

    def finish(self) -> None:
        """The page manifest, and sitemap.xml and robots.txt when the site has a base URL
        (after `copy_static`)."""
        base_url = self.project.settings.site.base_url
        if base_url:
            urls = [page.url for page in self.project.site.pages]
            self.output.write_text("sitemap.xml", sitemap_xml(base_url, urls))
            self.output.write_text("robots.txt", robots_txt(base_url))
        manifest = {"generator": GENERATOR, "pages": self._manifest}
        with self.output.open_text(MANIFEST_FILE) as stream:
            # Sorted: pages finish in any order, and the same site should give the same file.
            json.dump(manifest, stream, separators=(",", ":"), sort_keys=True)


class _HealClasses(dict[str, str]):
    """`heal` in templates: block name -> the theme's healing class when the layout guardian
    applied it to that block, else "" (so `class="block {{ heal[name] }}"` always works)."""

    def __missing__(self, key: str) -> str:
        return ""


def _fingerprint(*parts: Any) -> str | None:
    """A digest of JSON-able `parts`; None when they cannot be written as JSON (and so
    cannot be compared: the page is rendered every time)."""
    try:
        text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # keys of mixed types, or a circular structure
        return None
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def read_page_manifest(path: Path) -> dict[str, tuple[str, int]]:
    """Fingerprint and size of each page of the output at `path`'s site, by output path;
    empty when there is none, it is unreadable, or another version of Trinity wrote it."""
    try:
        data = json.loads(path.read_text("utf-8"))
        if data["generator"] != GENERATOR:
            return {}
        return {str(k): (str(v[0]), int(v[1])) for k, v in data["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def _link(page: Page) -> dict[str, Any]:
    return {
        "slug": page.slug,
        "title": page.title,
        "url": page.url,
        "collection": page.collection,
        "item": page.item,
    }
