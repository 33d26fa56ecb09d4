"""The store for the HTTP API, part 3: creating and reading workflows (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import workflow_connections, workflows
from grantkeeper.core.model import ConnectionState, DisconnectReason, TokenSet, Transition
from grantkeeper.ports import (
    DuplicateWorkflowError,
    ProviderConfig,
    UnknownConnectionError,
    WorkflowRecord,
    WorkflowStatus,
)
from tests.fixtures.db import T0, disconnect, new_connection

LATER = T0 + timedelta(hours=1)


def _counts(store: SqlStore) -> tuple[int, int]:
    with store.engine.connect() as connection:
        return (
            connection.execute(select(func.count()).select_from(workflows)).scalar_one(),
            connection.execute(select(func.count()).select_from(workflow_connections)).scalar_one(),
        )


def _reconnect(store: SqlStore, tenant_id: str, connection_id: str) -> None:
    tokens = TokenSet("at-new", "rt-new", expires_at=LATER + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=LATER, expires_at=tokens.expires_at, next_attempt_at=LATER)
    assert store.reconnect(tenant_id, connection_id, tokens, Transition(state, ()), LATER)


def test_create_workflow_links_its_connections_and_is_active(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)

    created = store.create_workflow(tenant_id, "sync", [ids[2], ids[0], ids[2]], LATER)

    assert created.workflow_id.startswith("wf_")
    assert (created.tenant_id, created.name) == (tenant_id, "sync")
    assert (created.status, created.paused_reason) == (WorkflowStatus.ACTIVE, None)
    assert created.connection_ids == tuple(sorted([ids[0], ids[2]]))
    assert created.created_at == created.updated_at == LATER
    assert store.get_workflow(tenant_id, created.workflow_id) == created
    assert store.list_workflows(tenant_id) == [created]


def test_create_workflow_without_connections_is_active_and_empty(store: SqlStore, tenant_id: str) -> None:
    created = store.create_workflow(tenant_id, "later", [], T0)

    assert (created.status, created.connection_ids) == (WorkflowStatus.ACTIVE, ())


def test_workflow_created_over_a_disconnected_connection_is_paused_with_its_reason(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    healthy, broken = store.import_connections(tenant_id, [new_connection("u1"), new_connection("u2")], T0)
    disconnect(store, tenant_id, broken, reason=DisconnectReason.AUTH_FAILURES)

    created = store.create_workflow(tenant_id, "sync", [healthy, broken], LATER)

    assert created.status is WorkflowStatus.PAUSED
    assert created.paused_reason == DisconnectReason.AUTH_FAILURES.value


def test_workflow_created_paused_resumes_when_its_connection_reconnects(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [broken] = store.import_connections(tenant_id, [new_connection()], T0)
    disconnect(store, tenant_id, broken)
    created = store.create_workflow(tenant_id, "sync", [broken], LATER)

    _reconnect(store, tenant_id, broken)

    resumed = store.get_workflow(tenant_id, created.workflow_id)
    assert resumed is not None
    assert (resumed.status, resumed.paused_reason) == (WorkflowStatus.ACTIVE, None)


def test_workflow_created_active_is_paused_when_a_connection_later_disconnects(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    created = store.create_workflow(tenant_id, "sync", [connection_id], T0)

    disconnect(store, tenant_id, connection_id, at=LATER)

    paused = store.get_workflow(tenant_id, created.workflow_id)
    assert paused is not None
    assert paused.status is WorkflowStatus.PAUSED


def test_create_workflow_with_unknown_connection_ids_names_them_and_creates_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [known] = store.import_connections(tenant_id, [new_connection()], T0)
    missing = ["con_00000000000000000000", "con_11111111111111111111"]

    with pytest.raises(UnknownConnectionError) as raised:
        store.create_workflow(tenant_id, "sync", [known, *missing], T0)

    assert raised.value.connection_ids == tuple(missing)
    assert _counts(store) == (0, 0)


def test_create_workflow_over_another_tenants_connection_is_unknown_and_creates_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    [ours] = store.import_connections(tenant_id, [new_connection()], T0)
    [theirs] = store.import_connections(other_tenant_id, [new_connection()], T0)

    with pytest.raises(UnknownConnectionError) as raised:
        store.create_workflow(tenant_id, "sync", [ours, theirs], T0)

    assert raised.value.connection_ids == (theirs,)
    assert _counts(store) == (0, 0)


def test_create_workflow_with_a_taken_name_raises_and_changes_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    first, second = store.import_connections(tenant_id, [new_connection("u1"), new_connection("u2")], T0)
    original = store.create_workflow(tenant_id, "sync", [first], T0)

    with pytest.raises(DuplicateWorkflowError, match="'sync'") as raised:
        store.create_workflow(tenant_id, "sync", [second], LATER)

    assert raised.value.name == "sync"
    assert store.list_workflows(tenant_id) == [original]
    assert _counts(store) == (1, 1)


def test_concurrent_creations_of_one_name_leave_one_workflow(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(5)], T0)
    barrier = threading.Barrier(5)
    outcomes: list[WorkflowRecord | DuplicateWorkflowError] = []

    def create(connection_id: str) -> None:
        barrier.wait()
        try:
            outcomes.append(store.create_workflow(tenant_id, "raced", [connection_id], T0))
        except DuplicateWorkflowError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(connection_id,)) for connection_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    [winner] = [outcome for outcome in outcomes if isinstance(outcome, WorkflowRecord)]
    assert len(outcomes) == 5
    assert store.list_workflows(tenant_id) == [winner]
    assert _counts(store) == (1, 1)


def test_the_same_workflow_name_may_exist_in_two_tenants(
    store: SqlStore, tenant_id: str, other_tenant_id: str
) -> None:
    ours = store.create_workflow(tenant_id, "sync", [], T0)
    theirs = store.create_workflow(other_tenant_id, "sync", [], T0)

    assert ours.workflow_id != theirs.workflow_id
    assert store.list_workflows(tenant_id) == [ours]


def test_get_workflow_never_returns_another_tenants_workflow(
    store: SqlStore, tenant_id: str, other_tenant_id: str
) -> None:
    theirs = store.create_workflow(other_tenant_id, "sync", [], T0)

    assert store.get_workflow(tenant_id, theirs.workflow_id) is None
    assert store.get_workflow(tenant_id, "wf_00000000000000000000") is None
    assert store.get_workflow(other_tenant_id, theirs.workflow_id) == theirs
