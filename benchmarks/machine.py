"""What every benchmark script reports about the machine it ran on, and how it prints tables.

benchmarks/ is not a package: scripts put this file's folder on `sys.path` and import
`machine`.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def file_system(path: Path) -> str:
    """The type of the file system holding `path` (from /proc/mounts), or 'unknown'."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fields[2]
    return kind


def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat): user nice system idle iowait irq
    softirq steal; None where there is no /proc."""
    with contextlib.suppress(OSError, ValueError):
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        if first[0] == "cpu":
            return [int(n) for n in first[1:9]]
    return None


def steal_share(before: list[int] | None, after: list[int] | None) -> str:
    """The share of CPU time a hypervisor gave to other guests meanwhile (noise we cannot see)."""
    if before is None or after is None:
        return "unknown"
    spent = [b - a for a, b in zip(before, after, strict=True)]
    return f"{100 * spent[7] / max(1, sum(spent)):.1f} %"


def plain_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    table = [headers, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = []
    for n, line in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
