"""Engines for SQLite (the embedded default) and PostgreSQL (many workers), configured for a work queue.

PostgreSQL: the session's time zone is UTC (see ``_configure_postgresql_connection``).
SQLite: WAL so readers never wait for the writer, a busy timeout so writers queue instead of failing, foreign
keys on, ``synchronous=NORMAL`` (durable in WAL mode except on power loss). The sqlite3 driver's own
transaction handling is switched off and we emit BEGIN ourselves: write transactions use ``BEGIN IMMEDIATE``
so they take the write lock before their first read, which makes read-then-write (claiming, fenced commits)
serialisable and avoids the deadlock-prone lock upgrade of a deferred transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

__all__ = [
    "StatementWatcher",
    "commit_without_waiting_for_disk",
    "make_engine",
    "migration_transaction",
    "normalise_url",
    "on_sqlite",
    "ping",
    "plan_on_indexes",
    "read_transaction",
    "watch_statements",
    "write_transaction",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "grantkeeper_write"
_PING = text("SELECT 1")
_R = TypeVar("_R")
#: A watcher is called with each statement and its parameters before the statement is sent; what it returns,
#: if not None, is called once the statement has run (or failed): how a benchmark times one.
StatementWatcher = Callable[[str, Any], Callable[[], None] | None]
#: Who watches the statements ``on_sqlite`` sends, by engine. Those bypass SQLAlchemy's
#: ``before_cursor_execute`` event, so whatever checks what the store really sends (the tests, the
#: benchmarks) registers here as well; a service registers nothing, and the hot path then pays one test of an
#: empty dict.
_STATEMENT_WATCHERS: dict[Engine, list[StatementWatcher]] = {}


def normalise_url(url: str | URL) -> URL:
    """Accept a URL as a user writes it: ``postgresql://`` or ``postgres://`` get the psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, **engine_options: Any) -> Engine:
    """An engine for ``sqlite:///path.db`` (or ``sqlite://`` in memory) or ``postgresql://...``.

    ``hide_parameters`` keeps bound values (ciphertexts, user ids, emails) out of SQLAlchemy's error messages
    and logs; the SQL text alone is enough to debug a failing statement.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, engine_options)
    options: dict[str, Any] = {
        "hide_parameters": True,
        "pool_pre_ping": True,
        "pool_size": 5,
        "max_overflow": 10,
        "pool_recycle": 1800,
        # an unreachable server fails a probe or a command in seconds, not after the OS's TCP timeout;
        # a connect_timeout in the URL wins
        "connect_args": {"connect_timeout": 10},
    }
    engine = create_engine(parsed, **(options | engine_options))
    event.listen(engine, "connect", _configure_postgresql_connection)
    return engine


def _configure_postgresql_connection(dbapi_connection: Any, _record: Any) -> None:
    """Every stored instant is a ``timestamptz`` and read back in UTC; with the session in UTC psycopg hands
    them out in the ``UTC`` singleton, so the hot path need not convert six instants per claimed row (0.8 µs
    each from a server zone such as ``Etc/UTC``). Nothing renders instants as text in the session's zone."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # a SET inside the pool's first transaction would be rolled back
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET TIME ZONE 'UTC'")
    finally:
        cursor.close()
        dbapi_connection.autocommit = autocommit


def _sqlite_engine(url: URL, engine_options: dict[str, Any]) -> Engine:
    is_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"hide_parameters": True, "connect_args": {"check_same_thread": False}}
    if is_memory:
        options["poolclass"] = StaticPool  # one shared connection, or every checkout sees an empty database
    engine = create_engine(url, **(options | engine_options))
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver stops emitting BEGIN; _begin_sqlite_transaction does
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # temporary files in memory: a refresh tick's transaction changes more pages inside its savepoint than
        # SQLite keeps in memory for the savepoint's journal (64 KiB), so with the default each tick created,
        # wrote and deleted a file in /var/tmp: about a third of the worker's pwrite calls, 4 % of a refresh.
        # The sorter then keeps whole sorts in memory too: migrations put files back (migration_transaction)
        cursor.execute("PRAGMA temp_store=MEMORY")
        # checkpoint the WAL every 10,000 pages instead of 1,000: a claim of 1,000 rows dirties about 1,000
        # pages, so the default made nearly every claim pay a checkpoint (25 ms at a million rows); the WAL
        # grows to about 40 MB instead of 4
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """Switch to WAL once per database file (the mode is stored in the file).

    The switch needs an exclusive lock and SQLite does not wait for it through the busy handler, so several
    processes opening a brand-new database at once would fail with "database is locked": retry instead.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _begin_sqlite_transaction(connection: Connection) -> None:
    is_write = connection.get_execution_options().get(_WRITE_OPTION, False)
    statement = "BEGIN IMMEDIATE" if is_write else "BEGIN"
    on_sqlite(connection, statement, None, lambda driver: driver.execute(statement))


def on_sqlite(
    connection: Connection, sql: str, parameters: Any, call: Callable[[sqlite3.Connection], _R]
) -> _R:
    """Run ``call`` (which sends ``sql`` with ``parameters``) on the ``sqlite3`` connection under
    ``connection``, inside its transaction, with the driver's errors raised as SQLAlchemy's, as
    ``exec_driver_sql`` would: the store's callers tell a locked or unreadable database
    (``OperationalError``) from a bug by those. Parameters never reach the message."""
    if _STATEMENT_WATCHERS and connection.engine in _STATEMENT_WATCHERS:
        return _watched(connection, sql, parameters, call)
    return _on_driver(connection, sql, call)


def _on_driver(connection: Connection, sql: str, call: Callable[[sqlite3.Connection], _R]) -> _R:
    try:
        return call(cast(sqlite3.Connection, connection.connection.driver_connection))
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error, hide_parameters=True) from exc


def _watched(
    connection: Connection, sql: str, parameters: Any, call: Callable[[sqlite3.Connection], _R]
) -> _R:
    """``on_sqlite`` with its engine's watchers told before and after the statement."""
    afters = [watcher(sql, parameters) for watcher in list(_STATEMENT_WATCHERS[connection.engine])]
    try:
        return _on_driver(connection, sql, call)
    finally:
        for after in afters:
            if after is not None:
                after()


