"""``store.delete_provider`` (both databases): what goes with a provider, what it refuses, and what a worker
still holding a lease on a removed connection finds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from grantkeeper.adapters.db import SqlStore
from grantkeeper.core.model import ConnectionState, NotificationType, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ProviderConfig, ProviderInUseError, UnknownProviderError, WorkflowStatus
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, disconnect, new_connection, new_provider, notice


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
