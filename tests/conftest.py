"""Shared fixtures live in tests/fixtures/, one module per kind of real part (database, sandbox, ...)."""

from __future__ import annotations

import compileall
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.receivers",
    "tests.fixtures.browser",
]

SRC = Path(__file__).resolve().parents[1] / "src"


def pytest_configure(config: pytest.Config) -> None:
    """Compile ``src`` to bytecode once, before the workers start.

    The suite starts hundreds of ``python -m grantkeeper`` processes (the CLI, workers, servers, the
    sandbox). A fresh clone has no ``__pycache__`` for the editable install, and where the environment sets
    ``PYTHONDONTWRITEBYTECODE`` no process ever writes one, so each of them compiled every module it imports
    from source: 0.3 s of CPU per process on this 2-core machine. ``compileall`` writes the files whatever
    that variable says, atomically, and only for sources that changed.
    """
    if not hasattr(config, "workerinput"):  # the xdist controller (or a run without xdist), not each worker
        compileall.compile_dir(SRC, quiet=1)
