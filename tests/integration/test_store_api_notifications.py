"""The store for the HTTP API, part 4: notifications filtered and marked read (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import notifications
from grantkeeper.core.model import ConnectionState, Outcome
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from grantkeeper.ports import NotificationRecord, ProviderConfig
from tests.fixtures.db import (
    LEASE_TTL,
    T0,
    attempt_commit,
    captured_sql,
    disconnect,
    explain,
    new_connection,
    notice,
)


def _notify(store: SqlStore, tenant_id: str, minute: int, *kinds: Kind) -> None:
    """One attempt, ``minute`` minutes after T0, that leaves the given notifications (a connection each)."""
    at = T0 + timedelta(minutes=minute)
    [connection_id] = store.import_connections(tenant_id, [new_connection(f"u{minute}")], at)
    [claim] = store.claim_ids(tenant_id, [connection_id], at, "worker", LEASE_TTL)
    commit = attempt_commit(
        claim,
        Outcome(Klass.TRANSIENT, http_status=429),
        ConnectionState(next_attempt_at=at + timedelta(minutes=5)),
        notifications=tuple(notice(kind) for kind in kinds),
        attempted_at=at,
    )
    assert store.commit_attempt(commit)


@pytest.fixture
def inbox(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> list[NotificationRecord]:
    """Six notifications a minute apart, newest first: warning, rate limit, warning, recovered, ..."""
    kinds = [Kind.WARNING, Kind.RATE_LIMIT, Kind.WARNING, Kind.RECOVERED, Kind.RATE_LIMIT, Kind.WARNING]
    for minute, kind in enumerate(kinds):
        _notify(store, tenant_id, minute, kind)
    listed = store.list_notifications(tenant_id)
    assert [n.type for n in listed] == kinds[::-1]
    return listed


def test_notifications_are_listed_newest_first_with_a_positional_limit(
    store: SqlStore, tenant_id: str, inbox: list[NotificationRecord]
) -> None:
    assert store.list_notifications(tenant_id, 2) == inbox[:2]
    assert [n.created_at for n in inbox] == sorted((n.created_at for n in inbox), reverse=True)


def test_notifications_filtered_by_type(
    store: SqlStore, tenant_id: str, inbox: list[NotificationRecord]
) -> None:
    warnings = store.list_notifications(tenant_id, type=Kind.WARNING)

    assert warnings == [n for n in inbox if n.type is Kind.WARNING]
    assert store.list_notifications(tenant_id, 1, type=Kind.WARNING) == warnings[:1]
    assert store.list_notifications(tenant_id, type=Kind.DISCONNECTED) == []


def test_unread_only_leaves_out_what_was_marked_read(
    store: SqlStore, tenant_id: str, inbox: list[NotificationRecord]
) -> None:
    assert store.mark_notification_read(tenant_id, inbox[0].notification_id)
    assert store.mark_notification_read(tenant_id, inbox[3].notification_id)

    unread = store.list_notifications(tenant_id, unread_only=True)

    assert [n.notification_id for n in unread] == [
        n.notification_id for n in inbox if n not in (inbox[0], inbox[3])
    ]
    assert all(not n.is_read for n in unread)
    everything = store.list_notifications(tenant_id)
    assert [n.is_read for n in everything] == [True, False, False, True, False, False]


def test_type_and_unread_filters_combine(
    store: SqlStore, tenant_id: str, inbox: list[NotificationRecord]
) -> None:
    newest_warning = inbox[0]
    assert newest_warning.type is Kind.WARNING
    store.mark_notification_read(tenant_id, newest_warning.notification_id)

    unread_warnings = store.list_notifications(tenant_id, type=Kind.WARNING, unread_only=True)

    assert unread_warnings == [n for n in inbox[1:] if n.type is Kind.WARNING]


def test_mark_notification_read_is_idempotent(
    store: SqlStore, tenant_id: str, inbox: list[NotificationRecord]
) -> None:
    target = inbox[2].notification_id

    assert store.mark_notification_read(tenant_id, target)
    assert store.mark_notification_read(tenant_id, target)

    assert [n.notification_id for n in store.list_notifications(tenant_id) if n.is_read] == [target]


def test_mark_notification_read_of_an_unknown_id_returns_false(store: SqlStore, tenant_id: str) -> None:
    assert not store.mark_notification_read(tenant_id, "ntf_00000000000000000000")


def test_notifications_of_another_tenant_are_neither_listed_nor_marked(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    [theirs_connection] = store.import_connections(other_tenant_id, [new_connection()], T0)
    disconnect(store, other_tenant_id, theirs_connection, notifications=(notice(Kind.DISCONNECTED),))
    [theirs] = store.list_notifications(other_tenant_id)

    assert store.list_notifications(tenant_id) == []
    assert store.list_notifications(tenant_id, type=Kind.DISCONNECTED, unread_only=True) == []
    assert not store.mark_notification_read(tenant_id, theirs.notification_id)
    assert not store.list_notifications(other_tenant_id)[0].is_read


def _add_read_history(store: SqlStore, tenant_id: str, count: int) -> None:
    """Many old, read notifications (a tenant's table after months), written directly for speed."""
    rows = [
        {
            "id": f"ntf_hist{i:016d}",
            "tenant_id": tenant_id,
            "connection_id": None,
            "user_id": f"u{i}",
            "type": Kind.RECOVERED.value,
            "title": "recovered",
            "message": "recovered",
            "is_read": True,
            "created_at": T0 - timedelta(days=1, minutes=i),
            "metadata": {},
        }
        for i in range(count)
    ]
    with store.engine.begin() as connection:
        connection.execute(notifications.insert(), rows)
    with store.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


@pytest.mark.parametrize(
    ("kind", "unread_only", "index"),
    [(None, True, "ix_notifications_tenant_unread"), (Kind.WARNING, False, "ix_notifications_tenant_type")],
)
def test_filtered_listings_read_their_index_in_order(
    store: SqlStore,
    tenant_id: str,
    inbox: list[NotificationRecord],
    kind: Kind | None,
    unread_only: bool,
    index: str,
) -> None:
    _add_read_history(store, tenant_id, 3000)

    with captured_sql(store.engine) as sent:
        listed = store.list_notifications(tenant_id, 3, type=kind, unread_only=unread_only)
    [(statement, parameters)] = [(s, p) for s, p in sent if "FROM notifications" in s]
    plan = explain(store.engine, statement, parameters)

    assert len(listed) == 3
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite: a sort
    assert "Sort" not in plan, plan  # PostgreSQL