@contextmanager
def watch_statements(engine: Engine, watcher: StatementWatcher) -> Iterator[None]:
    """Call ``watcher(sql, parameters)`` for each statement ``on_sqlite`` sends through ``engine`` while
    inside, and what it returns after the statement; with SQLAlchemy's ``before_cursor_execute`` it sees
    every statement the store sends."""
    _STATEMENT_WATCHERS.setdefault(engine, []).append(watcher)
    try:
        yield
    finally:
        watchers = _STATEMENT_WATCHERS[engine]
        watchers.remove(watcher)
        if not watchers:
            del _STATEMENT_WATCHERS[engine]


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: on SQLite it holds the write lock from its first statement."""
    with engine.connect() as connection:
        connection.execution_options(**{_WRITE_OPTION: True})
        with connection.begin():
            yield connection


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A ``write_transaction`` for schema changes: on SQLite its temporary files go to disk.

    Every SQLite connection keeps temporary files in memory (``_configure_sqlite_connection``), which spares
    the refresh path a file per tick; but SQLite's sorter then holds a whole sort in memory, and a
    migration that builds an index sorts the table: creating one over a million rows peaked at 140 MB
    instead of 20 (``bench/sqlite_sort_memory.py``). The setting cannot change inside a transaction, so it
    is set on the driver's connection before the transaction and restored after it, before the pool takes
    it back."""
    with engine.connect() as connection:
        driver = connection.connection.dbapi_connection if connection.dialect.name == "sqlite" else None
        if driver is not None:
            driver.execute("PRAGMA temp_store=FILE")
        try:
            connection.execution_options(**{_WRITE_OPTION: True})
            with connection.begin():
                yield connection
        finally:
            if driver is not None:
                driver.execute("PRAGMA temp_store=MEMORY")


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: one consistent snapshot; on SQLite it never waits for the writer."""
    with engine.begin() as connection:
        yield connection


def commit_without_waiting_for_disk(connection: Connection) -> None:
    """Let this transaction's commit return before its WAL is flushed (PostgreSQL; ADR 18).

    Only for a transaction nothing outside the database acts on until a later, synchronous one commits: a
    crash may then undo it, as if it had been rolled back, but the later commit flushes the WAL up to its
    own record, so it can never survive without this one. SQLite needs nothing: in WAL mode with
    ``synchronous=NORMAL`` no commit waits for the disk.
    """
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")


_INDEX_PLANS_ONLY = (
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)"
)


def plan_on_indexes(connection: Connection) -> None:
    """Plan the rest of this transaction's statements without sequential or bitmap scans (PostgreSQL;
    ADR 20); SQLite's claim names its index (``INDEXED BY``) instead.

    For the claim, whose reads are all meant to walk an index in order (the due queue, the rows in flight,
    primary keys) and which PostgreSQL's estimates led astray twice:
    - on a table imported in bulk and not analysed yet, the read of the rows in flight (a partial index of a
      few dozen live entries) was planned as a scan of the whole table: 8 ms at 30,000 rows, linear in them;
    - with statistics, it was sometimes planned as a bitmap scan, which visits the heap for every entry the
      index still holds, dead ones included (each refresh leaves one until a vacuum), and unlike a plain
      index scan never marks them dead for the next reader: 2.5 ms after 30,000 refreshes and growing,
      against 0.03 ms for the index scan.
    ``SET LOCAL`` semantics (``set_config(..., true)``): gone with the transaction, pooled connections keep
    the server's defaults."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_INDEX_PLANS_ONLY)


def ping(engine: Engine) -> None:
    """One trivial round trip: raises (SQLAlchemy's ``OperationalError``) when the database is unreachable."""
    with read_transaction(engine) as connection:
        connection.execute(_PING)
