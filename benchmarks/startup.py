"""Start-up time of the `trinity` command: `--version` and `--help` against a bare Python.

Each command runs as a subprocess `--runs` times (after one untimed run each, so the page
cache is warm), the commands taking turns so that a noisy moment on a shared machine
lands on all of them; the table shows the median, the 90th percentile and the fastest
run, and the median less that of `python -c pass` measured the same way, which is what
Trinity itself adds to an interpreter's start. The targets: a median under 150 ms for
`--version` (answered by trinity/launch.py before the CLI loads) and 300 ms for `--help`.

Then what the time goes to: `python -X importtime -c "import trinity.cli"`, run
`--import-runs` times, the modules with the largest cumulative import time (median over
the runs; a module's figure includes the modules it imports), and the modules that
`trinity --help` imports on top of that.

    python benchmarks/startup.py [--runs 20] [--top 5] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_at_start, markdown_table, plain_table

TARGET_MS = 300.0
# `trinity --version` has its own (issue 17): it never loads the CLI.
TARGETS_MS = {"trinity --version": 150.0}


@dataclass
class Command:
    label: str
    argv: list[str]
    times_ms: list[float] = field(default_factory=list)

    def run(self) -> float:
        started = time.perf_counter()
        subprocess.run(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return (time.perf_counter() - started) * 1000

    def percentile(self, pct: float) -> float:
        ordered = sorted(self.times_ms)
        return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))]


@dataclass
class Import:
    name: str
    depth: int
    self_us: int
    cumulative_us: int


def import_times(code: list[str]) -> list[Import]:
    """What `python -X importtime` reports for `code`, in the order it reports it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *code],
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        found.append(Import(name.strip(), depth, int(fields[0]), int(fields[1])))
    return found


def median_imports(code: list[str], runs: int) -> dict[str, Import]:
    """Each module's median self and cumulative time over `runs` runs (depth of the first)."""
    seen: dict[str, list[Import]] = {}
    for _ in range(runs):
        for entry in import_times(code):
            seen.setdefault(entry.name, []).append(entry)
    return {
        name: Import(
            name,
            entries[0].depth,
            int(statistics.median(e.self_us for e in entries)),
            int(statistics.median(e.cumulative_us for e in entries)),
        )
        for name, entries in seen.items()
    }


def parent_of(name: str, ordered: list[Import]) -> str:
    """The module whose import pulled `name` in (importtime lists children first)."""
    for index, entry in enumerate(ordered):
        if entry.name == name:
            for later in ordered[index + 1 :]:
                if later.depth < entry.depth:
                    return later.name
            return ""
    return ""


# ---------------------------------------------------------------------- the machine


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


# ---------------------------------------------------------------------- output


def table(
    headers: tuple[str, ...], rows: list[tuple[str, ...]], markdown: bool, left: int = 1
) -> str:
    """A plain or markdown table; the first `left` columns are text, the others numbers."""
    return (markdown_table if markdown else plain_table)(headers, rows, left)


def startup_rows(commands: list[Command]) -> list[tuple[str, ...]]:
    baseline = statistics.median(commands[0].times_ms)
    rows = []
    for n, command in enumerate(commands):
        median = statistics.median(command.times_ms)
        target = TARGETS_MS.get(command.label, TARGET_MS)
        verdict = "" if n == 0 else ("met" if median < target else "missed")
        rows.append(
            (
                command.label,
                f"{median:.0f}",
                f"{command.percentile(90):.0f}",
                f"{min(command.times_ms):.0f}",
                "" if n == 0 else f"+{median - baseline:.0f}",
                "" if n == 0 else f"< {target:.0f}",
                verdict,
            )
        )
    return rows


def import_rows(imports: dict[str, Import], names: set[str], top: int) -> list[tuple[str, ...]]:
    chosen = sorted(
        (imports[name] for name in names), key=lambda entry: entry.cumulative_us, reverse=True
    )[:top]
    return [
        (entry.name, f"{entry.cumulative_us / 1000:.1f}", f"{entry.self_us / 1000:.1f}")
        for entry in chosen
    ]


def as_code(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Module names in backticks, for markdown."""
    return [(f"`{row[0]}`", *row[1:]) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each command")
    parser.add_argument("--import-runs", type=int, default=5, help="runs of -X importtime")
    parser.add_argument("--top", type=int, default=5, help="modules to list")
    parser.add_argument(
        "--trinity",
        default=str(Path(sys.executable).with_name("trinity")),
        help="the trinity command (default: the one beside this Python)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    args = parser.parse_args()

    load = load_at_start()
    description = machine()
    commands = [
        Command("python -c pass", [sys.executable, "-c", "pass"]),
        Command("trinity --version", [args.trinity, "--version"]),
        Command("trinity --help", [args.trinity, "--help"]),
    ]
    started = time.perf_counter()
    for command in commands:
        command.run()  # untimed: the page cache and .pyc files warm
    for number in range(args.runs):
        order = commands if number % 2 == 0 else list(reversed(commands))
        for command in order:
            command.times_ms.append(command.run())

    import_code = ["-c", "import trinity.cli"]
    help_code = [
        "-c",
        "import sys; sys.argv = ['trinity', '--help']; import trinity.cli as cli; cli.main()",
    ]
    imports = median_imports(import_code, args.import_runs)
    ordered = import_times(import_code)
    total_import = imports["trinity.cli"].cumulative_us if "trinity.cli" in imports else 0
    help_imports = median_imports(help_code, args.import_runs)
    help_ordered = import_times(help_code)
    elapsed = time.perf_counter() - started

    timing_headers = (
        "command",
        "median (ms)",
        "p90 (ms)",
        "min (ms)",
        "over `python -c pass` (ms)",
        "target",
        "verdict",
    )
    import_headers = ("module", "cumulative (ms)", "self (ms)")
    timing = startup_rows(commands)
    # The modules trinity.cli imports itself: each one's figure includes what it imports,
    # so together with trinity.cli's own time they make up the whole.
    direct = {name for name in imports if parent_of(name, ordered) == "trinity.cli"}
    top_imports = import_rows(imports, direct, args.top)
    # What --help imports while it runs: only the outermost, for the same reason.
    help_only = {name for name in help_imports if name not in imports}
    outer_help = {name for name in help_only if parent_of(name, help_ordered) not in help_only}
    help_rows = import_rows(help_imports, outer_help, args.top)
    own = imports["trinity.cli"].self_us / 1000 if "trinity.cli" in imports else 0.0

    print()
    print(f"Start-up: {args.runs} runs of each command, {elapsed:.0f} s")
    print(f"Machine: {description}")
    print(f"Load average at start: {load:.2f}")
    print()
    print(table(timing_headers, timing, markdown=False))
    print()
    print(
        f"`import trinity.cli`: {total_import / 1000:.0f} ms cumulative, {own:.0f} ms of it "
        f"its own (median of {args.import_runs} runs of -X importtime). What it imports "
        f"directly, the top {args.top}:"
    )
    print(table(import_headers, top_imports, markdown=False))
    print()
    print(
        f"What `trinity --help` imports on top of that while it runs (outermost modules), "
        f"the top {args.top}:"
    )
    print(table(import_headers, help_rows, markdown=False))
    if args.markdown:
        print()
        print(f"Machine: {description}.")
        print()
        print(table(timing_headers, timing, markdown=True))
        print()
        print(table(import_headers, as_code(top_imports), markdown=True))
        print()
        print(table(import_headers, as_code(help_rows), markdown=True))


if __name__ == "__main__":
    main()
