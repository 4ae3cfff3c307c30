"""A rebuild with nothing to do: the site kept as it is, unloaded, the cache unread.

The answer to a request is fixed by its cache key, and everything a request and a page
are made of comes from the project's files: its settings, `content/`, its templates and
themes. So a build whose inputs have the digest the last complete build recorded
(trinity.manifest's `site` record), and that finds every file of that build as it was
written, would write the same site again: it writes only its report and stops, without
loading the pages, opening the cache or rendering anything.

The digest covers, as bytes, every file under `content/`, `templates/` and `themes/` and
the built-in themes; the settings as they apply (environment and command line
included, secrets left out); Trinity's version; the layout guard's options; and the
disk cache's generation (trinity.cache.generation), so that emptying the cache asks
for new answers as it always did. It is only taken when answers never expire (no
`cache.ttl`, the disk tier on, with no `ttl` of its own): then a build must ask again.

What a shortcut build does not do that a full one would: warn again about the input
guards' findings in unchanged prompts (they were reported when the prompts last changed),
and remove files someone added to the output folder by hand.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmodule
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from trinity.cache.generation import cache_generation
from trinity.config import Settings
from trinity.lock import output_lock
from trinity.logs import correlation, current_correlation_id, get_logger
from trinity.manifest import MANIFEST_FILE, SiteRecord, read_site_record
from trinity.projectfiles import (
    BUILTIN_THEMES_DIR,
    CONTENT_DIR,
    PROJECT_THEMES_DIR,
    SITE_TEMPLATES_DIR,
)
from trinity.report import REPORT_FILE, BlockResult, BuildReport, write_report_or_say
from trinity.staging import MARKER_DIR
from trinity.version import GENERATOR

log = get_logger(__name__)

# The cache tier a kept block is reported from: the page it is already in.
KEPT_TIER = "kept"


@dataclass(frozen=True)
class Unchanged:
    """What the check found: `inputs`, the digest a full build records when it completes
    (None when its site may not be kept unread next time); `report`, the report of the
    build when it had nothing to do, else None."""

    inputs: str | None
    report: BuildReport | None = None


def keep_unchanged(
    settings: Settings,
    guard: object | None = None,
    *,
    dry_run: bool = False,
    generate_only: bool = False,
    refresh: bool = False,
    correlation_id: str | None = None,
    report_path: Path | None = None,
    wait_for_lock: bool = True,
    on_lock_wait: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Unchanged:
    """The build of `settings`, when it has nothing to do: its report written, the site
    left in place. `guard` is the layout guard's options (a guarded build keeps only a
    site the same guard passed). A dry run, a build that only generates answers (it keeps
    no site), or a refresh of the cache always builds."""
    if dry_run or generate_only or refresh:
        return Unchanged(None)
    started = clock()
    inputs = site_inputs(settings, guard)
    if inputs is None:
        return Unchanged(None)
    output_dir = settings.build.output_dir.resolve()
    # Looked at first without the lock: a build with work to do takes it later, and one
    # refused for bad input must not leave a lock file behind.
    site = unchanged_site(output_dir, inputs)
    if site is None:
        return Unchanged(inputs)
    manifest = _identity(output_dir / MANIFEST_FILE)
    with (
        correlation(correlation_id or current_correlation_id()),
        output_lock(output_dir).held(wait=wait_for_lock, on_wait=on_lock_wait),
    ):
        # A build that committed meanwhile replaced the manifest: then look again.
        if _identity(output_dir / MANIFEST_FILE) != manifest:
            site = unchanged_site(output_dir, inputs)
            if site is None:
                return Unchanged(inputs)
        report = _kept_report(settings, site)
        took = clock() - started
        report.timings = {"plan": took, "generate": 0.0, "render": 0.0, "write": 0.0, "total": took}
        _write_kept_report(report, output_dir, report_path)
    return Unchanged(inputs, report)


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What tells one copy of a file from the next: device, inode, size, modification time."""
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def site_inputs(settings: Settings, guard: object | None = None) -> str | None:
    """The digest of everything a build of `settings` reads; None when its answers are not
    fixed by their keys (the cache off, or answers that expire) or the disk tier's
    generation cannot be had."""
    cache = settings.cache
    if not cache.enabled or cache.ttl is not None or "disk" not in cache.tiers:
        return None
    if cache.disk.ttl is not None:
        return None
    generation = cache_generation(cache.disk.directory)
    if generation is None:
        return None
    digest = hashlib.blake2b(digest_size=20)
    for part in (GENERATOR, settings.digest(), generation, repr(guard)):
        _feed(digest, part.encode("utf-8"))
    project = settings.project_dir
    for label, folder in (
        ("content", project / CONTENT_DIR),
        ("templates", project / SITE_TEMPLATES_DIR),
        ("themes", project / PROJECT_THEMES_DIR),
        ("built-in themes", BUILTIN_THEMES_DIR),
    ):
        _feed_folder(digest, label, folder)
    return digest.hexdigest()


