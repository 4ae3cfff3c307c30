"""LLM answers to safe HTML.

Answers are untrusted input. Markdown is rendered with raw HTML off, so a `<script>` in an
answer comes out as text; links and images may only point to http, https, mailto or
relative URLs, so `javascript:`, `data:` and protocol-relative (`//host`) links are
dropped. Headings are shifted down one level because the page's own title is its only <h1>.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})

_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
# Browsers ignore ASCII control characters and whitespace inside a scheme ("java\tscript:").
_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20\x7f]+")


def is_safe_url(url: str) -> bool:
    """True for http(s), mailto and relative URLs; False for every other scheme, and for a
    protocol-relative URL (`//host/x`), which leaves the site for a host of its choosing."""
    cleaned = _IGNORED_IN_SCHEME.sub("", url).lower()
    # Browsers read a backslash as a slash in web URLs: \\host and /\host mean //host.
    if cleaned.replace("\\", "/").startswith("//"):
        return False
    match = _SCHEME.match(cleaned)
    return match is None or match.group(1) in ALLOWED_SCHEMES


@cache
def _parser() -> MarkdownIt:
    # Imported here: a rebuild that renders no page never needs markdown-it (slow to import).
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = is_safe_url  # type: ignore[method-assign]
    return md


def render_markdown(text: str) -> Markup:
    """Sanitised HTML for a Markdown answer."""
    md = _parser()
    tokens = md.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close") and token.tag in (
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
        ):
            token.tag = f"h{int(token.tag[1]) + 1}"
    # Safe by construction: raw HTML is off and links are filtered above.
    return Markup(md.renderer.render(tokens, md.options, {}))


def render_text(text: str) -> Markup:
    """Plain text as escaped HTML paragraphs, one per blank-line-separated chunk."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return Markup("\n").join(
        Markup("<p>{}</p>").format(Markup("<br>\n").join(escape(line) for line in p.splitlines()))
        for p in paragraphs
    )
