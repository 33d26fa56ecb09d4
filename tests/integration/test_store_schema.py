"""Schema, migrations, engine configuration and the UTC datetime type, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, Table, event, insert, inspect, select, text

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, ensure_schema, is_current, make_engine, migrate
from grantkeeper.adapters.db.engine import normalise_url
from grantkeeper.adapters.db.schema import (
    HEAD_REVISION,
    VERSION_TABLE,
    current_revision,
    head_revision,
    migrations_head,
)
from grantkeeper.adapters.db.tables import metadata
from grantkeeper.adapters.db.types import UTCDateTime
from grantkeeper.ports import SchemaOutdatedError

EXPECTED_TABLES = {
    "tenants",
    "providers",
    "connections",
    "workflows",
    "workflow_connections",
    "notifications",
    "outbox",
    "refresh_attempts",
    VERSION_TABLE,
}


@pytest.fixture
def empty_engine(empty_database_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def test_migrate_brings_an_empty_database_to_head(empty_engine: Engine) -> None:
    assert not is_current(empty_engine)

    migrate(empty_engine)

    assert is_current(empty_engine)
    assert set(inspect(empty_engine).get_table_names()) >= EXPECTED_TABLES


def test_the_revision_the_code_needs_is_the_newest_migration() -> None:
    """``HEAD_REVISION`` spares every command Alembic's import; a new migration must move it too."""
    assert migrations_head() == HEAD_REVISION


def test_the_revision_read_without_alembic_is_alembics(engine: Engine, empty_engine: Engine) -> None:
    for each in (engine, empty_engine):
        with each.connect() as connection:
            theirs = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            assert current_revision(connection) == theirs.get_current_revision()
    with engine.connect() as connection:
        assert current_revision(connection) == HEAD_REVISION
    with empty_engine.connect() as connection:
        assert current_revision(connection) is None


def test_migrate_again_is_a_no_op(engine: Engine) -> None:
    migrate(engine)

    assert is_current(engine)


def test_migrated_schema_matches_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        differences = compare_metadata(context, metadata)

    assert differences == []


def test_store_creates_the_schema_on_first_use_of_an_empty_database(
    empty_engine: Engine, keyring: Keyring
) -> None:
    store = SqlStore(empty_engine, keyring)

    assert is_current(empty_engine)
    assert store.ensure_tenant("default").startswith("ten_")


def test_store_refuses_a_database_at_another_revision(engine: Engine, keyring: Keyring) -> None:
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0000'"))

    with pytest.raises(SchemaOutdatedError, match="run `grantkeeper migrate`"):
        SqlStore(engine, keyring)


def test_store_refuses_a_database_holding_our_tables_without_a_revision(
    empty_engine: Engine, keyring: Keyring
) -> None:
    with empty_engine.begin() as connection:
        connection.execute(text("CREATE TABLE connections (id VARCHAR(32) PRIMARY KEY)"))

    with pytest.raises(SchemaOutdatedError):
        ensure_schema(empty_engine)


def test_concurrent_first_use_of_an_empty_database_migrates_it_once(
    empty_database_url: str, keyring: Keyring
) -> None:
    engines = [make_engine(empty_database_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def first_use(engine: Engine) -> None:
        barrier.wait()
        try:
            SqlStore(engine, keyring)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert is_current(engines[0])
        with engines[0].connect() as connection:
            versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        assert versions == [head_revision()]
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (
            "postgresql://app@db.internal:5432/grantkeeper",
            "postgresql+psycopg://app@db.internal:5432/grantkeeper",
        ),
        ("postgres://app@db.internal/grantkeeper", "postgresql+psycopg://app@db.internal/grantkeeper"),
        ("postgresql+psycopg://app@db/grantkeeper", "postgresql+psycopg://app@db/grantkeeper"),
        ("sqlite:///grantkeeper.db", "sqlite:///grantkeeper.db"),
    ],
)
def test_urls_as_users_write_them_get_the_psycopg_driver(written: str, expected: str) -> None:
    assert normalise_url(written).render_as_string(hide_password=False) == expected


_SQLITE_SETTINGS = (
    "journal_mode",
    "busy_timeout",
    "foreign_keys",
    "synchronous",
    "temp_store",
    "wal_autocheckpoint",
)


def test_sqlite_connections_use_wal_busy_timeout_foreign_keys_normal_sync_and_memory_temp(
    tmp_path: Path,
) -> None:
    """Each setting is in ``engine._configure_sqlite_connection``, with its reason; ``temp_store`` 2 keeps a
    savepoint's journal in memory instead of a file created and deleted on each refresh tick."""
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in _SQLITE_SETTINGS
            }
    finally:
        engine.dispose()

    assert pragma == {
        "journal_mode": "wal", "busy_timeout": 30000, "foreign_keys": 1, "synchronous": 1, "temp_store": 2,
        "wal_autocheckpoint": 10000,
    }  # fmt: skip


def test_sqlite_migrations_sort_on_disk_and_leave_the_pool_in_memory(tmp_path: Path) -> None:
    """Connections keep temporary files in memory, but a migration's index builds sort the whole table, and
    SQLite's sorter keeps an in-memory sort in memory: migrations run with temporary files on disk
    (``engine.migration_transaction``), and the connection goes back to the pool as it came."""
    engine = make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    during: list[int] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE INDEX"):
            during.append(cursor.connection.execute("PRAGMA temp_store").fetchone()[0])

    try:
        migrate(engine)
        with engine.connect() as connection:
            after = connection.exec_driver_sql("PRAGMA temp_store").scalar()
    finally:
        engine.dispose()

    assert during  # the migrations build indexes
    assert set(during) == {1}  # FILE
    assert after == 2  # MEMORY


def test_sqlite_transactions_roll_back(tmp_path: Path) -> None:
    """The driver's own transaction handling is off; ours must still make a failed block leave no trace."""
    engine = make_engine(f"sqlite:///{tmp_path / 'tx.db'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError):
            _insert_then_fail(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    finally:
        engine.dispose()


def _insert_then_fail(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        raise RuntimeError


def _moments_table() -> Table:
    return Table("moments", MetaData(), Column("at", UTCDateTime, nullable=True))


def test_utc_datetime_returns_aware_utc_for_any_offset(engine: Engine) -> None:
    table = _moments_table()
    table.create(engine)
    plus_two = timezone(timedelta(hours=2))
    with engine.begin() as connection:
        connection.execute(
            insert(table), [{"at": datetime(2025, 3, 1, 14, 0, tzinfo=plus_two)}, {"at": None}]
        )
        read = connection.execute(select(table.c.at)).scalars().all()

    assert read[0] == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert read[0].utcoffset() == timedelta(0)
    assert read[1] is None


def test_utc_datetime_compares_in_time_order_across_offsets(engine: Engine) -> None:
    table = _moments_table()
    table.create(engine)
    early = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(insert(table), [{"at": early}, {"at": early + timedelta(microseconds=1)}])
        later_than = datetime(2025, 3, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5)))  # 12:00 UTC
        found = connection.execute(select(table.c.at).where(table.c.at > later_than)).scalars().all()

    assert found == [early + timedelta(microseconds=1)]


def test_utc_datetime_refuses_naive_datetimes(engine: Engine) -> None:
    table = _moments_table()
    table.create(engine)

    with pytest.raises(Exception, match="naive"), engine.begin() as connection:
        connection.execute(insert(table), [{"at": datetime(2025, 3, 1, 12, 0)}])
