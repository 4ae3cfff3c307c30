"""A rebuild with nothing changed keeps the site without loading it or reading the cache.

The last complete build records the digest of everything it read; the next build with
the same digest, finding every file as written, only writes its report. Anything that
could change a page (content, data, settings, templates, themes, the environment, the
cache emptied, a file in the output touched) sends the build down the full path again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import trinity.build
from tests.e2e.sitekit import BLOCKS, PAGES, SiteProject
from trinity.build import build_site
from trinity.cache.generation import GENERATION_FILE
from trinity.maintenance import clear_cache
from trinity.manifest import MANIFEST_FILE, read_manifest
from trinity.report import BuildReport
from trinity.unchanged import KEPT_TIER, keep_unchanged, site_inputs

LUMEN = "projects/lumen/index.html"


def kept_whole(report: BuildReport) -> bool:
    """Whether the build kept the site as it was, every block unread."""
    return (
        report.status == "built"
        and report.pages_reused == report.pages == PAGES
        and len(report.blocks) == BLOCKS
        and {(b.source, b.cache_tier) for b in report.blocks} == {("cache", KEPT_TIER)}
    )


def no_site_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading the project's pages fail: a kept site must not need them."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the site was loaded")

    monkeypatch.setattr(trinity.build, "prepare_settings", refuse)


def test_a_rebuild_with_nothing_changed_keeps_the_site_unloaded(
    site_project: SiteProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_site(site_project.root, environ={})
    calls = site_project.server.chat_count
    files = {page: (site_project.output / page).read_bytes() for page in site_project.page_files()}
    inodes = {page: (site_project.output / page).stat().st_ino for page in files}
    no_site_loading(monkeypatch)

    again = build_site(site_project.root, environ={})

    assert not kept_whole(first)
    assert kept_whole(again)
    assert site_project.server.chat_count == calls
    assert again.cache == {}  # the cache was not even opened
    assert {page: (site_project.output / page).read_bytes() for page in files} == files
    assert {page: (site_project.output / page).stat().st_ino for page in files} == inodes
    written = site_project.report()
    assert written["correlation_id"] == again.correlation_id != first.correlation_id
    assert written["totals"]["cache_hits_by_tier"] == {KEPT_TIER: BLOCKS}


def test_the_cli_says_nothing_changed_and_logs_one_line_for_the_site(
    site_project: SiteProject,
) -> None:
    assert site_project.build().exit_code == 0
    log = site_project.root / "logs" / "trinity.log"
    before = len(log.read_text("utf-8").splitlines())

    again = site_project.build("--correlation-id", "kept-1")

    assert again.exit_code == 0, again.describe()
    assert "Nothing changed" in again.output
    assert f"{PAGES} unchanged" in again.output
    records = [json.loads(line) for line in log.read_text("utf-8").splitlines()[before:]]
    assert [r.get("event") for r in records] == [
        "build_started",
        "site_unchanged",
        "build_finished",
    ]
    assert {r["correlation_id"] for r in records} == {"kept-1"}
    assert records[-1]["totals"] == site_project.report()["totals"]


def test_json_output_of_a_kept_site_is_the_report(site_project: SiteProject) -> None:
    assert site_project.build().exit_code == 0

    again = site_project.build("--json", "--quiet")

    assert again.exit_code == 0, again.describe()
    printed = json.loads(again.stdout)
    assert printed["status"] == "built"
    assert printed["pages_reused"] == PAGES
    assert printed == site_project.report()


def _edit_pages_file(project: SiteProject) -> None:
    with project.pages_path.open("a", encoding="utf-8") as stream:
        stream.write("# a comment changes no page, but the file is not the same\n")


def _edit_data(project: SiteProject) -> None:
    data = project.data_dir / "projects.yaml"
    text = data.read_text("utf-8").replace("year: 2025", "year: 2026", 1)
    data.write_text(text, "utf-8")


def _edit_settings(project: SiteProject) -> None:
    project.update_settings("site", title="Another title")


def _add_site_template(project: SiteProject) -> None:
    (project.root / "templates").mkdir()
    (project.root / "templates" / "notes.txt").write_text("not even a template\n", "utf-8")


def _add_project_theme(project: SiteProject) -> None:
    theme = project.root / "themes" / "other"
    theme.mkdir(parents=True)
    (theme / "theme.yaml").write_text("name: other\n", "utf-8")


def _clear_the_cache(project: SiteProject) -> None:
    clear_cache(project.root, environ={})


def _delete_the_cache_folder(project: SiteProject) -> None:
    shutil.rmtree(project.root / ".cache")


def _delete_a_page(project: SiteProject) -> None:
    (project.output / LUMEN).unlink()


def _edit_a_page(project: SiteProject) -> None:
    with (project.output / LUMEN).open("a", encoding="utf-8") as stream:
        stream.write("<!-- edited -->")


def _delete_a_static_file(project: SiteProject) -> None:
    (project.output / "static" / "style.css").unlink()


def _replace_a_page_with_a_link(project: SiteProject) -> None:
    page = project.output / LUMEN
    copy = project.root / "elsewhere.html"
    copy.write_bytes(page.read_bytes())
    page.unlink()
    page.symlink_to(copy)


def _drop_the_manifest(project: SiteProject) -> None:
    (project.output / MANIFEST_FILE).unlink()


CHANGES: dict[str, Callable[[SiteProject], None]] = {
    "pages file": _edit_pages_file,
    "data file": _edit_data,
    "settings": _edit_settings,
    "site templates": _add_site_template,
    "project themes": _add_project_theme,
    "cache cleared": _clear_the_cache,
    "cache folder deleted": _delete_the_cache_folder,
    "page deleted": _delete_a_page,
    "page edited": _edit_a_page,
    "static file deleted": _delete_a_static_file,
    "page replaced by a link": _replace_a_page_with_a_link,
    "manifest deleted": _drop_the_manifest,
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_any_change_builds_again(
    site_project: SiteProject, change: Callable[[SiteProject], None]
) -> None:
    build_site(site_project.root, environ={})
    change(site_project)

    again = build_site(site_project.root, environ={})

    assert not kept_whole(again)
    assert again.status == "built"
    # Built whole again, so the build after it has nothing to do.
    assert kept_whole(build_site(site_project.root, environ={}))
    style = site_project.output / "static" / "style.css"
    assert style.is_file() and not (site_project.output / LUMEN).is_symlink()


def test_an_emptied_cache_asks_the_model_again(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    calls = site_project.server.chat_count
    _clear_the_cache(site_project)

    again = build_site(site_project.root, environ={})

    assert again.llm_calls == BLOCKS
    assert site_project.server.chat_count == calls + BLOCKS


def test_an_environment_override_builds_again(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})

    again = build_site(site_project.root, environ={"LLM_MODEL": "another-model"})

    assert not kept_whole(again)


@pytest.mark.parametrize(
    "settings",
    [
        {"ttl": 3600},  # answers expire: a build must ask again
        {"enabled": False},
        {"tiers": ["memory"]},  # no disk tier, so no generation to vouch for the answers
        {"disk": {"ttl": 3600}},
    ],
    ids=["ttl", "cache off", "no disk tier", "disk ttl"],
)
def test_a_cache_whose_answers_are_not_fixed_never_keeps_the_site(
    site_project: SiteProject, settings: dict[str, object]
) -> None:
    site_project.update_settings("cache", **settings)
    build_site(site_project.root, environ={})

    again = build_site(site_project.root, environ={})

    assert not kept_whole(again)
    assert read_manifest(site_project.output / MANIFEST_FILE).site is None


def test_a_refresh_and_a_dry_run_never_keep_the_site(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})

    planned = build_site(site_project.root, dry_run=True, environ={})
    refreshed = build_site(site_project.root, refresh_cache=True, environ={})

    assert planned.status == "planned"
    assert refreshed.llm_calls == BLOCKS


def test_a_build_with_a_failed_block_records_no_site(site_project: SiteProject) -> None:
    site_project.rescript_highlights({"Lumen": "These are not the highlights you want."})
    assert site_project.build("--keep-going").exit_code == 1
    assert read_manifest(site_project.output / MANIFEST_FILE).site is None
    site_project.rescript_highlights()

    fixed = build_site(site_project.root, environ={})

    assert not kept_whole(fixed)
    assert "Lumen highlight one" in site_project.html(LUMEN)
    assert kept_whole(build_site(site_project.root, environ={}))


def test_the_layout_guard_options_are_part_of_the_inputs(site_project: SiteProject) -> None:
    from trinity.config import load_build_settings
    from trinity.guardian import GuardOptions

    settings = load_build_settings(site_project.root, environ={})

    plain = site_inputs(settings)
    assert plain is not None and plain == site_inputs(settings, None)
    assert site_inputs(settings, GuardOptions()) != plain
    assert site_inputs(settings, GuardOptions(mode="strict")) != site_inputs(
        settings, GuardOptions()
    )


def test_the_inputs_do_not_depend_on_where_the_project_is(
    site_project: SiteProject, tmp_path: Path
) -> None:
    from trinity.config import load_build_settings

    here = site_inputs(load_build_settings(site_project.root, environ={}))
    moved = tmp_path / "moved"
    shutil.copytree(site_project.root, moved, symlinks=True)

    assert site_inputs(load_build_settings(moved, environ={})) == here


def test_a_first_build_takes_no_lock_before_it_has_work(site_project: SiteProject) -> None:
    """The lock is taken by the build itself, after the project passed its checks: one
    refused for bad input must leave nothing behind."""
    from trinity.config import load_build_settings

    settings = load_build_settings(site_project.root, environ={})

    unchanged = keep_unchanged(settings)

    assert unchanged.report is None and unchanged.inputs is not None
    assert not (site_project.root / ".output.lock").exists()
    assert not site_project.output.exists()


def test_a_generation_that_cannot_be_made_means_building(
    site_project: SiteProject,
) -> None:
    from trinity.config import load_build_settings

    cache = site_project.root / ".cache"
    cache.mkdir()
    (cache / GENERATION_FILE).mkdir()  # not a file: cannot be read, nor replaced

    assert site_inputs(load_build_settings(site_project.root, environ={})) is None


def test_a_site_record_naming_files_outside_the_output_keeps_nothing(
    site_project: SiteProject,
) -> None:
    """The record is compared, whole, with what is really in the output folder: a name
    planted in it that leads outside is never looked at, and the site is built again."""
    build_site(site_project.root, environ={})
    outside = site_project.root / "settings-leak"
    outside.write_text("x", "utf-8")
    path = site_project.output / MANIFEST_FILE
    data = json.loads(path.read_text("utf-8"))
    data["site"]["files"]["../settings-leak"] = 1
    path.write_text(json.dumps(data), "utf-8")

    assert not kept_whole(build_site(site_project.root, environ={}))
    assert outside.read_text("utf-8") == "x"


@pytest.mark.parametrize(
    "site",
    [
        None,
        "a string",
        {"inputs": 1, "pages": [], "files": {}},
        {"inputs": "x", "pages": [["index", [1]]], "files": {}},
        {"inputs": "x", "pages": [["index"]], "files": {}},
        {"inputs": "x", "pages": [[2, ["intro"]]], "files": {}},
        {"inputs": "x", "pages": [], "files": ["index.html"]},
        {"inputs": "x", "pages": []},
    ],
)
def test_a_malformed_site_record_is_dropped_and_the_pages_record_kept(
    tmp_path: Path, site: object
) -> None:
    from trinity.version import GENERATOR

    path = tmp_path / "pages.json"
    pages = {"index.html": ["f" * 32, 10]}
    path.write_text(json.dumps({"generator": GENERATOR, "pages": pages, "site": site}))

    manifest = read_manifest(path)

    assert manifest.site is None
    assert manifest.pages == {"index.html": ("f" * 32, 10)}


def test_a_kept_site_whose_report_cannot_be_written_says_so_in_one_line(
    site_project: SiteProject,
) -> None:
    from trinity.errors import ResourceError

    build_site(site_project.root, environ={})
    report = site_project.output / ".trinity" / "report.json"
    report.unlink()
    report.mkdir()  # a folder where the report goes: the file system refuses the write

    with pytest.raises(ResourceError) as raised:
        build_site(site_project.root, environ={})

    message = str(raised.value)
    assert "report.json" in message and "writing the build report" in message
    assert "the site was left as it was" in message
    assert (site_project.output / LUMEN).is_file()
