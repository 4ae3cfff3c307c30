"""sitemap.xml and robots.txt, for a site that has a base URL."""

from __future__ import annotations

from collections.abc import Iterable
from xml.sax.saxutils import escape as xml_escape


def sitemap_xml(base_url: str, urls: Iterable[str]) -> str:
    """A sitemaps.org urlset for pages at `urls` relative to `base_url`."""
    entries = "".join(f"  <url><loc>{xml_escape(base_url + url)}</loc></url>\n" for url in urls)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{entries}</urlset>\n"
    )


def robots_txt(base_url: str) -> str:
    return f"User-agent: *\nAllow: /\n\nSitemap: {base_url}sitemap.xml\n"