def _feed(digest: hashlib.blake2b, data: bytes) -> None:
    # Length first: ("ab", "c") and ("a", "bc") must not digest alike.
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def _feed_folder(digest: hashlib.blake2b, label: str, folder: Path) -> None:
    """Every file under `folder` (links followed, as the build reads through them), its
    path and its bytes, in a fixed order; a folder that is not there is its label only."""
    _feed(digest, label.encode("utf-8"))
    for relative, path in sorted(_files(folder)):
        _feed(digest, relative.encode("utf-8", "surrogateescape"))
        try:
            _feed(digest, path.read_bytes())
        except OSError:
            _feed(digest, b"\0unreadable")  # the full build will say what is wrong with it


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    for root, folders, names in os.walk(folder, followlinks=True):
        folders.sort()
        base = Path(root)
        for name in names:
            path = base / name
            yield path.relative_to(folder).as_posix(), path


def unchanged_site(output_dir: Path, inputs: str) -> SiteRecord | None:
    """The site the last build of `output_dir` recorded, when it was built from `inputs`
    and the folder holds exactly its files as written (regular files of the same sizes,
    nothing else beside Trinity's own records in `.trinity/`); else None."""
    output_dir = output_dir.resolve()
    try:
        if not statmodule.S_ISDIR((output_dir / MARKER_DIR).lstat().st_mode):
            return None
    except OSError:
        return None
    site = read_site_record(output_dir / MANIFEST_FILE)
    if site is None or site.inputs != inputs:
        return None
    found: dict[str, int] = {}
    if not _add_files(found, str(output_dir), ""):
        return None
    return site if found == site.files else None


def _add_files(found: dict[str, int], folder: str, prefix: str) -> bool:
    """Add every file under `folder` to `found` with its size, by relative path, leaving
    `.trinity/` out; False at the first link or special file (a build writes only files
    and folders), or a folder that cannot be read. Strings, not Paths: at 100,000 pages
    making a Path for each folder cost more than reading it."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if relative != MARKER_DIR and not _add_files(found, entry.path, relative + "/"):
                        return False
                elif entry.is_file(follow_symlinks=False):
                    found[relative] = entry.stat(follow_symlinks=False).st_size
                else:
                    return False
    except OSError:
        return False
    return True


def _kept_report(settings: Settings, site: SiteRecord) -> BuildReport:
    pages = len(site.pages)
    report = BuildReport.started(
        settings, settings.build.theme, pages, status="built", pages_reused=pages
    )
    report.blocks = [
        BlockResult(page=page.slug, block=block, source="cache", cache_tier=KEPT_TIER)
        for page in site.pages
        for block in page.blocks
    ]
    report.planned_blocks = len(report.blocks)
    # One line for the whole site: a kept block costs no record of its own.
    log.info(
        "nothing changed since the last build: %d pages kept as they are, the cache unread",
        pages,
        extra={"event": "site_unchanged"},
    )
    return report


def _write_kept_report(report: BuildReport, output_dir: Path, report_path: Path | None) -> None:
    """The report, into the site (in place of the last build's) and to `report_path`."""
    for path in (output_dir / REPORT_FILE, report_path):
        if path is not None:
            write_report_or_say(report, path, after="the site was left as it was")
    log.info(
        "build finished: %d blocks, nothing changed",
        len(report.blocks),
        extra={"event": "build_finished", "totals": report.totals()},
    )


__all__ = ["KEPT_TIER", "Unchanged", "keep_unchanged", "site_inputs", "unchanged_site"]
