"""render.sitemap: sitemap.xml and robots.txt."""

from __future__ import annotations

from xml.etree import ElementTree

from trinity.render.sitemap import robots_txt, sitemap_xml


def test_sitemap_xml() -> None:
    xml = sitemap_xml("https://example.com/", ["", "about/", "q/?a=1&b=<2>"])
    root = ElementTree.fromstring(xml)
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    assert root.tag == "{http://www.sitemaps.org/schemas/sitemap/0.9}urlset"
    assert [loc.text for loc in root.findall("s:url/s:loc", ns)] == [
        "https://example.com/",
        "https://example.com/about/",
        "https://example.com/q/?a=1&b=<2>",
    ]
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    assert "&amp;" in xml


def test_empty_sitemap_is_valid() -> None:
    root = ElementTree.fromstring(sitemap_xml("https://e.com/", []))
    assert list(root) == []


def test_robots_txt() -> None:
    assert robots_txt("https://example.com/sub/") == (
        "User-agent: *\nAllow: /\n\nSitemap: https://example.com/sub/sitemap.xml\n"
    )
