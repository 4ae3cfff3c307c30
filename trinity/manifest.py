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

from trinity.staging import MARKER_DIR, check_relative
from trinity.version import GENERATOR

MANIFEST_FILE = f"{MARKER_DIR}/pages.json"


@dataclass(frozen=True)
class PageRecord:
    """One page of a site recorded whole: its slug, output path and block names."""

    slug: str
    path: str
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
    try:
        data = json.loads(path.read_text("utf-8"))
        if data["generator"] != GENERATOR:
            return Manifest()
        pages = {str(k): (str(v[0]), int(v[1])) for k, v in data["pages"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return Manifest()
    return Manifest(pages, _site_record(data.get("site")))


def _site_record(data: Any) -> SiteRecord | None:
    """The `site` record, every name in it checked: a path that would leave the output
    folder, or anything of the wrong type, drops the record."""
    try:
        pages = tuple(
            PageRecord(_text(slug), _relative(path), tuple(_text(b) for b in blocks))
            for slug, path, blocks in data["pages"]
        )
        files = {_relative(k): _size(v) for k, v in data["files"].items()}
        return SiteRecord(_text(data["inputs"]), pages, files)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _relative(value: Any) -> str:
    check_relative(_text(value))  # ValueError for a path outside the output folder
    return str(value)


def _size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("not a file size")
    return value


def write_manifest(
    stream: IO[str], pages: Mapping[str, tuple[str, int]], site: SiteRecord | None
) -> None:
    """The manifest, as `read_manifest` reads it; sorted, as pages finish in any order and
    the same site should give the same file."""
    data: dict[str, Any] = {"generator": GENERATOR, "pages": pages}
    if site is not None:
        data["site"] = {
            "inputs": site.inputs,
            "pages": [[p.slug, p.path, list(p.blocks)] for p in site.pages],
            "files": site.files,
        }
    json.dump(data, stream, separators=(",", ":"), sort_keys=True)


__all__ = [
    "MANIFEST_FILE",
    "Manifest",
    "PageRecord",
    "SiteRecord",
    "read_manifest",
    "write_manifest",
]
