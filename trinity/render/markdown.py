"""LLM answers to safe HTML.

Answers are untrusted input. Markdown is rendered with raw HTML off, so a `<script>` in an
answer comes out as text; links and images may only point to http, https, mailto or
relative URLs, so `javascript:`, `data:` and protocol-relative (`//host`) links are
dropped. Headings are shifted down one level because the page's own title is its only <h1>.

Two engines, one set of rules. markdown-it-py is the reference: it applies the link rule
while it parses (`validateLink`), and what it writes is what Trinity has always published.
GitHub's cmark-gfm (trinity/render/cmark.py) renders an answer 10 to 20 times faster; a
few spellings of its HTML are changed to markdown-it's (`<s>`, not `<del>`; the table
alignment's style; a quote in a URL). It has no hook for the link rule and drops raw HTML
where markdown-it shows it as text, so its HTML is checked instead: an answer with any
link or image that the rule refuses (or that cmark's own safe mode emptied), or with raw
HTML, or a non-ASCII host name (punycode in markdown-it, percent-encoded by cmark), is
rendered again by the reference (rare: models write Markdown). Either way every
published URL passed `is_safe_url`, and the output is the reference's;
tests/unit/test_markdown.py holds the two to the same HTML on a corpus and lists the
differences found.
"""

from __future__ import annotations

import html
import re
from functools import cache
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from trinity.render.cmark import CmarkGfm

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})

_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
# Browsers ignore ASCII control characters and whitespace inside a scheme ("java\tscript:").
_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20\x7f]+")

# Every URL either engine writes is an href or a src attribute, in double quotes. Text
# cannot fake one, nor a tag: both engines escape '"' and '<' in text and in attributes.
_URL_ATTRIBUTE = re.compile(r' (?:href|src)="([^"]*)"')
# A host cmark wrote percent-encoded: markdown-it writes a non-ASCII host in punycode.
_ENCODED_HOST = re.compile(r"[a-z][a-z0-9+.\-]*://[^/?#]*%", re.IGNORECASE)
# cmark's safe mode writes this where an answer had raw HTML; markdown-it shows it as text.
_RAW_HTML_OMITTED = "<!-- raw HTML omitted -->"
# cmark's spellings -> markdown-it's: the same elements and attributes, written otherwise.
# ("&#x27;" only ever comes from cmark's escaping of a quote in a URL: in text, "'" stays.)
_CMARK_SPELLINGS = (
    ("<del>", "<s>"),
    ("</del>", "</s>"),
    (' style="text-align: ', ' style="text-align:'),
    ("&#x27;", "'"),
    ("<blockquote>\n</blockquote>", "<blockquote></blockquote>"),
)
# markdown-it stops at 20 levels of nesting (`maxNesting`) and drops what lies deeper;
# cmark goes to any depth. Past this many nested blockquotes, lists and items (well short
# of 20 levels as markdown-it counts them) the reference renders the answer.
MAX_FAST_DEPTH = 16
_CONTAINER_TAG = re.compile(r"<(/?)(?:blockquote|ul|ol|li)[ >]")
# With raw HTML off, every tag in the output is the engine's own, so a heading tag is one.
_HEADING_TAG = re.compile(r"<(/?)h([1-5])>")


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


def reference_html(text: str) -> str:
    """`text` as markdown-it-py renders it under Trinity's rules (headings not shifted)."""
    rendered: str = _parser().render(text)
    return rendered


@cache
def _fast_engine() -> CmarkGfm | None:
    from trinity.render.cmark import load  # imported when the first page is rendered

    return load()


def _fast_html(text: str) -> str | None:
    """`text` rendered by cmark-gfm in markdown-it's spelling; None when cmark is not
    there, or when the answer needs the reference: raw HTML, a link or image that breaks
    the link rule, an empty one (cmark empties `javascript:` links), or a string that is
    not valid Unicode."""
    engine = _fast_engine()
    if engine is None:
        return None
    try:
        rendered = engine.render(text)
    except UnicodeEncodeError:
        return None
    if _RAW_HTML_OMITTED in rendered or _too_deep(rendered) or not _urls_allowed(rendered):
        return None
    for cmark_spelling, ours in _CMARK_SPELLINGS:
        rendered = rendered.replace(cmark_spelling, ours)
    return rendered


def _urls_allowed(rendered: str) -> bool:
    """True when every link and image in `rendered` is one the link rule allows, not
    empty (as cmark's safe mode leaves a `javascript:` link), and written as markdown-it
    writes it (not so for a non-ASCII host)."""
    for match in _URL_ATTRIBUTE.finditer(rendered):
        url = match.group(1)
        if not url or not is_safe_url(html.unescape(url)) or _ENCODED_HOST.match(url):
            return False
    return True


def _too_deep(rendered: str) -> bool:
    """True when `rendered` nests blockquotes, lists and items MAX_FAST_DEPTH deep."""
    opened = sum(rendered.count(tag) for tag in ("<blockquote>", "<ul>", "<ol", "<li>"))
    if opened < MAX_FAST_DEPTH:  # the usual answer: too few to nest that deep
        return False
    depth = 0
    for match in _CONTAINER_TAG.finditer(rendered):
        depth += -1 if match.group(1) else 1
        if depth >= MAX_FAST_DEPTH:
            return True
    return False


def _shift_heading(match: re.Match[str]) -> str:
    return f"<{match.group(1)}h{int(match.group(2)) + 1}>"


def render_markdown(text: str) -> Markup:
    """Sanitised HTML for a Markdown answer."""
    rendered = _fast_html(text)
    if rendered is None:
        rendered = reference_html(text)
    # Safe by construction: raw HTML is off, and every link and image passed is_safe_url.
    return Markup(_HEADING_TAG.sub(_shift_heading, rendered))


def render_text(text: str) -> Markup:
    """Plain text as escaped HTML paragraphs, one per blank-line-separated chunk."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return Markup("\n").join(
        Markup("<p>{}</p>").format(Markup("<br>\n").join(escape(line) for line in p.splitlines()))
        for p in paragraphs
    )
