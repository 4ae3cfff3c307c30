"""Writing pages: each rendered the moment its last block arrives, and the page manifest
(`output/.trinity/pages.json`, trinity.manifest) read and written here, so that a rebuild
keeps the pages whose inputs have not changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

from trinity.answers import block_value
from trinity.layout.fixes import BlockLayout, guardian_css, inject_css
from trinity.manifest import MANIFEST_FILE, PageRecord, SiteRecord, read_manifest, write_manifest
from trinity.plan import Job
from trinity.project import Project
from trinity.render.sitemap import robots_txt, sitemap_xml
from trinity.site import INDEX_SLUG, Block, Page
from trinity.staging import BackgroundWriter, StagedOutput
from trinity.version import GENERATOR


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
        self._previous = read_manifest(output.output_dir / MANIFEST_FILE).pages
        self._manifest: dict[str, tuple[str, int]] = {}
        # Every other file the build wrote (theme static files, sitemap), with its size.
        self._files: dict[str, int] = {}
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
        self._files.update(self.output.copy_static(self.project.renderer.static_folders()))

    def finish(self, inputs: str | None = None) -> None:
        """The page manifest, and sitemap.xml and robots.txt when the site has a base URL
        (after `copy_static`). With `inputs`, the digest of everything this build read
        (trinity.unchanged), the manifest records the whole site too, if every page of it
        is recorded: a next build with the same inputs then has nothing to do."""
        base_url = self.project.settings.site.base_url
        if base_url:
            urls = [page.url for page in self.project.site.pages]
            self._write_extra("sitemap.xml", sitemap_xml(base_url, urls))
            self._write_extra("robots.txt", robots_txt(base_url))
        site = self._site_record(inputs) if inputs is not None else None
        with self.output.open_text(MANIFEST_FILE) as stream:
            write_manifest(stream, self._manifest, site)

    def _write_extra(self, relative: str, text: str) -> None:
        self.output.write_text(relative, text)
        self._files[relative] = len(text.encode("utf-8"))

    def _site_record(self, inputs: str) -> SiteRecord | None:
        """The whole site as written; None when a page is not recorded (a placeholder in
        it, or inputs that cannot be compared), as such a site is not done."""
        pages = self.project.site.pages
        if any(page.output_path not in self._manifest for page in pages):
            return None
        files = dict(self._files)
        files.update((path, size) for path, (_, size) in self._manifest.items())
        records = tuple(PageRecord(page.slug, tuple(b.name for b in page.blocks)) for page in pages)
        return SiteRecord(inputs, records, files)


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


def _link(page: Page) -> dict[str, Any]:
    return {
        "slug": page.slug,
        "title": page.title,
        "url": page.url,
        "collection": page.collection,
        "item": page.item,
    }
