"""Shared fixtures live in tests/fixtures/, one module per kind of real part (database, sandbox, ...)."""

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.sandbox",
    "tests.fixtures.smtp",
    "tests.fixtures.receivers",
    "tests.fixtures.browser",
]
