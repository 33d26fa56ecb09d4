"""A row written by someone else while a claim is running: never taken twice, never lost (ADR 17).

The claim picks its rows and updates them in one statement. On PostgreSQL the pick locks each row ``FOR
UPDATE SKIP LOCKED``; a row changed and committed by another transaction after the statement's snapshot is
then locked in its newest version and checked again against the claim's conditions. ADR 17 updates the
picked rows by address (``ctid``), and the newest version's address is invisible to the statement's
snapshot: such a row, still due, is neither updated nor returned, and the next claim takes it. A row another
worker claimed meanwhile fails the recheck and is skipped. On SQLite a claim holds the database's one write
lock, so the other writer waits for the claim and lands after it.

The window is a few microseconds wide in real traffic, so these tests hold the claim open in the middle of
its statement and commit the other write right there:
- PostgreSQL: the claim runs as a role under a row-level security policy whose function waits for an
  advisory lock the test holds when it reads the first due row, after the statement's snapshot and before
  any row is locked;
- SQLite: a progress handler on the claim's connection waits for the test while the statement runs.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, text

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.ports import ClaimedConnection, ProviderConfig
from tests.fixtures.db import LEASE_TTL, T0, new_connection, render

_PAUSE_LOCK = 4242  # the advisory lock the policy's function waits for
_WAIT_SECONDS = 10


def _due_rows(store: SqlStore, tenant_id: str) -> list[str]:
    """Three due connections, due an hour apart, so every claim meets them in the same order."""
    rows = [new_connection(f"u{i}", next_attempt_at=T0 - timedelta(hours=3 - i)) for i in range(3)]
    return list(store.import_connections(tenant_id, rows, T0))


def _leases(engine: Engine, ids: list[str]) -> dict[str, tuple[str | None, int, str | None]]:
    """Each row's lease owner, version and email, by id."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, lease_owner, version, email FROM connections"))
        return {row.id: (row.lease_owner, row.version, row.email) for row in rows if row.id in ids}


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


# --- holding a claim open mid-statement ------------------------------------------------------------------


@contextmanager
def _postgresql_pause(store: SqlStore, keyring: Keyring, first_id: str) -> Iterator[tuple[SqlStore, Any]]:
    """A store whose claims wait, on reading ``first_id``, until the yielded ``resume()`` is called.

    Row-level security does not apply to superusers or to a table's owner, so the paused store logs in as a
    role made for the test. Reading the row is the pick's scan: after the statement's snapshot, before its
    row locks (the scan's filter runs below the ``LockRows`` step)."""
    role = f"gk_claim_race_{secrets.token_hex(4)}"
    admin = store.engine
    holder = admin.connect()
    paused_engine: Engine | None = None
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            connection.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            connection.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
            connection.exec_driver_sql(
                "CREATE FUNCTION gk_claim_race_pause(row_id text) RETURNS boolean LANGUAGE plpgsql AS $$ "
                f"BEGIN IF row_id = '{first_id}' THEN PERFORM pg_advisory_xact_lock_shared({_PAUSE_LOCK}); "
                "END IF; RETURN true; END $$"
            )
            connection.exec_driver_sql("ALTER TABLE connections ENABLE ROW LEVEL SECURITY")
            connection.exec_driver_sql(
                f"CREATE POLICY gk_claim_race ON connections TO {role} USING (gk_claim_race_pause(id))"
            )
        holder.exec_driver_sql(f"SELECT pg_advisory_lock({_PAUSE_LOCK})")
        holder.commit()
        paused_engine = make_engine(render(admin.url.set(username=role)))
        resumed = False

        def resume() -> None:  # once: the test resumes, and the way out makes sure
            nonlocal resumed
            if not resumed:
                resumed = True
                holder.exec_driver_sql(f"SELECT pg_advisory_unlock({_PAUSE_LOCK})")
                holder.commit()

        yield SqlStore(paused_engine, keyring), resume
    finally:
        holder.close()
        if paused_engine is not None:
            paused_engine.dispose()
        with admin.begin() as connection:
            connection.exec_driver_sql("DROP POLICY IF EXISTS gk_claim_race ON connections")
            connection.exec_driver_sql("ALTER TABLE connections DISABLE ROW LEVEL SECURITY")
            connection.exec_driver_sql(f"DROP OWNED BY {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")


def _postgresql_claim_is_waiting(admin: Engine) -> bool:
    with admin.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = :key AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"key": _PAUSE_LOCK},
        )
        return bool(waiting.scalar())


