"""``store.delete_provider`` (both databases): what goes with a provider, what it refuses, and what a worker
still holding a lease on a removed connection finds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from grantkeeper.adapters.db import SqlStore
from grantkeeper.core.model import ConnectionState, NotificationType, Outcome, OutcomeClass, TokenSet
from grantkeeper.ports import ProviderConfig, ProviderInUseError, UnknownProviderError
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, notice


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
    assert store.list_notifications(tenant_id) == []
    assert store.attempts_for(first.connection_id) == []
    assert store.list_connections(tenant_id) == []
