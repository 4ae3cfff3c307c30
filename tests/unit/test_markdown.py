"""render.markdown: untrusted answers become safe HTML."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from trinity.render.markdown import is_safe_url, render_markdown, render_text

FAST = settings(max_examples=200, database=None, deadline=None)

UNSAFE_URLS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    " javascript:alert(1)",
    "\x00javascript:alert(1)",
    "javascript\x7f:alert(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "DATA:image/png;base64,AAAA",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://example.com/x",
    "chrome://settings",
    "//evil.example/x",
    " //evil.example/x",
    "\\\\evil.example/x",
    "/\\evil.example/x",
    "\t//evil.example/x",
]
SAFE_URLS = [
    "http://example.com",
    "https://example.com/a?b=c#d",
    "HTTPS://EXAMPLE.COM",
    "mailto:someone@example.com",
    "/absolute/path",
    "relative/page/",
    "../up",
    "#anchor",
    "?query=1",
    "page.html",
    "a/b:c",
    "a//b",
]


@pytest.mark.parametrize("url", UNSAFE_URLS)
def test_unsafe_urls(url: str) -> None:
    assert is_safe_url(url) is False


@pytest.mark.parametrize("url", SAFE_URLS)
def test_safe_urls(url: str) -> None:
    assert is_safe_url(url) is True


def hrefs_and_srcs(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', html)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "java&#9;script:alert(1)",
        "&#106;avascript:alert(1)",
        "javascript&#58;alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
    ],
)
@pytest.mark.parametrize(
    "template",
    [
        pytest.param("[click]({url})", id="link"),
        pytest.param("![pic]({url})", id="image"),
        pytest.param("<{url}>", id="autolink"),
        pytest.param("[click][r]\n\n[r]: {url}", id="reference"),
    ],
)
def test_unsafe_links_and_images_are_not_emitted(url: str, template: str) -> None:
    html = render_markdown(template.format(url=url))
    for target in hrefs_and_srcs(html):
        assert is_safe_url(target), html
    lowered = html.lower()
    for scheme in ("javascript:", "vbscript:", "data:", "file:"):
        assert f'href="{scheme}' not in lowered
        assert f'src="{scheme}' not in lowered


@pytest.mark.parametrize(
    "markdown",
    [
        pytest.param("[click](//evil.example/x)", id="link"),
        pytest.param("![pic](//evil.example/x.png)", id="image"),
        pytest.param("[click][r]\n\n[r]: //evil.example/x", id="reference"),
        pytest.param("[click](<//evil.example/x>)", id="bracketed"),
        pytest.param("[click](/\\evil.example/x)", id="backslash"),
        pytest.param("<//evil.example/x>", id="autolink"),
    ],
)
def test_protocol_relative_links_and_images_are_not_emitted(markdown: str) -> None:
    html = render_markdown(markdown)
    assert 'href="//' not in html
    assert 'src="//' not in html
    for target in hrefs_and_srcs(html):
        assert is_safe_url(target), html


def test_an_unsafe_link_loses_its_href_but_keeps_its_text() -> None:
    html = render_markdown("[click me](javascript:alert(1))")
    assert "href" not in html
    assert "click me" in html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[a](http://example.com/x)", 'href="http://example.com/x"'),
        ("[a](https://example.com/x)", 'href="https://example.com/x"'),
        ("[a](mailto:me@example.com)", 'href="mailto:me@example.com"'),
        ("[a](../other/)", 'href="../other/"'),
        ("[a](/root)", 'href="/root"'),
        ("![i](img/cat.png)", 'src="img/cat.png"'),
        ("![i](https://example.com/cat.png)", 'src="https://example.com/cat.png"'),
        ("<https://example.com>", 'href="https://example.com"'),
    ],
)
def test_safe_links_are_kept(markdown: str, expected: str) -> None:
    assert expected in render_markdown(markdown)


@pytest.mark.parametrize(
    "answer",
    [
        "<script>alert(1)</script>",
        "Hello <script>alert(1)</script> world",
        "<img src=x onerror=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "<iframe src='https://evil'></iframe>",
    ],
)
def test_raw_html_comes_out_escaped(answer: str) -> None:
    html = render_markdown(answer)
    assert "<script" not in html
    assert "<img" not in html
    assert "<iframe" not in html
    assert "<a href" not in html
    assert "&lt;" in html


@pytest.mark.parametrize(
    ("markdown", "tag"),
    [("# A", "h2"), ("## A", "h3"), ("### A", "h4"), ("#### A", "h5"), ("##### A", "h6")],
)
def test_headings_are_shifted_down_one_level(markdown: str, tag: str) -> None:
    assert render_markdown(markdown).strip() == f"<{tag}>A</{tag}>"


def test_h6_stays_h6_and_no_h1_is_ever_produced() -> None:
    html = render_markdown("###### six\n\nTitle\n=====\n\n# one")
    assert "<h6>six</h6>" in html
    assert "<h1" not in html
    assert "<h2>Title</h2>" in html


def test_markdown_features_render() -> None:
    html = render_markdown("**bold** _em_ ~~gone~~\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<strong>bold</strong>" in html
    assert "<em>em</em>" in html
    assert "<s>gone</s>" in html
    assert "<table>" in html


def test_render_markdown_returns_markup() -> None:
    assert isinstance(render_markdown("x"), Markup)


@FAST
@given(st.text())
def test_no_raw_tags_survive_any_input(text: str) -> None:
    html = render_markdown(text)
    assert "<script" not in html.lower()
    for target in hrefs_and_srcs(html):
        assert is_safe_url(target)


def test_render_text_escapes_and_makes_paragraphs() -> None:
    html = render_text("  First <b>line</b>\nsecond & line\n\n\n  Next para  \n")
    assert html == Markup(
        "<p>First &lt;b&gt;line&lt;/b&gt;<br>\nsecond &amp; line</p>\n<p>Next para</p>"
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n"])
def test_render_text_of_blank_input_is_empty(text: str) -> None:
    assert render_text(text) == ""


@FAST
@given(st.text())
def test_render_text_never_lets_a_tag_through(text: str) -> None:
    html = str(render_text(text))
    stripped = re.sub(r"</?p>|<br>", "", html)
    assert "<" not in stripped
    assert ">" not in stripped