@contextmanager
def _sqlite_pause(store: SqlStore, keyring: Keyring) -> Iterator[tuple[SqlStore, threading.Event, Any]]:
    """A store whose next statement waits, once armed, until the yielded ``resume()`` is called; the
    yielded event is set while it waits."""
    paused_engine = make_engine(render(store.engine.url))
    armed, waiting, go = threading.Event(), threading.Event(), threading.Event()

    def progress() -> int:
        if armed.is_set():
            armed.clear()
            waiting.set()
            go.wait(_WAIT_SECONDS)
        return 0  # 0: go on with the statement

    @event.listens_for(paused_engine, "connect")
    def _install(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_progress_handler(progress, 50)

    paused_store = SqlStore(paused_engine, keyring)
    try:
        armed.set()
        yield paused_store, waiting, go.set
    finally:
        go.set()
        paused_engine.dispose()


@contextmanager
def _claim_held_open(
    store: SqlStore, keyring: Keyring, first_id: str
) -> Iterator[tuple[Future[list[ClaimedConnection]], Callable[[], None]]]:
    """Start a claim by worker ``w-paused`` (up to 10 rows due at T0) and hold it mid-statement; yields its
    future and the function that lets it finish."""
    with ThreadPoolExecutor(1) as pool:
        if store.engine.dialect.name == "postgresql":
            with _postgresql_pause(store, keyring, first_id) as (paused, resume):
                claim = pool.submit(paused.claim_due, T0, 10, "w-paused", LEASE_TTL)
                _wait_for(lambda: _postgresql_claim_is_waiting(store.engine), "the claim to reach the row")
                yield claim, resume
                resume()
                claim.result(_WAIT_SECONDS)
        else:
            with _sqlite_pause(store, keyring) as (paused, waiting, resume):
                claim = pool.submit(paused.claim_due, T0, 10, "w-paused", LEASE_TTL)
                _wait_for(waiting.is_set, "the claim's statement to start")
                yield claim, resume
                resume()
                claim.result(_WAIT_SECONDS)


# --- the tests ---------------------------------------------------------------------------------------------


def test_a_row_another_worker_claims_meanwhile_is_not_taken_twice(
    store: SqlStore, keyring: Keyring, tenant_id: str, provider: ProviderConfig
) -> None:
    """Another worker claims the same due rows while a claim is held open in the middle of its statement:
    each row ends with exactly one of the two claims, and each claim's rows carry its own lease."""
    ids = _due_rows(store, tenant_id)
    with ThreadPoolExecutor(1) as other, _claim_held_open(store, keyring, ids[0]) as (paused, resume):
        rival = other.submit(store.claim_due, T0, 10, "w-rival", LEASE_TTL)
        if store.engine.dialect.name == "postgresql":
            rival_claims = rival.result(_WAIT_SECONDS)  # it did not wait: the paused claim locked nothing yet
        else:
            time.sleep(0.3)
            assert not rival.done()  # SQLite: one writer at a time, the rival waits for the paused claim
        resume()
        paused_claims = paused.result(_WAIT_SECONDS)
        rival_claims = rival.result(_WAIT_SECONDS)

    paused_ids = {claim.connection_id for claim in paused_claims}
    rival_ids = {claim.connection_id for claim in rival_claims}
    assert not paused_ids & rival_ids
    assert paused_ids | rival_ids == set(ids)
    if store.engine.dialect.name == "postgresql":  # the rival committed first, and took all three
        assert rival_ids == set(ids)
    else:  # the paused claim holds the write lock, and took all three
        assert paused_ids == set(ids)
    stored = _leases(store.engine, ids)
    for claim in [*paused_claims, *rival_claims]:
        assert stored[claim.connection_id][:2] == (claim.lease_owner, claim.version)


def test_a_row_changed_meanwhile_and_still_due_is_left_for_the_next_claim(
    store: SqlStore, keyring: Keyring, tenant_id: str, provider: ProviderConfig
) -> None:
    """Someone else changes a due row (its email here) and commits while a claim is held open: on
    PostgreSQL the claim leaves that row alone, unleased and with the new email, and the next claim takes
    it; on SQLite the change waits for the claim and lands on the claimed row. Either way no row is lost and
    none is taken twice."""
    ids = _due_rows(store, tenant_id)
    changed = ids[1]
    is_postgresql = store.engine.dialect.name == "postgresql"

    def change() -> None:
        with store.engine.begin() as connection:
            connection.execute(
                text("UPDATE connections SET email = 'changed@example.test' WHERE id = :id"), {"id": changed}
            )

    with ThreadPoolExecutor(1) as other, _claim_held_open(store, keyring, ids[0]) as (paused, resume):
        writer = other.submit(change)
        if is_postgresql:
            writer.result(_WAIT_SECONDS)  # committed while the claim waits mid-statement
        else:
            time.sleep(0.3)
            assert not writer.done()  # waits for the claim's write lock
        resume()
        first = paused.result(_WAIT_SECONDS)
        writer.result(_WAIT_SECONDS)

    first_ids = {claim.connection_id for claim in first}
    stored = _leases(store.engine, ids)
    assert stored[changed][2] == "changed@example.test"
    if is_postgresql:
        assert first_ids == {ids[0], ids[2]}
        assert stored[changed][0] is None  # locked in its newest version, not updated: free
        second = store.claim_due(T0, 10, "w-next", LEASE_TTL)
        assert [claim.connection_id for claim in second] == [changed]
        assert second[0].email == "changed@example.test"
    else:
        assert first_ids == set(ids)
        assert store.claim_due(T0, 10, "w-next", LEASE_TTL) == []
    for claim in first:
        assert stored[claim.connection_id][:2] == (claim.lease_owner, claim.version)
