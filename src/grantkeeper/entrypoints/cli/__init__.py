"""The ``grantkeeper`` command line (DESIGN section 4)."""

from grantkeeper.entrypoints.cli import (  # noqa: F401  (registers the commands)
    channels,
    data,
    demo,
    outbox,
    prune,
    refresh,
    serve,
    simulate,
)
from grantkeeper.entrypoints.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
