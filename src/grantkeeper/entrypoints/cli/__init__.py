"""The ``grantkeeper`` command line (DESIGN section 4)."""

from grantkeeper.entrypoints.cli import data, demo, outbox, refresh, serve  # noqa: F401  (registers the commands)
from grantkeeper.entrypoints.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
