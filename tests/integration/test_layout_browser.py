"""The layout guardian's browser against a real Chromium: small hand-written pages, one
browser for the module.

Without Chromium (or Playwright) the browser's tests skip with the reason; with
REQUIRE_CHROMIUM=1 they fail instead, as the Redis tests do with REQUIRE_REDIS_SERVER.
The tests of `find_chromium` itself need no browser and always run.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from tests.layoutkit import require_chromium
from trinity.errors import MissingDependencyError
from trinity.layout.browser import (
    CHROMIUM_ENV,
    BrowserError,
    LayoutBrowser,
    find_chromium,
)
from trinity.layout.findings import (
    ASSET_FAILED,
    CLIPPED,
    CONSOLE_ERROR,
    CONTRAST,
    HEADING_WRAP,
    IMAGE_ALT,
    OVERFLOW,
    TAP_TARGET,
    TOO_LONG,
    WIDTHS,
    Finding,
    LayoutLimits,
    SlotLimits,
)
from trinity.layout.gallery import screenshot_name
from trinity.render.themes import BUILTIN_THEMES_DIR

HINT = "sudo apt-get install chromium"

PLAIN_CSS = """
body { margin: 0; padding: 0 16px; font: 16px/1.5 sans-serif; color: #111; background: #fff; }
h1, h2 { font-size: 24px; line-height: 1.25; }
"""
LIMITS = LayoutLimits(
    default=SlotLimits(heading_lines=3, block_lines=None),
    slots={"list": SlotLimits(heading_lines=3, block_lines=20)},
)
LONG_WORD = "Supercalifragilisticexpialidocious" + "x" * 26  # 60 characters
LONG_HEADING = " ".join(f"word{n}" for n in range(25))


def html(body: str, *, head: str = "", css: str = PLAIN_CSS) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Fixture</title>\n<style>{css}</style>\n{head}\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def prose(words: int) -> str:
    return " ".join(("The quick brown fox jumps over the lazy dog. " * words).split()[:words])


PAGES = {
    "clean.html": html(
        '<header><a href="clean.html">Home</a></header>'
        "<main><h1>A clean page</h1>"
        f'<section data-trinity-block="intro"><h2>Short heading</h2><p>{prose(80)}</p></section>'
        f'<section data-trinity-block="body"><p>{prose(120)}</p></section></main>'
    ),
    "overflow.html": html(
        '<main><section data-trinity-block="intro">'
        f'<p style="white-space: nowrap; overflow: visible">{LONG_WORD}</p></section>'
        f'<section data-trinity-block="other"><p>{prose(30)}</p></section></main>'
    ),
    "clipped.html": html(
        '<main><section data-trinity-block="facts">'
        f'<div style="height: 48px; overflow: hidden"><p>{prose(60)}</p></div>'
        '<p style="width: 120px; white-space: nowrap; overflow: hidden; '
        f'text-overflow: ellipsis">{prose(20)}</p></section></main>'
    ),
    "heading.html": html(
        f'<main><section data-trinity-block="intro"><h2>{LONG_HEADING}</h2>'
        f"<p>{prose(20)}</p></section></main>"
    ),
    "list.html": html(
        '<main><section data-trinity-block="list"><ul>'
        + "".join(f"<li>Item {n}</li>" for n in range(40))
        + "</ul></section></main>"
    ),
    "contrast.html": html(
        f'<main><section data-trinity-block="intro"><p style="color: #bbb">{prose(12)}</p>'
        f"<p>{prose(12)}</p></section></main>"
    ),
    "contrast-dark.html": html(
        '<main><section data-trinity-block="dark" style="background: #000">'
        f'<p style="color: #bbb">{prose(10)}</p></section></main>'
    ),
    "contrast-again.html": html(
        f'<main><section data-trinity-block="notes"><p>{prose(8)}</p>'
        f'<p style="color: #bbb">{prose(10)}</p></section></main>'
    ),
    "tap.html": html(
        '<main><section data-trinity-block="actions"><p>'
        + '<button style="width: 10px; height: 10px; padding: 0; margin: 0; border: 0"></button>'
        * 2
        + "</p></section></main>"
    ),
    "alt.html": html(
        '<header><img src="pixel.gif" width="20" height="20"></header>'
        '<main><section data-trinity-block="gallery">'
        '<img src="pixel.gif" width="20" height="20">'
        '<img src="pixel.gif" width="20" height="20" alt="">'
        '<img src="pixel.gif" width="20" height="20" alt="A grey square"></section></main>'
    ),
    "strict-csp.html": html(
        '<main><section data-trinity-block="gallery"><img src="pixel.gif" width="20" height="20">'
        "</section></main>",
        head='<meta http-equiv="Content-Security-Policy" content="script-src \'none\'">',
    ),
    "console.html": html(
        f'<main><section data-trinity-block="intro"><p>{prose(10)}</p></section></main>'
        '<script>console.error("boom from the page");</script>'
        "<script>notAFunctionAnywhere();</script>"
    ),
    "missing-css.html": html(
        f'<main><section data-trinity-block="intro"><p>{prose(10)}</p></section></main>',
        head='<link rel="stylesheet" href="static/missing.css">',
    ),
    "outside.html": html(
        f'<main><section data-trinity-block="intro"><p>{prose(10)}</p></section></main>{{OUTSIDE}}'
    ),
    "theme-overflow.html": html(
        '<header><nav style="white-space: nowrap">'
        + " ".join(f'<a href="#n{n}">Navigation-item-{n}</a>' for n in range(8))
        + "</nav></header>"
        f'<main><section data-trinity-block="intro"><p>{prose(20)}</p></section></main>'
    ),
}
# A 1x1 grey GIF: the images above load, so only their alt text is at stake.
PIXEL = bytes.fromhex(
    "47494638396101000100800000808080ffffff21f90400000000002c00000000010001000002024401003b"
)


def minimal_theme_page() -> str:
    """A page shaped like the minimal theme's templates (base.html, page.html and the
    blocks macro): header and nav, a page title, a lead block, sections of prose with
    the markdown a model writes (lists, code, a table, a quote, links), and a json block."""
    current = ' aria-current="page"'
    nav = "".join(
        f'<li><a href="index.html"{current if n == 0 else ""}>{name}</a></li>'
        for n, name in enumerate(("Home", "About", "Projects", "Writing", "Contact"))
    )
    rows = "".join(
        f"<tr><td>Row {n}</td><td>{prose(4)}</td><td>{n * 17}</td></tr>" for n in range(5)
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>About — Example site</title>
  <link rel="stylesheet" href="static/style.css">
</head>
<body>
  <a class="skip-link" href="#main">Skip to content</a>
  <header class="site-header">
    <div class="wrap header-inner">
      <a class="site-title" href="index.html">Example site</a>
      <nav class="site-nav" aria-label="Main"><ul role="list">{nav}</ul></nav>
    </div>
  </header>
  <main id="main" class="wrap" tabindex="-1">
    <header class="page-header">
      <h1>About this workshop</h1>
      <p class="subtitle">A short description of the page.</p>
    </header>
    <div class="lead" data-trinity-block="intro"><div class="prose"><p>{prose(60)}</p></div></div>
    <section class="block" id="block-story" aria-labelledby="block-story-title"
             data-trinity-block="story">
      <h2 id="block-story-title">Story</h2>
      <div class="prose">
        <p>{prose(50)} <a href="index.html">a link in the sentence</a> and
           <code>inline_code()</code> and <strong>strong words</strong>.</p>
        <h3>A subheading in the prose</h3>
        <ul><li>{prose(12)}</li><li>{prose(9)}</li><li>{prose(14)}</li></ul>
        <ol><li>{prose(6)}</li><li>{prose(8)}</li></ol>
        <blockquote><p>{prose(20)}</p></blockquote>
        <pre><code>def a_rather_long_function_name(argument_one, argument_two, three):
    return argument_one + argument_two + three  # a comment that runs on and on</code></pre>
        <table><thead><tr><th>Name</th><th>What</th><th>Count</th></tr></thead>
          <tbody>{rows}</tbody></table>
        <hr>
        <p>{prose(40)}</p>
      </div>
    </section>
    <section class="block" id="block-facts" aria-labelledby="block-facts-title"
             data-trinity-block="facts">
      <h2 id="block-facts-title">Key facts</h2>
      <div class="data-block"><dl class="data">
        <dt>Founded</dt><dd>2019</dd>
        <dt>Website</dt><dd><a href="https://example.com/a/rather/long/path">https://example.com/a/rather/long/path</a></dd>
        <dt>Tools</dt><dd><ul class="data"><li>Lathe</li><li>Bench saw</li></ul></dd>
      </dl></div>
    </section>
  </main>
  <footer class="site-footer">
    <div class="wrap footer-inner"><p>Example site</p><p>Built with Trinity</p></div>
  </footer>
</body>
</html>
"""


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class ClosedDoor:
    """A loopback port that accepts connections and counts them: a stand-in for an
    outside host, which the browser must never reach."""

    def __init__(self) -> None:
        self.connections = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self._socket.settimeout(0.1)
        self.port = int(self._socket.getsockname()[1])
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        while not self._done.is_set():
            try:
                connection, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture(scope="module")
