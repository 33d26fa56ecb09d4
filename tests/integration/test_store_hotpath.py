"""The raw-SQL refresh path (``adapters/db/hotpath.py``) reads and writes exactly what the SQLAlchemy Core
path does, on both databases: states round-trip, instants keep their stored format, nothing is lost; and on
SQLite, where it talks to the driver itself, its errors are still the store's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, hotpath, make_engine
from grantkeeper.adapters.db.engine import watch_statements
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    ErrorInfo,
    Outcome,
    OutcomeClass,
    TokenSet,
)
from grantkeeper.ports import ClaimedConnection, ProviderConfig, StoreUnavailableError
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection

RICH = ConnectionState(
    consecutive_failures=1,
    consecutive_transient_failures=4,
    last_refreshed_at=T0 - timedelta(days=1, microseconds=7),
    last_failure_at=T0 - timedelta(minutes=3),
    failing_since=T0 - timedelta(hours=2),
    last_error=ErrorInfo("http_503", "HTTP 503"),
    expires_at=T0 + timedelta(minutes=1),
    next_attempt_at=T0,
    warning_sent=True,
    rate_limit_notice_sent=True,
    in_flight_since=T0 - timedelta(seconds=40),
)


def test_a_state_written_by_the_hot_path_reads_back_the_same_through_core_and_through_a_claim(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    (connection_id,) = store.import_connections(tenant_id, [new_connection("u1", next_attempt_at=T0)], T0)
    claim = store.claim_due(T0, 1, "w1", LEASE_TTL)[0]
    outcome = Outcome(OutcomeClass.TRANSIENT, 503, ErrorInfo("http_503", "HTTP 503"))
    assert store.commit_attempts([attempt_commit(claim, outcome, RICH)]) == [True]  # the raw executemany

    record = store.get_connection(tenant_id, connection_id)  # Core
    assert record is not None
    assert record.state == RICH
    (again,) = store.claim_due(T0, 1, "w2", LEASE_TTL)  # raw claim
    assert again.state == RICH
    # the claim and its state are built without their __init__ (hotpath.built): every field, nothing else
    assert vars(again).keys() == {field.name for field in fields(ClaimedConnection)}
    assert vars(again.state).keys() == {field.name for field in fields(ConnectionState)}
    instants = [value for value in vars(again.state).values() if isinstance(value, datetime)]
    assert instants
    assert all(value.tzinfo is UTC for value in instants)  # PostgreSQL's session is in UTC
    assert again.lease_expires_at.tzinfo is UTC
    assert again.version == claim.version + 2  # the commit and this claim
    (attempt,) = store.attempts_for(connection_id)
    assert (attempt.attempted_at, attempt.outcome, attempt.http_status) == (T0, OutcomeClass.TRANSIENT, 503)


def test_disconnected_states_and_tokens_survive_the_hot_path(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    (connection_id,) = store.import_connections(tenant_id, [new_connection("u1", next_attempt_at=T0)], T0)
    claim = store.claim_due(T0, 1, "w1", LEASE_TTL)[0]
    tokens = TokenSet("at-new", "rt-new", expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0)
    store.commit_attempts([attempt_commit(claim, Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens), state)])
    stored = store.read_tokens(tenant_id, connection_id)
    assert stored is not None
    assert (stored.refresh_token, stored.access_token) == ("rt-new", "at-new")

    claim = store.claim_due(T0, 1, "w2", LEASE_TTL)[0]
    gone = ConnectionState(
        status=ConnectionStatus.NEEDS_REAUTHORIZATION,
        disconnect_reason=DisconnectReason.LOST_ROTATION,
        last_error=ErrorInfo("invalid_grant", ""),
    )
    store.commit_attempts([attempt_commit(claim, Outcome(OutcomeClass.AUTH, 400), gone)])
    record = store.get_connection(tenant_id, connection_id)
    assert record is not None
    assert record.state == gone


def test_instants_keep_one_stored_format_whichever_path_wrote_them(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(
        tenant_id, [new_connection(f"u{i}", next_attempt_at=T0) for i in range(2)], T0
    )  # Core writes both
    claim = store.claim_due(T0, 1, "w1", LEASE_TTL)[0]
    store.commit_attempts([attempt_commit(claim, Outcome(OutcomeClass.TRANSIENT, 503), RICH)])  # raw
    with store.engine.connect() as connection:
        query = text("SELECT id, next_attempt_at FROM connections ORDER BY next_attempt_at, id")
        stored = dict(connection.execute(query).all())
    assert set(stored) == set(ids)
    if store.engine.dialect.name == "sqlite":  # text: both rows in SQLAlchemy's fixed-width format
        assert {value for value in stored.values()} == {"2025-03-01 12:00:00.000000"}


def test_instants_are_read_in_the_utc_singleton_whatever_the_server_zone(store: SqlStore) -> None:
    """The hot path skips converting instants already in ``UTC``: PostgreSQL's session is set to UTC
    (``engine._configure_postgresql_connection``), and a session in another zone is still read right."""
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    with store.engine.connect() as connection:
        hot = hotpath.for_connection(connection)
        if store.engine.dialect.name == "sqlite":  # stored as UTC text without an offset
            stored = [hot.time_in(midnight)]
        else:
            assert connection.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"
            select_midnight = "SELECT timestamptz '2026-01-01 00:00:00+00'"
            stored = [connection.exec_driver_sql(select_midnight).scalar()]
            connection.exec_driver_sql("SET TIME ZONE 'Asia/Kolkata'")  # as a server's default could be
            stored.append(connection.exec_driver_sql(select_midnight).scalar())
            assert stored[1].tzinfo is not UTC
        for value in stored:
            read = hot.time_out(value)
            assert read == midnight
            assert read is not None
            assert read.tzinfo is UTC


def test_on_sqlite_the_driver_s_errors_are_the_store_s_and_name_no_parameter(tmp_path: Path) -> None:
    """On SQLite the refresh path talks to ``sqlite3`` itself (``engine.on_sqlite``), past SQLAlchemy's
    error handling: a database locked by another writer must still be ``StoreUnavailableError`` (the worker
    waits and retries) and a refused statement SQLAlchemy's error, neither with a bound value in its text."""
    engine = make_engine(f"sqlite:///{tmp_path / 'locked.db'}")
    event.listen(engine, "connect", lambda driver, _record: driver.execute("PRAGMA busy_timeout=50"))
    store = SqlStore(engine, Keyring.parse(generate_key_line("test")))
    rival = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    try:
        rival.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
        with pytest.raises(StoreUnavailableError, match="locked"):
            store.commit_and_start([], [], T0, LEASE_TTL)
        rival.execute("ROLLBACK")

        secret = "refresh-token-that-must-not-show"
        with engine.connect() as connection:
            hot = hotpath.for_connection(connection)
            with pytest.raises(OperationalError) as refused:
                hot.changed(connection, "UPDATE no_such_table SET x = :x", [{"x": secret}])
        assert "no_such_table" in str(refused.value)
        assert secret not in str(refused.value)
        assert store.commit_and_start([], [], T0, LEASE_TTL)[0] == []  # and the store goes on
    finally:
        rival.close()
        engine.dispose()


