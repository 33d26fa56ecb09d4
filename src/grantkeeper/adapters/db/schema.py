"""Running the Alembic migrations from code: ``grantkeeper migrate``, and first use of a brand-new database.

Migrations take a lock first (a transaction-scoped advisory lock on PostgreSQL, the write lock on SQLite), so
several workers starting at once against an empty database migrate it exactly once.

Every command checks the schema's revision before it touches the database, but only ``migrate`` (or a new
database) needs Alembic itself: importing it (with Mako and Pygments) took about a tenth of a second of every
command's start-up. So the check reads the version table with one query and compares it with
``HEAD_REVISION``, which ``tests/integration/test_store_schema.py`` holds equal to the newest migration's;
Alembic is imported where migrations run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from grantkeeper.adapters.db.engine import migration_transaction, read_transaction
from grantkeeper.adapters.db.tables import metadata
from grantkeeper.ports import SchemaOutdatedError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "VERSION_TABLE", "ensure_schema", "head_revision", "is_current", "migrate"]

#: The newest migration in ``migrations/versions``; a new migration changes it (a test fails until it does).
HEAD_REVISION = "0009"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Our own name, so grantkeeper can share a database with an application that uses Alembic itself.
VERSION_TABLE = "grantkeeper_alembic_version"
_PG_MIGRATION_LOCK = 0x6772_616E_746B  # "grantk": an arbitrary application-wide advisory lock key


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision this code needs (``HEAD_REVISION``)."""
    return HEAD_REVISION


def migrations_head() -> str:
    """The newest revision among the packaged migration scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found in the package")  # a packaging bug, not a user error
    return str(head)


def current_revision(connection: Connection) -> str | None:
    """The database's revision: the one row of our version table, None without the table (a new database).

    What Alembic's ``MigrationContext.get_current_revision`` reads, without importing Alembic."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()  # noqa: S608
    if len(revisions) > 1:  # a branched history: never made by our linear migrations
        raise SchemaOutdatedError(f"database schema has several heads ({', '.join(sorted(revisions))})")
    return str(revisions[0]) if revisions else None


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration this code ships."""
    with read_transaction(engine) as connection:
        return current_revision(connection) == head_revision()


def migrate(engine: Engine) -> None:
    """Upgrade to the newest migration; a no-op when already there. Safe to run from several processes."""
    with migration_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        from alembic import command

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
