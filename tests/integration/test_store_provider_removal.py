"""``store.delete_provider`` (both databases): what goes with a provider, what it refuses, and what a worker
still holding a lease on a removed connection finds."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.commits import flag_provider
from grantkeeper.adapters.db.deletions import delete_provider
from grantkeeper.adapters.db.engine import write_transaction
from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionState, NotificationType, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ProviderConfig, ProviderInUseError, UnknownProviderError, WorkflowStatus
from tests.fixtures.db import (
    LEASE_TTL,
    T0,
    attempt_commit,
    captured_sql,
    disconnect,
    explain,
    new_connection,
    new_provider,
    notice,
)


def test_a_provider_in_use_is_refused_unless_asked_and_nothing_changes(
    store: SqlStore, tenant_id: str, other_tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)

    with pytest.raises(ProviderInUseError) as refused:
        store.delete_provider(tenant_id, "google")
    assert refused.value.connections == 3
    assert len(store.list_connections(tenant_id)) == 3
    with pytest.raises(UnknownProviderError):
        store.delete_provider(tenant_id, "nope", with_connections=True)

    assert store.delete_provider(tenant_id, "google", with_connections=True) == 3
    assert store.list_connections(tenant_id) == []
    assert store.list_providers(tenant_id) == []
    assert [p.name for p in store.list_providers(other_tenant_id)] == ["google"]  # untouched
    assert store.delete_provider(other_tenant_id, "google") == 0  # no connections: nothing to ask


def test_a_lease_on_a_removed_connection_commits_nothing_and_its_history_goes(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection(f"u{i}", next_attempt_at=T0) for i in range(2)], T0)
    first, second = store.claim_due(T0, 2, "w", LEASE_TTL)
    tokens = TokenSet("at-2", "rt-2", expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=T0, next_attempt_at=T0 + timedelta(minutes=50))
    warned = attempt_commit(
        first, Outcome(OutcomeClass.AUTH, 400), ConnectionState(consecutive_failures=1),
        notifications=(notice(NotificationType.WARNING),),
    )  # fmt: skip
    assert store.commit_attempt(warned)
    assert store.list_notifications(tenant_id)

    assert store.delete_provider(tenant_id, "google", with_connections=True) == 2

    success = attempt_commit(second, Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens), state)
    assert store.commit_attempts([success]) == [False]  # fenced off: no row, nothing written
    assert store.commit_attempt(success) is False
    assert store.attempts_for(first.connection_id) == []
    assert store.list_connections(tenant_id) == []
    [notification] = store.list_notifications(tenant_id)  # the tenant's history, as a connection's delete
    assert notification.connection_id is None
    assert notification.type is NotificationType.WARNING


def test_workflows_only_the_removed_connections_kept_paused_resume_with_one_event_each(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.add_provider(tenant_id, new_provider("slack"))
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://hooks.example.test/gk", T0, secret="whsec_x"
    )
    lines = [
        new_connection("u1", workflows=("alone", "shared")),
        new_connection("u2", workflows=("alone",)),
        new_connection("u3", provider="slack", workflows=("shared",)),
    ]
    first, second, other = store.import_connections(tenant_id, lines, T0)
    for connection_id in (first, second, other):
        disconnect(store, tenant_id, connection_id)
    assert {w.status for w in store.list_workflows(tenant_id)} == {WorkflowStatus.PAUSED}
    later = datetime.now(UTC)
    assert store.delete_provider(tenant_id, "google", with_connections=True) == 2

    by_name = {w.name: w for w in store.list_workflows(tenant_id)}
    assert by_name["alone"].status is WorkflowStatus.ACTIVE
    assert by_name["alone"].connection_ids == ()
    assert by_name["shared"].status is WorkflowStatus.PAUSED  # slack's connection still needs reconnecting
    assert by_name["shared"].connection_ids == (other,)
    events = store.claim_outbox(later + timedelta(minutes=1), 100, "d", LEASE_TTL)
    resumed = [e.payload["data"] for e in events if e.event == "workflow.resumed"]
    assert [(data["name"], data["connection_id"]) for data in resumed] == [("alone", min(first, second))]


def _wait_until_blocked(store: SqlStore) -> None:
    """Until another session of the test's database waits for a lock (PostgreSQL); SQLite's removal waits
    for the write lock in its busy handler, which no view shows, so there a pause stands in."""
    if store.engine.dialect.name == "sqlite":
        time.sleep(0.5)
        return
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 20
    with store.engine.connect() as watcher:
        while not watcher.execute(waiting).scalar():
            assert time.monotonic() < deadline, "the removal never waited for the commit's lock"
            time.sleep(0.02)
            watcher.rollback()


def test_a_removal_waits_for_a_commit_that_flags_the_provider_instead_of_deadlocking(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """An attempt's commit locks its connection, then flags the provider. The removal takes the provider's
    connections first and the provider after, the same order, so it waits for the commit and then runs; in
    the opposite order PostgreSQL found a deadlock and aborted one of the two."""
    ids = sorted(store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0))
    removed: list[int] = []
    failures: list[BaseException] = []

    def remove() -> None:
        try:
            removed.append(store.delete_provider(tenant_id, "google", with_connections=True))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    removal = threading.Thread(target=remove)
    with write_transaction(store.engine) as commit:  # the SQL of an attempt's commit, held open
        commit.execute(update(connections).where(connections.c.id == ids[1]).values(updated_at=T0))
        removal.start()
        _wait_until_blocked(store)
        assert flag_provider(commit, provider.provider_id, "invalid_client: revoked secret", T0)
    removal.join(timeout=60)

    assert not failures, failures
    assert removed == [3]
    assert store.list_providers(tenant_id) == []


def test_a_removal_locks_a_large_provider_batch_by_batch(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """The ids are read ``lock_batch`` at a time (a million connections must not be one list in memory);
    batches that end exactly on the last row and one that ends short both lock and remove everything."""
    store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(7)], T0)
    other = store.add_provider(tenant_id, new_provider("github"))
    store.import_connections(tenant_id, [new_connection("keep", provider="github")], T0)
    with captured_sql(store.engine) as sent, write_transaction(store.engine) as connection:
        removed = delete_provider(connection, tenant_id, "google", with_connections=True, at=T0, lock_batch=3)
    assert removed == 7
    locks = [statement for statement, _ in sent if "FOR UPDATE" in statement and "LIMIT" in statement]
    assert len(locks) == (3 if store.engine.dialect.name == "postgresql" else 0)  # 3 + 3 + 1; SQLite: none
    assert [c.user_id for c in store.list_connections(tenant_id)] == ["keep"]
    assert [p.name for p in store.list_providers(tenant_id)] == [other.name]


def test_a_removal_finds_the_providers_connections_through_an_index_not_a_table_scan(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """Each statement that picks the provider's connections (the count, the workflow links, the delete) is
    served by ``ix_connections_tenant_provider_page``: removing one provider of a million-row table must not
    read the table three times. PostgreSQL has sequential scans priced out (``explain``): a plan that still
    scans the table has no index it could use."""
    store.add_provider(tenant_id, new_provider("github"))
    store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(5)], T0)
    store.import_connections(tenant_id, [new_connection(f"g{i}", provider="github") for i in range(5)], T0)
    with store.engine.connect() as connection:  # statistics, as a live table has them
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    with captured_sql(store.engine) as sent:
        assert store.delete_provider(tenant_id, "google", with_connections=True) == 5
    picking = [
        (statement, parameters)
        for statement, parameters in sent
        if "provider_id" in statement and "connections" in statement and "LIMIT" not in statement
    ]
    assert len(picking) >= 3, [statement for statement, _ in sent]  # count, links, delete
    for statement, parameters in picking:
        plan = explain(store.engine, statement, parameters)
        if store.engine.dialect.name == "sqlite":
            assert "SCAN connections" not in plan, (statement, plan)
            assert "ix_connections_tenant_provider_page" in plan, (statement, plan)
        else:
            assert "Seq Scan on connections" not in plan, (statement, plan)
            conditions = [line for line in plan.splitlines() if "Index Cond" in line]
            assert any("provider_id" in line for line in conditions), (statement, plan)
    assert len(store.list_connections(tenant_id)) == 5
