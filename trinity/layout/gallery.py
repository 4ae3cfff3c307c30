"""The page `--guard-screenshots` writes: every page with findings, before and after healing
side by side at each width, with its findings and what was done about them. People would
rather look at a layout problem than read about it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GALLERY_FILE = "index.html"

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2.5rem; }
table.findings { border-collapse: collapse; margin: .5rem 0 1rem; }
table.findings td, table.findings th { border: 1px solid #ccc; padding: .3rem .5rem;
  text-align: left; vertical-align: top; }
.held { color: #1b5e20; } .left { color: #b00020; font-weight: 600; }
.width { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; margin: 1rem 0; }
.width figure { margin: 0; } .width img { max-width: 100%; border: 1px solid #999; }
figcaption { font-size: .85rem; color: #444; }
"""


def screenshot_name(page: str, width: int, label: str = "") -> str:
    """`about/index.html` at 390 -> `about--index-390.png` (label, if any, before .png).

    Folders become `--` and `.html` goes; any character other than a letter, digit, dot,
    dash or underscore becomes `_`, so the name is safe on every file system.
    """
    stem = page.removesuffix(".html").replace("/", "--")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{stem}-{width}{label}")
    return f"{safe}.png"


def gallery_page(folder: Path, findings: Sequence[Mapping[str, Any]], widths: Sequence[int]) -> str:
    """The gallery's HTML, to go into `folder` beside the screenshots it shows."""
    pages: dict[str, list[Mapping[str, Any]]] = {}
    for finding in findings:
        pages.setdefault(str(finding["page"]), []).append(finding)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Layout guardian</title><style>{_STYLE}</style></head><body>",
        "<h1>Layout guardian</h1>",
        f"<p>{len(pages)} pages with findings; {_count(findings)}.</p>",
    ]
    for page, found in sorted(pages.items()):
        parts.append(f"<h2>{html.escape(page)}</h2>")
        parts.append(_findings_table(found))
        for width in widths:
            parts.append(_side_by_side(folder, page, width))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _count(findings: Sequence[Mapping[str, Any]]) -> str:
    healed = sum(1 for f in findings if f["healed"])
    return f"{healed} of {len(findings)} findings healed"


def _findings_table(findings: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        "<table class='findings'><tr><th>Width</th><th>Finding</th><th>Block</th>"
        "<th>What it was</th><th>Fixes</th><th>Held</th></tr>"
    ]
    for f in sorted(findings, key=lambda f: (f["width"], f["kind"], str(f["block"]))):
        held = "<span class='held'>healed</span>" if f["healed"] else "<span class='left'>no</span>"
        rows.append(
            "<tr>"
            f"<td>{int(f['width'])} px</td>"
            f"<td>{html.escape(str(f['kind']))}</td>"
            f"<td>{html.escape(str(f['block'] or '(theme)'))}</td>"
            f"<td>{html.escape(str(f['detail']))}<br><code>{html.escape(str(f['element']))}</code></td>"
            f"<td>{html.escape(', '.join(f['fixes']) or '—')}</td>"
            f"<td>{held}</td>"
            "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _side_by_side(folder: Path, page: str, width: int) -> str:
    figures = []
    for label in ("before", "after"):
        name = screenshot_name(page, width, f"-{label}")
        if (folder / name).is_file():
            src = html.escape(name, quote=True)
            figures.append(
                f"<figure><img src='{src}' alt='{html.escape(page)} at {width} px, {label}'>"
                f"<figcaption>{width} px, {label}</figcaption></figure>"
            )
    if not figures:
        return ""
    return f"<div class='width'>{''.join(figures)}</div>"


__all__ = ["GALLERY_FILE", "gallery_page", "screenshot_name"]
