"""What every benchmark script reports about the machine it ran on, how it prints tables,
and how it stops the servers it started.

benchmarks/ is not a package: scripts put this file's folder on `sys.path` and import
`machine`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


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


def load_at_start(spoiled: str = "times") -> float:
    """The load average now, said on stderr as a warning when other work already keeps
    half the cores busy: it will show in what the script measures (its `spoiled`)."""
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) / 2:
        print(
            f"Warning: load average {load:.1f} on {os.cpu_count()} cores; other processes "
            f"will show in the {spoiled}",
            file=sys.stderr,
        )
    return load


def plain_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> str:
    """Columns padded to their widest cell: the first `left` left-aligned, the others right."""
    table = [headers, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = []
    for n, line in enumerate(table):
        lines.append(
            "  ".join(
                cell.ljust(width) if i < left else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown_table(headers: tuple[str, ...], rows: list[tuple[str, ...]], left: int = 1) -> str:
    """A markdown table: the first `left` columns are text, the others numbers."""
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(headers))) + "|"
    lines = ["| " + " | ".join(headers) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def stop(process: subprocess.Popen[Any]) -> None:
    """Ask a server to stop, and kill it if it has not within ten seconds."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
