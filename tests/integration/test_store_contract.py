"""The ConnectionStore contract, part 1: tenants, providers, imports and listings (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import connections, workflow_connections, workflows
from grantkeeper.core.model import ConnectionState, ConnectionStatus, DisconnectReason, ErrorInfo, Outcome
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from grantkeeper.ports import (
    AuthMethod,
    DuplicateProviderError,
    NewProvider,
    ProviderConfig,
    UnknownProviderError,
    WorkflowStatus,
)
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, new_provider, notice


def _count(store: SqlStore, table_name: str) -> int:
    table = {"connections": connections, "workflows": workflows, "links": workflow_connections}[table_name]
    with store.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


# Tenants and providers


def test_ensure_tenant_creates_the_tenant_once(store: SqlStore) -> None:
    first = store.ensure_tenant("acme")

    assert first.startswith("ten_")
    assert len(first) == 24
    assert store.ensure_tenant("acme") == first
    assert store.ensure_tenant("other") != first


def test_ensure_tenant_is_race_safe(store: SqlStore) -> None:
    barrier = threading.Barrier(6)
    ids: list[str] = []

    def create() -> None:
        barrier.wait()
        ids.append(store.ensure_tenant("raced"))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(ids) == 6
    assert len(set(ids)) == 1


def test_add_provider_returns_and_lists_the_config_with_its_secret(store: SqlStore, tenant_id: str) -> None:
    added = store.add_provider(
        tenant_id,
        NewProvider(
            name="slack",
            token_url="https://slack.example.test/api/oauth.v2.access",
            client_id="slack-id",
            client_secret="slack-secret-value",
            auth_method=AuthMethod.CLIENT_SECRET_POST,
            default_expires_in=43200,
            authorize_url="https://slack.example.test/oauth/v2/authorize",
            revocation_url="https://slack.example.test/api/auth.revoke",
            scopes="chat:write",
        ),
    )

    assert added.provider_id.startswith("prv_")
    assert added.client_secret == "slack-secret-value"
    assert added.auth_method is AuthMethod.CLIENT_SECRET_POST
    assert store.list_providers(tenant_id) == [added]
    assert "slack-secret-value" not in repr(added)


def test_adding_a_provider_name_twice_raises_duplicate_provider_error(
    store: SqlStore, tenant_id: str
) -> None:
    store.add_provider(tenant_id, new_provider("google"))

    with pytest.raises(DuplicateProviderError, match="'google'"):
        store.add_provider(tenant_id, new_provider("google", secret="another"))
    assert len(store.list_providers(tenant_id)) == 1


def test_providers_belong_to_their_tenant(store: SqlStore, tenant_id: str) -> None:
    other = store.ensure_tenant("other")
    store.add_provider(tenant_id, new_provider("google"))
    theirs = store.add_provider(other, new_provider("google"))

    assert store.list_providers(other) == [theirs]
    assert [p.name for p in store.list_providers(tenant_id)] == ["google"]


# Imports


def test_import_creates_connected_connections_due_at_import_time(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection("u1"), new_connection("u2")], T0)

    assert len(ids) == 2
    assert all(connection_id.startswith("con_") for connection_id in ids)
    record = store.get_connection(tenant_id, ids[0])
    assert record is not None
    assert (record.provider, record.user_id, record.email) == ("google", "u1", "u1@example.test")
    assert record.state == ConnectionState(expires_at=T0 + timedelta(minutes=30), next_attempt_at=T0)
    assert record.created_at == record.updated_at == T0


def test_import_keeps_the_next_attempt_given_per_row(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    later = T0 + timedelta(minutes=20)
    [connection_id] = store.import_connections(tenant_id, [new_connection(next_attempt_at=later)], T0)

    record = store.get_connection(tenant_id, connection_id)
    assert record is not None
    assert record.state.next_attempt_at == later


def test_import_creates_workflows_by_name_and_links_them(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    first = store.import_connections(
        tenant_id,
        [new_connection("u1", workflows=("sync", "digest")), new_connection("u2", workflows=("sync",))],
        T0,
    )
    second = store.import_connections(tenant_id, [new_connection("u3", workflows=("sync", "sync"))], T0)

    listed = {workflow.name: workflow for workflow in store.list_workflows(tenant_id)}
    assert set(listed) == {"sync", "digest"}
    assert set(listed["sync"].connection_ids) == {*first, *second}
    assert listed["digest"].connection_ids == (first[0],)
    assert listed["sync"].status is WorkflowStatus.ACTIVE
    assert listed["sync"].workflow_id.startswith("wf_")


def test_import_naming_an_unknown_provider_raises_and_creates_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    rows = [new_connection("u1", workflows=("sync",)), new_connection("u2", provider="dropbox")]

    with pytest.raises(UnknownProviderError, match="'dropbox'") as raised:
        store.import_connections(tenant_id, rows, T0)

    assert raised.value.name == "dropbox"
    assert (_count(store, "connections"), _count(store, "workflows"), _count(store, "links")) == (0, 0, 0)


def test_import_is_all_or_nothing_when_a_late_row_fails(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    rows = [new_connection(f"u{i}", workflows=("sync",)) for i in range(1500)]
    rows[1400] = replace(rows[1400], expires_at=T0.replace(tzinfo=None))  # rejected in the second batch

    with pytest.raises(Exception, match="naive"):
        store.import_connections(tenant_id, rows, T0)

    assert (_count(store, "connections"), _count(store, "workflows"), _count(store, "links")) == (0, 0, 0)


def test_import_of_a_provider_of_another_tenant_is_unknown(store: SqlStore, tenant_id: str) -> None:
    store.add_provider(store.ensure_tenant("other"), new_provider("google"))

    with pytest.raises(UnknownProviderError):
        store.import_connections(tenant_id, [new_connection()], T0)


@pytest.mark.slow
def test_import_of_10000_rows_takes_seconds_not_minutes(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    rows = [new_connection(f"user-{i}", workflows=("bulk",) if i % 10 == 0 else ()) for i in range(10_000)]

    started = time.perf_counter()
    ids = store.import_connections(tenant_id, rows, T0)
    elapsed = time.perf_counter() - started

    assert len(set(ids)) == 10_000
    assert store.count_by_status(tenant_id)["connected"] == 10_000
    assert elapsed < 10, f"import of 10,000 rows took {elapsed:.1f}s"


# Listings


def test_get_connection_sees_only_its_tenant(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)

    assert store.get_connection(store.ensure_tenant("other"), connection_id) is None
    assert store.get_connection(tenant_id, "con_00000000000000000000") is None


def _disconnect(store: SqlStore, tenant_id: str, connection_id: str) -> None:
    """Drive one connection to needs_reauthorization through the public API, as the service would."""
    [claim] = store.claim_ids(tenant_id, [connection_id], T0, "worker", LEASE_TTL)
    outcome = Outcome(Klass.REAUTH_REQUIRED, http_status=400, error=ErrorInfo("interaction_required"))
    state = ConnectionState(
        status=ConnectionStatus.NEEDS_REAUTHORIZATION,
        consecutive_failures=1,
        last_failure_at=T0,
        failing_since=T0,
        last_error=outcome.error,
        disconnect_reason=DisconnectReason.REAUTH_REQUIRED,
        next_attempt_at=T0 + timedelta(minutes=5),
    )
    commit = attempt_commit(claim, outcome, state, notifications=(notice(Kind.DISCONNECTED, "email"),))
    assert store.commit_attempt(commit)


def test_list_connections_filters_by_status(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)
    _disconnect(store, tenant_id, ids[1])

    assert [r.connection_id for r in store.list_connections(tenant_id)] == sorted(ids)
    assert [
        r.connection_id for r in store.list_connections(tenant_id, ConnectionStatus.NEEDS_REAUTHORIZATION)
    ] == [ids[1]]
    assert len(store.list_connections(tenant_id, ConnectionStatus.CONNECTED)) == 2
    assert store.list_connections(store.ensure_tenant("other")) == []


def test_count_by_status_lists_every_status(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    assert store.count_by_status(tenant_id) == {"connected": 0, "needs_reauthorization": 0, "revoked": 0}

    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)
    _disconnect(store, tenant_id, ids[0])

    assert store.count_by_status(tenant_id) == {"connected": 2, "needs_reauthorization": 1, "revoked": 0}


def test_list_failing_shows_streaks_and_disconnections(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    healthy, rate_limited, disconnected = store.import_connections(
        tenant_id, [new_connection(f"u{i}") for i in range(3)], T0
    )
    _disconnect(store, tenant_id, disconnected)
    [claim] = store.claim_ids(tenant_id, [rate_limited], T0, "worker", LEASE_TTL)
    later = T0 + timedelta(minutes=1)
    state = replace(claim.state, consecutive_transient_failures=1, last_failure_at=later, failing_since=later)
    assert store.commit_attempt(attempt_commit(claim, Outcome(Klass.TRANSIENT, http_status=429), state))

    failing = store.list_failing(tenant_id)

    assert [record.connection_id for record in failing] == [rate_limited, disconnected]
    assert store.list_failing(tenant_id, limit=1)[0].connection_id == rate_limited
    assert healthy not in {record.connection_id for record in failing}


def test_list_notifications_newest_first_and_limited(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)
    for connection_id in ids:
        _disconnect(store, tenant_id, connection_id)

    listed = store.list_notifications(tenant_id, limit=2)

    assert len(listed) == 2
    assert all(n.type is Kind.DISCONNECTED and not n.is_read for n in listed)
    assert listed[0].created_at >= listed[1].created_at
    assert store.list_notifications(store.ensure_tenant("other")) == []


def test_attempts_for_lists_a_connections_attempts_newest_first(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    for minutes in (0, 5):
        at = T0 + timedelta(minutes=minutes)
        [claim] = store.claim_ids(tenant_id, [connection_id], at, "worker", LEASE_TTL)
        outcome = Outcome(Klass.TRANSIENT, http_status=503, error=ErrorInfo("http_503"))
        assert store.commit_attempt(attempt_commit(claim, outcome, claim.state, attempted_at=at))

    attempts = store.attempts_for(connection_id)

    assert [a.attempted_at for a in attempts] == [T0 + timedelta(minutes=5), T0]
    assert attempts[0].outcome is Klass.TRANSIENT
    assert (attempts[0].http_status, attempts[0].error_code) == (503, "http_503")
    assert attempts[0].duration == timedelta(milliseconds=120)
    assert store.attempts_for(connection_id, limit=1) == attempts[:1]
