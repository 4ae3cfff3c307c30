"""Rebuilds take unchanged pages from the previous output instead of rendering them again.

A page is reused only when everything it is made of is unchanged: the templates, the
site-wide context, its own fields and its blocks' answers. Its file is left where it is,
so its inode survives the rebuild; a rendered page gets a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.sitekit import BLOCKS, PAGES, SiteProject
from trinity import build_site

LUMEN = "projects/lumen/index.html"


def inodes(project: SiteProject) -> dict[str, int]:
    return {page: (project.output / page).stat().st_ino for page in project.page_files()}


def rendered_again(project: SiteProject, before: dict[str, int]) -> set[str]:
    """The pages whose file is a new one since `before` (rendered, not reused)."""
    return {page for page, inode in inodes(project).items() if inode != before[page]}


def test_an_unchanged_rebuild_takes_every_page_as_it_was(site_project: SiteProject) -> None:
    first = build_site(site_project.root, environ={})
    before_html = {page: site_project.html(page) for page in site_project.page_files()}
    before = inodes(site_project)

    again = build_site(site_project.root, environ={})

    assert (first.pages_reused, again.pages_reused) == (0, PAGES)
    assert again.timings["render"] == 0.0
    assert rendered_again(site_project, before) == set()
    assert {page: site_project.html(page) for page in site_project.page_files()} == before_html
    assert site_project.report()["pages_reused"] == PAGES


def test_a_changed_answer_renders_only_its_page(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    before = inodes(site_project)
    site_project.rescript_highlights({"Lumen": json.dumps({"highlights": ["Brand new"]})})

    report = build_site(site_project.root, refresh_cache=True, environ={})

    assert report.llm_calls == BLOCKS
    assert rendered_again(site_project, before) == {LUMEN}
    assert report.pages_reused == PAGES - 1
    assert "Brand new" in site_project.html(LUMEN)


def test_a_template_change_renders_every_page(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    before = inodes(site_project)
    (site_project.root / "templates").mkdir()
    (site_project.root / "templates" / "base.html").write_text(
        "<html><body class='changed'>{% block content %}{% endblock %}</body></html>\n",
        "utf-8",
    )

    report = build_site(site_project.root, environ={})

    assert report.pages_reused == 0
    assert rendered_again(site_project, before) == set(site_project.page_files())
    assert "class='changed'" in site_project.html("about/index.html")


def test_a_site_wide_change_renders_every_page(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    before = inodes(site_project)
    site_project.update_settings("site", title="A new title for every page")

    report = build_site(site_project.root, environ={})

    assert report.pages_reused == 0
    assert rendered_again(site_project, before) == set(site_project.page_files())
    assert "A new title for every page" in site_project.html(LUMEN)


def test_a_page_edited_by_hand_is_written_anew(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    original = site_project.html(LUMEN)
    (site_project.output / LUMEN).write_text(original + "<!-- edited -->", "utf-8")
    before = inodes(site_project)

    report = build_site(site_project.root, environ={})

    assert report.pages_reused == PAGES - 1
    assert rendered_again(site_project, before) == {LUMEN}
    assert site_project.html(LUMEN) == original


@pytest.mark.parametrize(
    "manifest",
    [
        "not json",
        '{"generator": "Trinity 0.0.0", "pages": {}}',  # another version wrote it
        '{"generator": 1}',
        '["a", "list"]',
    ],
)
def test_an_unusable_manifest_means_rendering_every_page(
    site_project: SiteProject, manifest: str
) -> None:
    build_site(site_project.root, environ={})
    before_html = {page: site_project.html(page) for page in site_project.page_files()}
    manifest_path = site_project.output / ".trinity" / "pages.json"
    manifest_path.write_text(manifest, "utf-8")

    report = build_site(site_project.root, environ={})

    assert report.pages_reused == 0
    assert {page: site_project.html(page) for page in site_project.page_files()} == before_html
    assert json.loads(manifest_path.read_text("utf-8"))["pages"].keys() == set(
        site_project.page_files()
    )


def test_a_page_with_a_placeholder_is_never_reused(site_project: SiteProject) -> None:
    site_project.rescript_highlights({"Lumen": "These are not the highlights you want."})
    assert site_project.build("--keep-going").exit_code == 1
    manifest = json.loads((site_project.output / ".trinity" / "pages.json").read_text("utf-8"))
    assert LUMEN not in manifest["pages"]
    assert len(manifest["pages"]) == PAGES - 1
    site_project.rescript_highlights()
    before = inodes(site_project)

    fixed = site_project.build()

    assert fixed.exit_code == 0, fixed.describe()
    assert rendered_again(site_project, before) == {LUMEN}
    assert "Lumen highlight one" in site_project.html(LUMEN)


def test_pages_removed_from_the_site_leave_the_output(site_project: SiteProject) -> None:
    build_site(site_project.root, environ={})
    site_project.edit_pages(lambda pages: pages.remove(_about(pages)))

    build_site(site_project.root, environ={})

    assert not (site_project.output / "about").exists()
    manifest = json.loads((site_project.output / ".trinity" / "pages.json").read_text("utf-8"))
    assert "about/index.html" not in manifest["pages"]


def _about(pages: list[dict[str, object]]) -> dict[str, object]:
    (about,) = [p for p in pages if p.get("slug") == "about"]
    return about


def test_the_previous_output_is_untouched_by_reuse(
    site_project: SiteProject, tmp_path: Path
) -> None:
    """A changed page is a new file moved into place: never written through the old one."""
    build_site(site_project.root, environ={})
    kept = tmp_path / "kept.html"
    kept.hardlink_to(site_project.output / LUMEN)
    text = kept.read_text("utf-8")

    build_site(site_project.root, environ={})
    site_project.rescript_highlights({"Lumen": json.dumps({"highlights": ["Changed"]})})
    build_site(site_project.root, refresh_cache=True, environ={})

    assert kept.read_text("utf-8") == text
    assert "Changed" in site_project.html(LUMEN)
