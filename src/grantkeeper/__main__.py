"""``python -m grantkeeper`` is the ``grantkeeper`` command."""

from grantkeeper.entrypoints.cli import main

main()
