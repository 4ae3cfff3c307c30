"""The golden site: the example project built against the fake server, byte for byte.

Each built-in theme's output tree is compared, file by file, with a checked-in copy under
`tests/golden/<theme>/`, as Pelican's functional tests do: any change to what Trinity
publishes (HTML, static files, sitemap, robots.txt, the page manifest) shows up here as a
diff. The build report holds timings, paths and a correlation id: of it, the fields
and each block's source are compared.

After a change to the output that is meant, write the copies anew and review the diff:

    UPDATE_GOLDEN=1 pytest tests/e2e/test_golden_site.py
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sitekit import SiteProject, snapshot

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
# Timings, absolute paths and a correlation id: never the same twice.
UNSTABLE = {".trinity/report.json"}
# ... so of the report, its fields and what each block was are compared instead.
REPORT_SHAPE = GOLDEN / "report-shape.json"


# The manifest's digest of the build's inputs holds the cache's generation, a random name.
MANIFEST = ".trinity/pages.json"


def published(output: Path) -> dict[str, bytes]:
    files = {name: data for name, data in snapshot(output).items() if name not in UNSTABLE}
    if MANIFEST in files:
        files[MANIFEST] = without_inputs_digest(files[MANIFEST])
    return files


def without_inputs_digest(manifest: bytes) -> bytes:
    data = json.loads(manifest)
    if "site" in data:
        data["site"]["inputs"] = "(digest of the inputs)"
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")


def first_difference(name: str, expected: bytes, actual: bytes) -> str:
    diff = difflib.unified_diff(
        expected.decode("utf-8", "replace").splitlines(),
        actual.decode("utf-8", "replace").splitlines(),
        f"golden/{name}",
        f"built/{name}",
        lineterm="",
        n=1,
    )
    return "\n".join(list(diff)[:40])


@pytest.mark.parametrize("theme", ["minimal", "brutalist"])
def test_the_example_site_is_built_byte_for_byte(site_project: SiteProject, theme: str) -> None:
    site_project.update_settings("site", base_url="https://example.com/")
    result = site_project.build("--theme", theme)
    assert result.exit_code == 0, result.describe()
    built = published(site_project.output)
    golden = GOLDEN / theme

    if os.environ.get("UPDATE_GOLDEN") == "1":
        shutil.rmtree(golden, ignore_errors=True)
        for name, data in built.items():
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            (golden / name).write_bytes(data)

    expected = published(golden)
    assert sorted(built) == sorted(expected), "the output holds other files than the golden copy"
    changed = [name for name in sorted(built) if built[name] != expected[name]]
    assert not changed, "\n\n".join(
        first_difference(name, expected[name], built[name]) for name in changed
    )
    shape = report_shape(site_project.report())
    if os.environ.get("UPDATE_GOLDEN") == "1":
        REPORT_SHAPE.write_text(json.dumps(shape, indent=2) + "\n", "utf-8")
    assert shape == json.loads(REPORT_SHAPE.read_text("utf-8"))


def report_shape(report: dict[str, Any]) -> dict[str, Any]:
    """The report's fields, its totals' fields, and what each block was, without numbers."""
    return {
        "fields": sorted(report),
        "totals": sorted(report["totals"]),
        "block_fields": sorted({name for block in report["blocks"] for name in block}),
        "blocks": sorted(f"{b['page']}/{b['block']}: {b['source']}" for b in report["blocks"]),
    }
