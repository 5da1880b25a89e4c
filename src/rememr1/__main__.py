"""`python -m rememr1 ...` is the same as the `rememr1` command."""

from .cli import main

main()
