"""A hostile or corrupt disk cache (issue 13): the `.cache/` folder is data, never a way to
act on the file system. Rows are planted in the real SQLite file with the sqlite3 module, as
`sqlite3 .cache/cache.db "update Cache set ..."` would, then the real commands run against
the fake LLM server."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.sitekit import BLOCKS, RunResult, SiteProject
from trinity.manifest import MANIFEST_FILE

CORRUPT_WARNING = "disk cache: dropped an unusable entry"


def assert_ok(result: RunResult) -> None:
    assert result.exit_code == 0, result.describe()
    assert "Traceback" not in result.output


def database(site: SiteProject) -> Path:
    return site.root / ".cache" / "cache.db"


def corrupt_one_row(site: SiteProject, **columns: object) -> str:
    """Overwrite the first row's columns; the key of the row."""
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with closing(sqlite3.connect(database(site))) as db, db:
        (key,) = db.execute("SELECT key FROM Cache ORDER BY rowid LIMIT 1").fetchone()
        db.execute(f"UPDATE Cache SET {assignments} WHERE key = ?", (*columns.values(), key))
    return str(key)


def stored_rows(site: SiteProject) -> dict[str, tuple[object, ...]]:
    with closing(sqlite3.connect(database(site))) as db:
        rows = db.execute("SELECT key, mode, filename FROM Cache").fetchall()
    return {key: (mode, filename) for key, mode, filename in rows}


def built(site: SiteProject) -> SiteProject:
    assert_ok(site.build())
    assert site.server.chat_count == BLOCKS
    return site


def run_build(site: SiteProject) -> RunResult:
    """A rebuild that reads every block from the cache: without the last build's record,
    a rebuild with nothing changed would keep the site and never open the cache."""
    (site.output / MANIFEST_FILE).unlink()
    return site.build()


def run_prune(site: SiteProject) -> RunResult:
    return site.cli("cache", "prune", "--project", site.root)


def run_clear(site: SiteProject) -> RunResult:
    return site.cli("cache", "clear", "--project", site.root)


COMMANDS: dict[str, Callable[[SiteProject], RunResult]] = {
    "build": run_build,
    "prune": run_prune,
    "clear": run_clear,
}


@pytest.mark.parametrize("where", ["outside", "inside"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_planted_filename_is_never_deleted(
    site_project: SiteProject, tmp_path: Path, command: str, where: str
) -> None:
    site = built(site_project)
    if where == "outside":
        canary = tmp_path / "precious.txt"
        name = str(canary)
    else:
        canary = site.root / ".cache" / "ab" / "cd" / "precious.val"
        canary.parent.mkdir(parents=True)
        name = str(canary.relative_to(site.root / ".cache"))
    canary.write_text("still here", encoding="utf-8")
    key = corrupt_one_row(site, mode=2, value=None, filename=name)

    result = COMMANDS[command](site)

    assert_ok(result)
    assert canary.read_text(encoding="utf-8") == "still here"
    assert stored_rows(site).get(key, (1, None)) == (1, None)  # gone, or replaced by a good one


def test_a_corrupt_row_costs_one_miss_and_one_warning(site_project: SiteProject) -> None:
    site = built(site_project)
    key = corrupt_one_row(site, mode=2, value=b"\x80", filename=None)

    rebuilt = run_build(site)

    assert_ok(rebuilt)
    assert rebuilt.output.count(CORRUPT_WARNING) == 1
    assert "disk cache failed" not in rebuilt.output  # the tier stays on
    assert site.server.chat_count == BLOCKS + 1  # only the corrupt block was asked again
    assert stored_rows(site)[key] == (1, None)  # and cached again

    again = site.build()

    assert_ok(again)
    assert CORRUPT_WARNING not in again.output
    assert site.server.chat_count == BLOCKS + 1  # every block a hit


def test_prune_removes_a_corrupt_row_and_succeeds(site_project: SiteProject) -> None:
    site = built(site_project)
    key = corrupt_one_row(site, mode=2, value=b"\x80", filename=None)

    result = run_prune(site)

    assert_ok(result)
    assert "disk: pruned 1 entries" in result.stdout
    rows = stored_rows(site)
    assert key not in rows
    assert len(rows) == BLOCKS - 1
