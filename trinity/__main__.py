"""`python -m trinity`."""

from trinity.cli import main

main()