def door() -> Iterator[ClosedDoor]:
    door = ClosedDoor()
    yield door
    door.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, door: ClosedDoor) -> Path:
    root = tmp_path_factory.mktemp("site")
    outside = (
        f'<link rel="stylesheet" href="http://127.0.0.1:{door.port}/style.css">'
        f'<img src="http://127.0.0.1:{door.port}/image.png" alt="An image elsewhere">'
        '<script src="https://cdn.example.com/library.js"></script>'
        f'<script>fetch("http://127.0.0.1:{door.port}/data.json").catch(() => null);</script>'
    )
    for name, text in PAGES.items():
        (root / name).write_text(text.replace("{OUTSIDE}", outside), encoding="utf-8")
    (root / "pixel.gif").write_bytes(PIXEL)
    for theme in ("minimal", "brutalist"):
        folder = root / theme
        (folder / "static").mkdir(parents=True)
        css = BUILTIN_THEMES_DIR / theme / "static" / "style.css"
        (folder / "static" / "style.css").write_text(css.read_text("utf-8"), "utf-8")
        (folder / "index.html").write_text(minimal_theme_page(), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
async def browser(site: Path) -> AsyncIterator[LayoutBrowser]:
    async with LayoutBrowser(site, chromium=require_chromium(), parallel=2) as opened:
        yield opened


async def check(browser: LayoutBrowser, page: str, **options: object) -> list[Finding]:
    found = await browser.check([page], LIMITS, **options)  # type: ignore[arg-type]
    assert list(found) == [page]
    return found[page]


def of_kind(findings: list[Finding], kind: str, width: int | None = None) -> list[Finding]:
    return [f for f in findings if f.kind == kind and (width is None or f.width == width)]


# ---------------------------------------------------------------------- clean pages


@pytest.mark.anyio
async def test_a_clean_page_has_no_findings_at_any_width(browser: LayoutBrowser) -> None:
    assert await check(browser, "clean.html") == []


@pytest.mark.anyio
@pytest.mark.parametrize("theme", ["minimal", "brutalist"])
async def test_a_built_in_theme_gives_no_false_positives(
    browser: LayoutBrowser, theme: str
) -> None:
    findings = await check(browser, f"{theme}/index.html")
    assert findings == [], "\n".join(
        f"{f.width} {f.kind} {f.element}: {f.detail}" for f in findings
    )


@pytest.mark.anyio
async def test_every_page_asked_for_is_a_key(browser: LayoutBrowser) -> None:
    pages = ["clean.html", "overflow.html", "clean.html"]
    found = await browser.check(pages, LIMITS)
    assert list(found) == ["clean.html", "overflow.html"]
    assert found["clean.html"] == []
    assert found["overflow.html"]


# ---------------------------------------------------------------------- layout


@pytest.mark.anyio
async def test_an_unbreakable_word_overflows_its_block_at_390(browser: LayoutBrowser) -> None:
    findings = await check(browser, "overflow.html")
    at_390 = of_kind(findings, OVERFLOW, 390)
    assert at_390, findings
    assert {f.block for f in of_kind(findings, OVERFLOW)} == {"intro"}
    assert at_390[0].element.endswith("p")
    assert at_390[0].measured is not None and at_390[0].measured > 390
    assert "390 px" in at_390[0].detail
    # Once per element and width, not once per ancestor it drags along.
    assert len({f.element for f in at_390}) == len(at_390) == 1


@pytest.mark.anyio
async def test_content_cut_off_by_overflow_hidden_is_clipped(browser: LayoutBrowser) -> None:
    findings = await check(browser, "clipped.html")
    clipped = of_kind(findings, CLIPPED, 390)
    assert [f.element.split(" > ")[-1] for f in clipped] == ["div"]  # the ellipsis is meant
    assert clipped[0].block == "facts"
    assert clipped[0].limit == 48
    assert clipped[0].measured is not None and clipped[0].measured > 48


@pytest.mark.anyio
async def test_a_long_heading_wraps_past_the_slot(browser: LayoutBrowser) -> None:
    findings = await check(browser, "heading.html")
    wraps = of_kind(findings, HEADING_WRAP, 390)
    assert len(wraps) == 1
    assert wraps[0].block == "intro"
    assert wraps[0].limit == 3
    assert wraps[0].measured is not None and wraps[0].measured > 3
    assert wraps[0].detail == (
        f"h2 wraps to {int(wraps[0].measured)} lines at 390 px (the theme allows 3)"
    )


@pytest.mark.anyio
async def test_a_long_list_is_too_long_for_its_slot(browser: LayoutBrowser) -> None:
    findings = await check(browser, "list.html")
    too_long = of_kind(findings, TOO_LONG)
    assert {f.width for f in too_long} == set(WIDTHS)
    assert {f.block for f in too_long} == {"list"}
    assert all(f.limit == 20 and f.measured is not None and f.measured >= 39 for f in too_long)


@pytest.mark.anyio
async def test_an_overflow_in_the_theme_markup_has_no_block(browser: LayoutBrowser) -> None:
    findings = await check(browser, "theme-overflow.html")
    overflow = of_kind(findings, OVERFLOW, 390)
    assert overflow
    assert {f.block for f in overflow} == {None}
    assert all(not f.healable for f in overflow)


# ---------------------------------------------------------------------- axe-core


@pytest.mark.anyio
async def test_low_contrast_text_is_found(browser: LayoutBrowser) -> None:
    findings = await check(browser, "contrast.html")
    contrast = of_kind(findings, CONTRAST)
    assert len(contrast) == 1
    assert contrast[0].block == "intro"
    assert contrast[0].width == 390
    assert contrast[0].limit == 4.5
    assert contrast[0].measured is not None and contrast[0].measured < 4.5
    assert "contrast" in contrast[0].detail


@pytest.mark.anyio
async def test_a_contrast_verdict_carries_over_to_the_next_page(browser: LayoutBrowser) -> None:
    """The second page's grey text looks like the first's: judged once, found on both."""
    first = of_kind(await check(browser, "contrast.html"), CONTRAST)
    again = of_kind(await check(browser, "contrast-again.html"), CONTRAST)
    assert len(again) == 1
    assert again[0].block == "notes"
    assert again[0].element.endswith("p:nth-of-type(2)")
    assert (again[0].measured, again[0].limit, again[0].detail) == (
        first[0].measured,
        first[0].limit,
        first[0].detail,
    )


@pytest.mark.anyio
async def test_a_contrast_verdict_is_not_carried_to_another_background(
    browser: LayoutBrowser,
) -> None:
    assert of_kind(await check(browser, "contrast.html"), CONTRAST)
    assert of_kind(await check(browser, "contrast-dark.html"), CONTRAST) == []


@pytest.mark.anyio
async def test_tiny_tap_targets_are_found_at_390_only(browser: LayoutBrowser) -> None:
    findings = await check(browser, "tap.html")
    taps = of_kind(findings, TAP_TARGET)
    assert taps
    assert {f.width for f in taps} == {390}
    assert {f.block for f in taps} == {"actions"}


@pytest.mark.anyio
async def test_images_without_alt_text_are_found(browser: LayoutBrowser) -> None:
    findings = await check(browser, "alt.html")
    missing = of_kind(findings, IMAGE_ALT)
    # The header's image (the theme's markup) and the gallery's first; alt="" is decorative.
    assert sorted((f.block or "", f.element) for f in missing) == [
        ("", "header > img"),
        ("gallery", "main > section > img:nth-of-type(1)"),
    ]


@pytest.mark.anyio
async def test_axe_runs_in_a_page_whose_policy_forbids_scripts(browser: LayoutBrowser) -> None:
    """Its policy refuses axe-core's <script>; it is evaluated instead, unreported."""
    findings = await check(browser, "strict-csp.html")
    assert [(f.kind, f.block) for f in findings] == [(IMAGE_ALT, "gallery")]


# ---------------------------------------------------------------------- console and network


@pytest.mark.anyio
async def test_console_errors_and_uncaught_errors_are_found(browser: LayoutBrowser) -> None:
    errors = of_kind(await check(browser, "console.html"), CONSOLE_ERROR)
    details = sorted(f.detail for f in errors)
    assert len(details) == 2
    assert "boom from the page" in details[0]
    assert "notAFunctionAnywhere" in details[1]
    assert {f.block for f in errors} == {None}


@pytest.mark.anyio
async def test_a_missing_stylesheet_is_a_failed_asset_once(browser: LayoutBrowser) -> None:
    findings = await check(browser, "missing-css.html")
    assert [f.kind for f in findings] == [ASSET_FAILED]
    assert "/static/missing.css" in findings[0].detail
    assert "404" in findings[0].detail


@pytest.mark.anyio
async def test_requests_elsewhere_never_leave_and_are_not_reported(
    browser: LayoutBrowser, door: ClosedDoor
) -> None:
    findings = await check(browser, "outside.html")
    assert findings == []
    assert door.connections == 0


# ---------------------------------------------------------------------- errors and screenshots


@pytest.mark.anyio
async def test_a_page_that_is_not_there_is_named(browser: LayoutBrowser) -> None:
    with pytest.raises(FileNotFoundError, match=r"no-such-page\.html"):
        await browser.check(["clean.html", "no-such-page.html"], LIMITS)


@pytest.mark.anyio
async def test_pages_with_findings_are_shot_at_every_width(
    browser: LayoutBrowser, tmp_path: Path
) -> None:
    shots = tmp_path / "shots"
    await browser.check(["clean.html", "heading.html"], LIMITS, screenshots=shots, label="-1")
    names = sorted(path.name for path in shots.iterdir())
    assert names == sorted(screenshot_name("heading.html", width, "-1") for width in WIDTHS)
    assert (shots / "heading-390-1.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.anyio
async def test_a_single_screenshot(browser: LayoutBrowser, tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    await browser.screenshot("clean.html", 768, path)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_page_that_never_loads_gives_a_finding_not_a_hang(site: Path) -> None:
    (site / "hang.html").write_text(html("<p>never</p><script>while (true) {}</script>"), "utf-8")
    async with LayoutBrowser(site, chromium=require_chromium(), parallel=1, timeout=2) as browser:
        with anyio.fail_after(30):
            found = await browser.check(["hang.html", "clean.html"], LIMITS)
    assert found["clean.html"] == []
    assert [f.kind for f in found["hang.html"]] == [ASSET_FAILED]
    assert "hang.html did not load" in found["hang.html"][0].detail


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_page_that_hangs_the_probe_is_named(site: Path) -> None:
    page = html("<p>resize me</p><script>onresize = () => { while (true) {} };</script>")
    (site / "hang-later.html").write_text(page, "utf-8")
    async with LayoutBrowser(site, chromium=require_chromium(), parallel=1, timeout=2) as browser:
        with anyio.fail_after(30):
            with pytest.raises(BrowserError, match=r"hang-later\.html"):
                await browser.check(["hang-later.html"], LIMITS, widths=[390, 768])
            # The tab started over: the next check works.
            assert await browser.check(["clean.html"], LIMITS) == {"clean.html": []}


# ---------------------------------------------------------------------- find_chromium


def test_no_chromium_anywhere_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(CHROMIUM_ENV, raising=False)
    with pytest.raises(MissingDependencyError) as caught:
        find_chromium()
    assert HINT in str(caught.value)
    assert "trinity[guard]" in str(caught.value)
    assert CHROMIUM_ENV in str(caught.value)


def test_the_environment_variable_names_the_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("playwright")
    browser = tmp_path / "my-chrome"
    browser.write_text("#!/bin/sh\n", encoding="utf-8")
    browser.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv(CHROMIUM_ENV, str(browser))
    assert find_chromium() == browser
    assert find_chromium(str(browser)) == browser


def test_a_browser_that_is_not_there_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("playwright")
    monkeypatch.setenv(CHROMIUM_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(MissingDependencyError, match=CHROMIUM_ENV) as caught:
        find_chromium()
    assert HINT in str(caught.value)
