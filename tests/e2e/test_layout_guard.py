"""`trinity build --guard` end to end: a site whose answers (from the loopback fake server)
carry a 60-character word, a 25-word heading and a 40-item list, on a theme that stops
wrapping, checked in the real Chromium, healed in order (content, then CSS, then
truncation), checked again; and a rebuild that makes no model call and finds nothing new.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.sitekit import SiteProject
from tests.fakellm import FakeLLMServer
from tests.layoutkit import requires_chromium
from trinity.build import build_site
from trinity.guardian import GuardOptions
from trinity.manifest import MANIFEST_FILE

pytestmark = requires_chromium

LONG_WORD = "Hyperconductivityfluxcalibrationmodulereferencenumberxq12345"
assert len(LONG_WORD) == 60
LONG_HEADING = (
    "The Pocket Weather Station That Measures Wind Rain Temperature Humidity Pressure "
    "And Light For Every Gardener Walker Sailor And Curious Child Who Likes The Sky."
)
assert len(LONG_HEADING.split()) == 25
SHORT_HEADING = "The Pocket Weather Station."
FORTY_ITEMS = "\n".join(f"- Sensor {n} reads {n * 3} values a minute." for n in range(1, 41))

# A page template of the site's own: the spec stays on one line and overflows its box.
GADGET_TEMPLATE = """{% extends "base.html" %}
{% block head %}<style>.tight, .tight * { white-space: nowrap; overflow: visible; }</style>
{% endblock %}
{% block content %}
<article>
  <h2 class="gadget-title" data-trinity-block="title">{{ blocks.title }}</h2>
  <div class="prose tight" data-trinity-block="spec">{{ blocks.spec }}</div>
  <div class="prose" data-trinity-block="features">{{ blocks.features }}</div>
