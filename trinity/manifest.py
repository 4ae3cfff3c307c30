"""The page manifest, `output/.trinity/pages.json`: what a build wrote, for the next one.

Two records, both read back as untrusted (anything malformed is dropped, which costs the
next build work, never a wrong page):

- `pages`: each page's fingerprint and size, by output path. A page whose fingerprint
  (its templates, the site-wide context, its own fields, its blocks' answers) matches is
  kept where it is instead of rendered again (trinity.pages).
- `site`: written only by a build that left nothing to do again (every block answered
  from a cache whose answers never expire, no failure, no stale answer): the digest of
  everything the build read (trinity.unchanged), each page's slug and blocks, and every
  file it wrote with its size. A build whose inputs have that digest, and finds each of
  those files as it was written, has nothing to do: it loads no site and reads no cache.

Nothing here imports more than the standard library: the unchanged-site check reads this
file before anything else is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from trinity.staging import MARKER_DIR
from trinity.version import GENERATOR

MANIFEST_FILE = f"{MARKER_DIR}/pages.json"


@dataclass(frozen=True)
class PageRecord:
    """One page of a site recorded whole: its slug and its blocks' names."""

    slug: str
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class SiteRecord:
    """A whole site as a build left it: the digest of its inputs, its pages, and the size
    of every file written (pages, theme static files, sitemap), by relative path."""

    inputs: str
    pages: tuple[PageRecord, ...]
    files: Mapping[str, int]


@dataclass(frozen=True)
class Manifest:
    pages: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    site: SiteRecord | None = None


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path`; empty when there is none, it is unreadable, or another
    version of Trinity wrote it. A malformed `site` record is dropped on its own."""
    data = _load(path)
    try:
        pages = {str(k): (str(v[0]), int(v[1])) for k, v in data["pages"].items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return Manifest()
    return Manifest(pages, _site_record(data.get("site")))


def read_site_record(path: Path) -> SiteRecord | None:
    """Only the `site` record of the manifest at `path` (what a rebuild with nothing to do
    needs: at 100,000 pages, making the pages' record costs a quarter of a second)."""
    return _site_record(_load(path).get("site"))


def _load(path: Path) -> dict[str, Any]:
    """The manifest as JSON; {} when it is missing, unreadable, or not of this version."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return {}
    return data


def _site_record(data: Any) -> SiteRecord | None:
    """The `site` record; None when anything in it has the wrong type.

    The file names are not checked one by one: the record is only ever compared, whole,
    with what is really in the output folder, so a name that leaves the folder, or a size
    that is not a number, just makes the comparison fail.
    """
    try:
        pages = tuple(_page_record(slug, blocks) for slug, blocks in data["pages"])
        files, inputs = data["files"], data["inputs"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(files, dict) or not isinstance(inputs, str):
        return None
    return SiteRecord(inputs, pages, files)


def _page_record(slug: Any, blocks: Any) -> PageRecord:
    """A page of the record; TypeError unless it is a slug and a list of block names
    (they go into the build report as they are)."""
    names = tuple(blocks)
    if type(slug) is not str or not all(type(name) is str for name in names):
        raise TypeError("a page of the site record is not names")
    return PageRecord(slug, names)


def write_manifest(
    stream: IO[str], pages: Mapping[str, tuple[str, int]], site: SiteRecord | None
) -> None:
    """The manifest, as `read_manifest` reads it; sorted, as pages finish in any order and
    the same site should give the same file."""
    data: dict[str, Any] = {"generator": GENERATOR, "pages": pages}
    if site is not None:
        data["site"] = {
            "inputs": site.inputs,
            "pages": [[p.slug, list(p.blocks)] for p in site.pages],
            "files": site.files,
        }
    json.dump(data, stream, separators=(",", ":"), sort_keys=True)


__all__ = [
    "MANIFEST_FILE",
    "Manifest",
    "PageRecord",
    "SiteRecord",
    "read_manifest",
    "read_site_record",
    "write_manifest",
]
