"""`python -m trinity`."""

from trinity.launch import main

main()
