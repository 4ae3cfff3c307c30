"""The console script's entry point (and `python -m trinity`'s), kept light.

`trinity --version` answers from here, without loading the CLI: Typer and Rich are most
of what start-up costs (benchmarks/startup.py), and a version check (a CI step, a shell
prompt, the container's health check) should not pay for them. Everything else goes to
trinity.cli, which prints the same line for the same flags.
"""

from __future__ import annotations

import sys

from trinity.version import __version__

VERSION_FLAGS = frozenset({"--version", "-V"})


def main(argv: list[str] | None = None) -> None:
    """Run `trinity ARGS` (ARGS: the command line's, by default)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0] in VERSION_FLAGS:
        sys.stdout.write(f"trinity {__version__}\n")
        return
    from trinity.cli import main as cli_main

    cli_main(args)


__all__ = ["VERSION_FLAGS", "main"]
