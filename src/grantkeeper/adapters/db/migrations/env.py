"""Alembic environment: runs on the connection ``schema.migrate`` hands over, or opens one from
``GRANTKEEPER_DATABASE_URL`` when a developer runs the ``alembic`` command."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from grantkeeper.adapters.db.engine import make_engine, normalise_url, write_transaction
from grantkeeper.adapters.db.schema import VERSION_TABLE
from grantkeeper.adapters.db.tables import metadata


def _database_url() -> str:
    return os.environ.get("GRANTKEEPER_DATABASE_URL", "sqlite:///grantkeeper.db")


def _run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE needs copy-and-move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = make_engine(_database_url())
    try:
        with write_transaction(engine) as own_connection:
            _run_on(own_connection)
    finally:
        engine.dispose()


def _run_offline() -> None:
    context.configure(
        url=normalise_url(_database_url()),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
