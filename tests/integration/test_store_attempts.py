"""The ConnectionStore contract, part 2: leasing, committing attempts, workflows and reconnects."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import StatementError

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import connections, outbox, refresh_attempts, workflows
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    ErrorInfo,
    FlagProvider,
    Outcome,
    PauseWorkflows,
    ResumeWorkflows,
    TokenSet,
    Transition,
)
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ClaimedConnection, ProviderConfig, UnknownConnectionError, WorkflowStatus
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, new_provider, notice

DISCONNECTED = ConnectionState(
    status=ConnectionStatus.NEEDS_REAUTHORIZATION,
    consecutive_failures=3,
    last_failure_at=T0,
    failing_since=T0 - timedelta(minutes=10),
    last_error=ErrorInfo("invalid_grant", "Token has been expired or revoked."),
    disconnect_reason=DisconnectReason.AUTH_FAILURES,
    next_attempt_at=T0 + timedelta(minutes=5),
    warning_sent=True,
)
AUTH_FAILURE = Outcome(Klass.AUTH, http_status=400, error=ErrorInfo("invalid_grant"))


def _success(refresh_token: str | None) -> tuple[Outcome, ConnectionState]:
    tokens = TokenSet("at-new", refresh_token, expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(
        last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0 + timedelta(minutes=50)
    )
    return Outcome(Klass.SUCCESS, http_status=200, tokens=tokens), state


def _only_claim(store: SqlStore, tenant_id: str, connection_id: str) -> ClaimedConnection:
    [claim] = store.claim_ids(tenant_id, [connection_id], T0, "worker-a", LEASE_TTL)
    return claim


def _row(store: SqlStore, connection_id: str) -> dict[str, object]:
    with store.engine.connect() as connection:
        row = connection.execute(select(connections).where(connections.c.id == connection_id)).one()
    return dict(row._mapping)


def _workflow_status(store: SqlStore, tenant_id: str) -> dict[str, tuple[WorkflowStatus, str | None]]:
    return {w.name: (w.status, w.paused_reason) for w in store.list_workflows(tenant_id)}


# Claiming


def test_claim_due_leases_due_connected_unleased_rows_in_due_order_up_to_the_limit(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    due_at = [T0 - timedelta(minutes=m) for m in (1, 3, 2)]
    ids = store.import_connections(
        tenant_id,
        [new_connection(f"due{i}", next_attempt_at=at) for i, at in enumerate(due_at)]
        + [new_connection("later", next_attempt_at=T0 + timedelta(seconds=1))],
        T0 - timedelta(hours=1),
    )

    first = store.claim_due(T0, 2, "worker-a", LEASE_TTL)
    second = store.claim_due(T0, 10, "worker-b", LEASE_TTL)

    assert [c.connection_id for c in first] == [ids[1], ids[2]]
    assert [c.connection_id for c in second] == [ids[0]]
    assert store.claim_due(T0, 10, "worker-c", LEASE_TTL) == []
    assert first[0].lease_owner == "worker-a"
    assert first[0].lease_expires_at == T0 + LEASE_TTL
    assert first[0].version == 1


def test_claim_due_hands_over_decrypted_tokens_and_provider_config(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection("u1", refresh_token="rt-1", access_token="at-1")], T0)

    [claim] = store.claim_due(T0, 10, "worker-a", LEASE_TTL)

    # a scheduled refresh gets the refresh token only; token vending's claim_ids gets both
    assert (claim.refresh_token, claim.access_token) == ("rt-1", None)
    assert claim.provider == provider
    assert claim.provider.client_secret == "client-secret-value-0001"
    assert (claim.tenant_id, claim.user_id, claim.email) == (tenant_id, "u1", "u1@example.test")
    assert claim.state.next_attempt_at == T0
    assert "rt-1" not in repr(claim)
    assert "at-1" not in repr(claim)


def test_claim_due_can_be_limited_to_one_tenant(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    other = store.ensure_tenant("other")
    store.add_provider(other, new_provider())
    [ours] = store.import_connections(tenant_id, [new_connection("u1")], T0)
    store.import_connections(other, [new_connection("u2")], T0)

    assert [c.connection_id for c in store.claim_due(T0, 10, "w", LEASE_TTL, tenant_id=tenant_id)] == [ours]
    assert len(store.claim_due(T0, 10, "w", LEASE_TTL)) == 1


def test_connection_needing_reauthorization_is_never_due(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    assert store.commit_attempt(attempt_commit(claim, AUTH_FAILURE, DISCONNECTED))

    assert store.claim_due(T0 + timedelta(days=30), 10, "w", LEASE_TTL) == []


def test_expired_lease_is_retaken_with_a_higher_version(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection()], T0)
    [dead_workers] = store.claim_due(T0, 10, "worker-a", LEASE_TTL)

    assert store.claim_due(T0 + LEASE_TTL, 10, "worker-b", LEASE_TTL) == []  # not expired yet: < is strict
    [retaken] = store.claim_due(T0 + LEASE_TTL + timedelta(seconds=1), 10, "worker-b", LEASE_TTL)

    assert retaken.connection_id == dead_workers.connection_id
    assert retaken.version == dead_workers.version + 1
    assert retaken.lease_owner == "worker-b"


def test_release_frees_the_lease_for_the_next_claim(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection()], T0)
    [claim] = store.claim_due(T0, 10, "worker-a", LEASE_TTL)

    store.release(claim)

    [again] = store.claim_due(T0, 10, "worker-b", LEASE_TTL)
    assert again.connection_id == claim.connection_id
    assert again.version > claim.version


def test_release_of_a_lost_lease_changes_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection()], T0)
    [lost] = store.claim_due(T0, 10, "worker-a", LEASE_TTL)
    [current] = store.claim_due(T0 + LEASE_TTL * 2, 10, "worker-b", LEASE_TTL)

    store.release(lost)

    assert _row(store, current.connection_id)["lease_owner"] == "worker-b"


def test_claim_ids_leases_the_named_connections_whatever_their_schedule(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(
        tenant_id, [new_connection(f"u{i}", next_attempt_at=T0 + timedelta(days=3)) for i in range(3)], T0
    )

    claimed = store.claim_ids(tenant_id, [ids[2], ids[0], ids[2]], T0, "cli", LEASE_TTL)

    assert sorted(c.connection_id for c in claimed) == sorted([ids[0], ids[2]])
    assert all(c.lease_owner == "cli" and c.refresh_token for c in claimed)


def test_claim_ids_without_ids_leases_every_connected_unleased_connection_of_the_tenant(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(4)], T0)
    disconnected = _only_claim(store, tenant_id, ids[0])
    assert store.commit_attempt(attempt_commit(disconnected, AUTH_FAILURE, DISCONNECTED))
    store.claim_ids(tenant_id, [ids[1]], T0, "busy-worker", LEASE_TTL)
    other = store.ensure_tenant("other")
    store.add_provider(other, new_provider())
    store.import_connections(other, [new_connection("theirs")], T0)

    claimed = store.claim_ids(tenant_id, None, T0, "cli", LEASE_TTL)

    assert sorted(c.connection_id for c in claimed) == sorted(ids[2:])


def test_claim_ids_with_an_unknown_id_raises_before_leasing_anything(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [ours] = store.import_connections(tenant_id, [new_connection()], T0)
    other = store.ensure_tenant("other")
    store.add_provider(other, new_provider())
    [theirs] = store.import_connections(other, [new_connection()], T0)

    with pytest.raises(UnknownConnectionError) as raised:
        store.claim_ids(tenant_id, [ours, theirs, "con_missing"], T0, "cli", LEASE_TTL)

    assert raised.value.connection_ids == (theirs, "con_missing")
    assert _row(store, ours)["lease_owner"] is None


# Committing attempts


def test_commit_of_a_success_stores_state_tokens_and_attempt_and_frees_the_lease(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    outcome, state = _success(refresh_token="rt-rotated")

    assert store.commit_attempt(attempt_commit(claim, outcome, state))

    record = store.get_connection(tenant_id, connection_id)
    assert record is not None
    assert record.state == state
    row = _row(store, connection_id)
    assert (row["lease_owner"], row["lease_expires_at"], row["version"]) == (None, None, claim.version + 1)
    [again] = store.claim_ids(tenant_id, [connection_id], T0, "w", LEASE_TTL)
    assert (again.access_token, again.refresh_token) == ("at-new", "rt-rotated")
    assert [a.outcome for a in store.attempts_for(connection_id)] == [Klass.SUCCESS]


def test_commit_of_a_success_without_rotation_keeps_the_stored_refresh_token(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection(refresh_token="rt-original")], T0)
    outcome, state = _success(refresh_token=None)

    assert store.commit_attempt(attempt_commit(_only_claim(store, tenant_id, connection_id), outcome, state))

    again = _only_claim(store, tenant_id, connection_id)
    assert (again.access_token, again.refresh_token) == ("at-new", "rt-original")


def test_commit_of_a_failure_never_touches_the_tokens(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection("u1")], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    stray = Outcome(Klass.TRANSIENT, http_status=200, tokens=TokenSet("at-bogus", "rt-bogus"))

    assert store.commit_attempt(
        attempt_commit(claim, stray, replace(claim.state, consecutive_transient_failures=1))
    )

    again = _only_claim(store, tenant_id, connection_id)
    assert (again.access_token, again.refresh_token) == ("at-plain-u1", "rt-plain-u1")


def test_commit_of_a_disconnection_writes_state_attempt_notification_outbox_and_pauses_workflows(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(
        tenant_id, [new_connection("u1", workflows=("sync", "digest"))], T0
    )
    slack = store.add_destination(tenant_id, DestinationKind.SLACK, "https://hooks.slack.example/T/B/x", T0)
    hook = store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://app.example/hooks", T0, secret="whsec_c2VjcmV0"
    )
    claim = _only_claim(store, tenant_id, connection_id)
    commit = attempt_commit(
        claim,
        AUTH_FAILURE,
        DISCONNECTED,
        effects=(PauseWorkflows(DisconnectReason.AUTH_FAILURES),),
        notifications=(notice(Kind.DISCONNECTED, "email"),),
    )

    assert store.commit_attempt(commit)

    record = store.get_connection(tenant_id, connection_id)
    assert record is not None
    assert record.state == DISCONNECTED
    [notification] = store.list_notifications(tenant_id)
    assert (notification.type, notification.connection_id, notification.user_id) == (
        Kind.DISCONNECTED,
        connection_id,
        "u1",
    )
    assert notification.metadata["provider"] == "google"
    assert notification.created_at == T0 + timedelta(milliseconds=120)
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(
                outbox.c.channel,
                outbox.c.destination_id,
                outbox.c.event,
                outbox.c.notification_id,
                outbox.c.recipient,
                outbox.c.payload,
            ).where(outbox.c.status == "pending")
        ).all()
    by_event = sorted((row.channel, row.destination_id, row.event, row.notification_id) for row in rows)
    nid = notification.notification_id
    assert by_event == sorted(
        [
            ("email", None, None, nid),
            ("slack", slack.destination_id, None, nid),
            ("webhook", hook.destination_id, "connection.disconnected", nid),
            ("webhook", hook.destination_id, "workflow.paused", None),
            ("webhook", hook.destination_id, "workflow.paused", None),
        ]
    )
    [email_row] = [row for row in rows if row.channel == "email"]
    assert email_row.recipient == "u1@example.test"
    paused = sorted(row.payload["data"]["name"] for row in rows if row.event == "workflow.paused")
    assert paused == ["digest", "sync"]
    [disconnected] = [row.payload for row in rows if row.event == "connection.disconnected"]
    assert disconnected["type"] == "connection.disconnected"
    assert disconnected["data"]["connection_id"] == connection_id
    assert disconnected["data"]["notification_id"] == nid
    assert _workflow_status(store, tenant_id) == {
        "sync": (WorkflowStatus.PAUSED, "auth_failures"),
        "digest": (WorkflowStatus.PAUSED, "auth_failures"),
    }
    assert [(a.outcome, a.error_code) for a in store.attempts_for(connection_id)] == [
        (Klass.AUTH, "invalid_grant")
    ]


def test_notification_metadata_from_the_service_is_kept_beside_the_provider(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    content = replace(notice(Kind.WARNING), metadata={"reconnect_url": "https://app.test/r/1", "failures": 2})

    assert store.commit_attempt(
        attempt_commit(
            _only_claim(store, tenant_id, connection_id), AUTH_FAILURE, DISCONNECTED, notifications=(content,)
        )
    )

    [notification] = store.list_notifications(tenant_id)
    assert notification.metadata == {
        "provider": "google",
        "reconnect_url": "https://app.test/r/1",
        "failures": 2,
    }


def test_commit_after_the_lease_was_lost_is_refused_and_writes_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection("u1", workflows=("sync",))], T0)
    [stalled] = store.claim_due(T0, 10, "worker-a", LEASE_TTL)
    [retaken] = store.claim_due(T0 + LEASE_TTL * 2, 10, "worker-b", LEASE_TTL)
    outcome, state = _success(refresh_token="rt-from-stalled-worker")
    late = attempt_commit(
        stalled,
        outcome,
        state,
        effects=(PauseWorkflows(DisconnectReason.AUTH_FAILURES),),
        notifications=(notice(Kind.RECOVERED),),
    )

    assert store.commit_attempt(late) is False

    assert _row(store, retaken.connection_id)["lease_owner"] == "worker-b"
    assert store.attempts_for(retaken.connection_id) == []
    assert store.list_notifications(tenant_id) == []
    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.ACTIVE, None)}
    assert store.commit_attempt(attempt_commit(retaken, AUTH_FAILURE, retaken.state))
    again = _only_claim(store, tenant_id, retaken.connection_id)
    assert again.refresh_token == "rt-plain-u1"


def test_commit_after_release_is_refused(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    store.release(claim)

    assert store.commit_attempt(attempt_commit(claim, *_success("rt-x"))) is False


def test_commit_is_all_or_nothing(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection("u1", workflows=("sync",))], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    unstorable = replace(notice(Kind.DISCONNECTED, "email"), metadata={"not_json": object()})
    commit = attempt_commit(
        claim,
        AUTH_FAILURE,
        DISCONNECTED,
        effects=(PauseWorkflows(DisconnectReason.AUTH_FAILURES),),
        notifications=(unstorable,),
    )

    with pytest.raises((TypeError, StatementError), match="not JSON serializable"):
        store.commit_attempt(commit)

    row = _row(store, connection_id)
    assert (row["status"], row["lease_owner"], row["version"]) == ("connected", "worker-a", claim.version)
    assert store.attempts_for(connection_id) == []
    assert store.list_notifications(tenant_id) == []
    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.ACTIVE, None)}


def test_commit_of_a_config_failure_flags_the_provider(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    claim = _only_claim(store, tenant_id, connection_id)
    error = ErrorInfo("invalid_client", "Client authentication failed")
    outcome = Outcome(Klass.CONFIG, http_status=401, error=error)

    assert store.commit_attempt(attempt_commit(claim, outcome, claim.state, effects=(FlagProvider(error),)))

    [flagged] = store.list_providers(tenant_id)
    assert flagged.flagged_at == T0 + timedelta(milliseconds=120)
    assert flagged.flag_reason == "invalid_client: Client authentication failed"


def test_one_config_error_event_per_outage_of_our_credentials(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """Every connection of the provider hits the same bad client secret; the app hears about it once, and
    again only after a success proved the credentials good in between."""
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://app.example/hooks", T0, secret="whsec_c2VjcmV0"
    )
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3)], T0)
    error = ErrorInfo("invalid_client", "Client authentication failed")
    config = Outcome(Klass.CONFIG, http_status=401, error=error)
    success = Outcome(Klass.SUCCESS, http_status=200, tokens=TokenSet("at-new", None))

    def attempt(connection_id: str, outcome: Outcome) -> None:
        claim = _only_claim(store, tenant_id, connection_id)
        effects = (FlagProvider(error),) if outcome.klass is Klass.CONFIG else ()
        assert store.commit_attempt(attempt_commit(claim, outcome, claim.state, effects=effects))

    for connection_id in ids:
        attempt(connection_id, config)
    attempt(ids[0], success)
    assert store.list_providers(tenant_id)[0].flagged_at is None
    attempt(ids[1], config)

    with store.engine.connect() as connection:
        events = connection.scalars(
            select(outbox.c.event).where(outbox.c.event == "provider.config_error")
        ).all()
    assert len(events) == 2


# Workflows and reconnects


def _pause_via_disconnection(store: SqlStore, tenant_id: str, connection_id: str) -> None:
    claim = _only_claim(store, tenant_id, connection_id)
    effects = (PauseWorkflows(DisconnectReason.AUTH_FAILURES),)
    assert store.commit_attempt(attempt_commit(claim, AUTH_FAILURE, DISCONNECTED, effects=effects))


def _reconnect(
    store: SqlStore, tenant_id: str, connection_id: str, refresh_token: str | None = "rt-new"
) -> bool:
    tokens = TokenSet("at-reconnected", refresh_token, expires_at=T0 + timedelta(hours=2))
    fresh = ConnectionState(
        last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0 + timedelta(hours=1)
    )
    return store.reconnect(tenant_id, connection_id, tokens, Transition(fresh, (ResumeWorkflows(),)), T0)


def test_reconnect_stores_tokens_resets_the_state_and_resumes_workflows(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection(workflows=("sync",))], T0)
    _pause_via_disconnection(store, tenant_id, connection_id)

    assert _reconnect(store, tenant_id, connection_id)

    record = store.get_connection(tenant_id, connection_id)
    assert record is not None
    assert record.state.status is ConnectionStatus.CONNECTED
    assert (record.state.consecutive_failures, record.state.disconnect_reason) == (0, None)
    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.ACTIVE, None)}
    claim = _only_claim(store, tenant_id, connection_id)
    assert (claim.access_token, claim.refresh_token) == ("at-reconnected", "rt-new")


def test_reconnect_without_a_refresh_token_keeps_the_stored_one(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection("u1")], T0)

    assert _reconnect(store, tenant_id, connection_id, refresh_token=None)

    assert _only_claim(store, tenant_id, connection_id).refresh_token == "rt-plain-u1"


def test_workflow_stays_paused_while_another_of_its_connections_needs_reauthorization(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    first, second = store.import_connections(
        tenant_id, [new_connection("u1", workflows=("sync",)), new_connection("u2", workflows=("sync",))], T0
    )
    _pause_via_disconnection(store, tenant_id, first)
    _pause_via_disconnection(store, tenant_id, second)

    assert _reconnect(store, tenant_id, first)
    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.PAUSED, "auth_failures")}

    assert _reconnect(store, tenant_id, second)
    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.ACTIVE, None)}


def test_reconnect_leaves_a_workflow_paused_for_another_reason_alone(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection(workflows=("sync",))], T0)
    with store.engine.begin() as connection:
        connection.execute(update(workflows).values(status="paused", paused_reason="paused_by_user"))
    _pause_via_disconnection(store, tenant_id, connection_id)

    assert _reconnect(store, tenant_id, connection_id)

    assert _workflow_status(store, tenant_id) == {"sync": (WorkflowStatus.PAUSED, "paused_by_user")}


def test_reconnect_fences_out_an_attempt_in_flight(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    in_flight = _only_claim(store, tenant_id, connection_id)

    assert _reconnect(store, tenant_id, connection_id)

    assert store.commit_attempt(attempt_commit(in_flight, AUTH_FAILURE, DISCONNECTED)) is False
    claim = _only_claim(store, tenant_id, connection_id)
    assert claim.refresh_token == "rt-new"
    assert claim.state.status is ConnectionStatus.CONNECTED


def test_reconnect_of_an_unknown_or_foreign_connection_returns_false(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)

    assert _reconnect(store, store.ensure_tenant("other"), connection_id) is False
    assert _reconnect(store, tenant_id, "con_00000000000000000000") is False
    with store.engine.connect() as connection:
        assert connection.execute(select(refresh_attempts)).all() == []
