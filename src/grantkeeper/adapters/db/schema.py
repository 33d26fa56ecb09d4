"""Running the Alembic migrations from code: ``grantkeeper migrate``, and first use of a brand-new database.

Migrations take a lock first (a transaction-scoped advisory lock on PostgreSQL, the write lock on SQLite), so
several workers starting at once against an empty database migrate it exactly once.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from grantkeeper.adapters.db.engine import read_transaction, write_transaction
from grantkeeper.adapters.db.tables import metadata
from grantkeeper.ports import SchemaOutdatedError

__all__ = ["VERSION_TABLE", "ensure_schema", "head_revision", "is_current", "migrate"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Our own name, so grantkeeper can share a database with an application that uses Alembic itself.
VERSION_TABLE = "grantkeeper_alembic_version"
_PG_MIGRATION_LOCK = 0x6772_616E_746B  # "grantk": an arbitrary application-wide advisory lock key


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found in the package")  # a packaging bug, not a user error
    return str(head)


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    return None if revision is None else str(revision)


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration this code ships."""
    with read_transaction(engine) as connection:
        return current_revision(connection) == head_revision()


def migrate(engine: Engine) -> None:
    """Upgrade to the newest migration; a no-op when already there. Safe to run from several processes."""
    with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        command.upgrade(alembic_config(connection), "head")


def ensure_schema(engine: Engine) -> None:
    """Migrate a database that holds none of our tables yet; refuse one at another revision.

    Creating the schema of a new database is what a user expects from ``grantkeeper demo``; changing the
    schema of a database that already holds connections is a step an operator should take on purpose.
    """
    with read_transaction(engine) as connection:
        revision = current_revision(connection)
        existing = set(inspect(connection).get_table_names()) & (set(metadata.tables) | {VERSION_TABLE})
    if revision == head_revision():
        return
    if existing:
        raise SchemaOutdatedError(
            f"database schema is at revision {revision or 'unknown'}, "
            f"this grantkeeper needs {head_revision()}: "
            "run `grantkeeper migrate` (or upgrade grantkeeper if the database is newer)"
        )
    migrate(engine)