</article>
{% endblock %}
"""

GADGET_PAGE: dict[str, Any] = {
    "slug": "gadget",
    "title": "Gadget",
    "template": "gadget.html",
    "blocks": {
        "title": {"format": "text", "prompt": "Write the gadget's title."},
        "spec": {"prompt": "Give the gadget's part number in one sentence."},
        "features": {"prompt": "List every feature of the gadget."},
    },
}


def make_guarded_site(
    tmp_path: Path,
    server: FakeLLMServer,
    *,
    template: str = GADGET_TEMPLATE,
    heal_class: str | None = None,
) -> SiteProject:
    site = SiteProject.create(tmp_path / "site", server)
    site.edit_pages(lambda pages: pages.append(GADGET_PAGE))
    templates = site.root / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "gadget.html").write_text(template, encoding="utf-8")
    theme = site.root / "themes" / "tight"
    theme.mkdir(parents=True)
    guard: dict[str, Any] = {"heading_lines": 3, "slots": {"features": {"block_lines": 20}}}
    if heal_class is not None:
        guard["heal_class"] = heal_class
    meta = {"name": "tight", "extends": "minimal", "guard": guard}
    (theme / "theme.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    # The first answers break the layout; asked again, the model shortens the heading
    # but keeps its long word and its forty items.
    server.script("gadget's title", LONG_HEADING, turn=0)
    server.script("gadget's title", SHORT_HEADING, turn=1)
    for turn in (0, 1):
        server.script("part number", f"The part is {LONG_WORD}.", turn=turn)
        server.script("every feature", FORTY_ITEMS, turn=turn)
    return site


def guard_findings(report: dict[str, Any], page: str = "gadget/index.html") -> list[dict[str, Any]]:
    return [f for f in report["guard"]["findings"] if f["page"] == page]


def test_findings_are_tied_to_their_blocks_and_healed_in_order(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    result = site.build("--theme", "tight", "--guard")
    assert result.exit_code == 0, result.describe()
    report = site.report()
    found = guard_findings(report)
    by_block = {(f["block"], f["kind"]) for f in found}
    assert ("title", "heading-wrap") in by_block
    assert ("spec", "overflow") in by_block
    assert ("features", "too-long") in by_block
    # Nothing was blamed on a block that did not cause it.
    assert all(f["block"] in ("title", "spec", "features", None) for f in found)
    assert not [f for f in report["guard"]["findings"] if f["page"] != "gadget/index.html"]
    # Each healed by the steps tried in order, least harmful first, up to the one that held.
    fixes = {(f["block"], f["kind"]): f["fixes"] for f in found}
    assert fixes[("title", "heading-wrap")] == ["content"]
    assert fixes[("spec", "overflow")] == ["content", "guardian"]  # the re-ask kept the word
    assert fixes[("features", "too-long")] == ["content", "truncate"]  # ... and forty items
    assert all(f["healed"] for f in found), found
    assert report["guard"]["unhealed"] == 0
    # The page as published: the short heading, the guardian's CSS, a shortened list.
    html = site.html("gadget/index.html")
    assert SHORT_HEADING.rstrip(".") in html and LONG_HEADING not in html
    assert "data-trinity-guard" in html and '[data-trinity-block="spec"]' in html
    assert LONG_WORD in html  # wrapped by CSS, not cut
    assert "Sensor 40" not in html and "…" in html
    # The re-asks went through the content checks' path: the model heard what was wrong.
    reasks = [r for r in fake_llm.requests if r.is_chat and b"at most 8 words" in r.raw]
    assert reasks, "the heading was never asked for again"
    assert "guard" in json.dumps(report["timings"])


# The same page on a theme with a healing class: its CSS defines it (or not), its template
# puts it on the spec's wrapper through `heal` when the guardian asks for it.
HEALING_TEMPLATE = GADGET_TEMPLATE.replace(
    '<div class="prose tight" data-trinity-block="spec">',
    '<div class="prose tight{% if heal.spec %} {{ heal.spec }}{% endif %}"'
    ' data-trinity-block="spec">',
)
HEALING_CSS = (
    "<style>.heal-wrap, .heal-wrap * { white-space: normal; overflow-wrap: anywhere }</style>"
)


@pytest.mark.parametrize(
    ("css", "steps"),
    [
        (HEALING_CSS, ["content", "theme"]),  # the theme's class holds
        ("", ["content", "theme", "guardian"]),  # named, never defined: the guardian's own
    ],
)
def test_the_themes_healing_class_comes_before_the_guardians_own_css(
    tmp_path: Path, fake_llm: FakeLLMServer, css: str, steps: list[str]
) -> None:
    template = HEALING_TEMPLATE.replace("{% endblock %}", css + "{% endblock %}", 1)
    site = make_guarded_site(tmp_path, fake_llm, template=template, heal_class="heal-wrap")
    result = site.build("--theme", "tight", "--guard")
    assert result.exit_code == 0, result.describe()
    overflow = [f for f in guard_findings(site.report()) if f["block"] == "spec"]
    assert overflow and all(f["fixes"] == steps and f["healed"] for f in overflow), overflow
    html = site.html("gadget/index.html")
    assert 'class="prose tight heal-wrap"' in html
    assert ('[data-trinity-block="spec"]' in html) == ("guardian" in steps)


def test_a_rebuild_of_the_healed_site_calls_no_model_and_checks_nothing_again(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    assert site.build("--theme", "tight", "--guard").exit_code == 0
    first = site.html("gadget/index.html")
    calls = fake_llm.request_count
    kept = site.build("--theme", "tight", "--guard")
    assert kept.exit_code == 0, kept.describe()
    assert "Nothing changed" in kept.output  # the same guard passed this very site
    # Without the last build's record every page is made again: the same bytes, from the
    # cache and the guard's record, and the browser checks nothing.
    (site.output / MANIFEST_FILE).unlink()
    again = site.build("--theme", "tight", "--guard")
    assert again.exit_code == 0, again.describe()
    assert fake_llm.request_count == calls
    report = site.report()
    assert report["totals"]["llm_calls"] == 0
    assert report["guard"]["pages_checked"] == 0
    assert report["guard"]["pages_cached"] == report["pages"]
    assert site.html("gadget/index.html") == first
    # And a browser that looks at the healed site afresh finds nothing.
    checked = site.run("check", "--layout", "--project", site.root.name, "--theme", "tight")
    assert checked.exit_code == 0, checked.describe()
    assert "no layout findings" in checked.flat


def test_pages_kept_from_an_unguarded_build_are_checked_and_healed_in_place(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    """A rebuild keeps unchanged pages where they are (not in the staging folder): the
    guard finds them in the output folder, and a healed one is written anew."""
    site = make_guarded_site(tmp_path, fake_llm)
    assert site.build("--theme", "tight").exit_code == 0
    assert LONG_HEADING in site.html("gadget/index.html")
    result = site.build("--theme", "tight", "--guard")
    assert result.exit_code == 0, result.describe()
    report = site.report()
    assert report["pages_reused"] == report["pages"]  # every page was kept, unrendered
    assert report["guard"]["pages_checked"] == report["pages"]
    assert report["guard"]["unhealed"] == 0 and guard_findings(report)
    html = site.html("gadget/index.html")
    assert LONG_HEADING not in html and SHORT_HEADING.rstrip(".") in html


def test_check_layout_reports_a_built_sites_findings_and_heals_nothing(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    assert site.build("--theme", "tight").exit_code == 0
    before = site.html("gadget/index.html")
    calls = fake_llm.request_count
    checked = site.run("check", "--layout", "--project", site.root.name, "--theme", "tight")
    assert checked.exit_code == 1, checked.describe()
    for what in ("gadget/index.html", "heading-wrap", "overflow", "too-long", "title", "spec"):
        assert what in checked.flat
    assert "Traceback" not in checked.output
    assert fake_llm.request_count == calls and site.html("gadget/index.html") == before


def test_strict_fails_on_what_is_left_and_keeps_the_old_site(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    assert site.build("--theme", "tight").exit_code == 0
    before = site.html("gadget/index.html")
    # A theme error nothing in a block can heal: an image without alt text.
    template = site.root / "templates" / "gadget.html"
    template.write_text(
        template.read_text().replace("<article>", '<article><img src="{{ root }}x.png">'),
        encoding="utf-8",
    )
    result = site.build("--theme", "tight", "--guard=strict")
    assert result.exit_code == 1, result.describe()
    assert "left unhealed" in result.flat
    assert "image-alt" in result.flat
    assert site.html("gadget/index.html") == before


def test_screenshots_before_and_after_and_a_page_showing_them(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    result = site.build("--theme", "tight", "--guard-screenshots")
    assert result.exit_code == 0, result.describe()
    gallery = site.output / ".trinity" / "guard" / "index.html"
    assert gallery.is_file()
    text = gallery.read_text()
    for width in (390, 768, 1280):
        for label in ("before", "after"):
            shot = site.output / ".trinity" / "guard" / f"gadget--index-{width}-{label}.png"
            assert shot.read_bytes().startswith(b"\x89PNG"), shot
            assert shot.name in text
    assert "heading-wrap" in text and "healed" in text


@pytest.mark.parametrize("theme", ["minimal", "brutalist"])
def test_the_built_in_themes_pass_the_guardian_on_the_example(
    tmp_path: Path, fake_llm: FakeLLMServer, theme: str
) -> None:
    site = SiteProject.create(tmp_path / "site", fake_llm)
    result = site.build("--theme", theme, "--guard=strict")
    assert result.exit_code == 0, result.describe()
    guard = site.report()["guard"]
    assert guard["pages_checked"] == guard["pages_cached"] + guard["pages_checked"] > 0
    assert guard["findings"] == []


def test_without_a_browser_guard_is_bad_input_before_any_model_call(
    tmp_path: Path, fake_llm: FakeLLMServer
) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    result = site.build(
        "--guard", env={"TRINITY_CHROMIUM": str(tmp_path / "no-such-browser"), "PATH": ""}
    )
    assert result.exit_code == 2, result.describe()
    assert "apt-get install chromium" in result.flat
    assert fake_llm.request_count == 0
    assert not site.output.exists()


def test_a_bad_guard_mode_is_bad_input(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    result = site.build("--guard=strcit")
    assert result.exit_code == 2
    assert "--guard" in result.flat and "strict" in result.flat
    assert fake_llm.request_count == 0


def test_build_site_takes_the_guard_from_python(tmp_path: Path, fake_llm: FakeLLMServer) -> None:
    site = make_guarded_site(tmp_path, fake_llm)
    options = GuardOptions(mode="strict", widths=(390,))
    report = build_site(site.root, theme="tight", guard=options)
    assert report.guard is not None
    assert (report.guard["mode"], report.guard["widths"]) == ("strict", [390])
    assert report.guard["unhealed"] == 0  # strict, and everything was healed: no failure
    assert {f["width"] for f in report.guard["findings"]} == {390}