def test_a_statement_watcher_hears_each_driver_statement_before_and_after_it_runs(tmp_path: Path) -> None:
    """What ``engine.watch_statements`` promises the tests and benchmarks that time or capture the refresh
    path's SQLite statements (which SQLAlchemy's cursor events never see): the watcher before each statement,
    what it returned after it, failed statements included, and nothing once the watch ends."""
    engine = make_engine(f"sqlite:///{tmp_path / 'watched.db'}")
    heard: list[tuple[str, str]] = []

    def watcher(sql: str, _parameters: object) -> Callable[[], None] | None:
        heard.append(("before", sql))
        if "no_such_table" in sql:
            return lambda: heard.append(("after", sql))
        return None  # nothing to hear afterwards

    try:
        with watch_statements(engine, watcher), engine.connect() as connection:
            hot = hotpath.for_connection(connection)
            hot.run(connection, "SAVEPOINT watched")
            with pytest.raises(OperationalError):
                hot.changed(connection, "UPDATE no_such_table SET x = :x", [{"x": 1}])
        with engine.connect() as connection:
            hotpath.for_connection(connection).run(connection, "SAVEPOINT unwatched")
    finally:
        engine.dispose()
    failing = "UPDATE no_such_table SET x = :x"
    assert heard == [("before", "SAVEPOINT watched"), ("before", failing), ("after", failing)]
