"""A provider's return wakes its backed-off connections a few at a time (``RetryProviderNow``, ADR 27).

Each recovery makes up to ``limit`` others due now, those whose retry lies furthest ahead first, read from
the end of ``ix_connections_transient``; rows leased, disconnected, healthy or of another provider stay as
they are. On PostgreSQL two workers waking at once take different rows and neither waits for the other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

from sqlalchemy import Connection, Engine, select, text

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.commits import pause_linked, retry_provider_now
from grantkeeper.adapters.db.tables import connections, outbox
from grantkeeper.core.model import (
    ConnectionState,
    DisconnectReason,
    NotificationType,
    Notify,
    Outcome,
    OutcomeClass,
    RetryProviderNow,
    TokenSet,
)
from grantkeeper.core.routing import DestinationKind, Preferences, WarningEmail
from grantkeeper.ports import AttemptCommit, ProviderConfig, UserPreferences, WorkflowStatus
from tests.fixtures.db import (
    LEASE_TTL,
    T0,
    attempt_commit,
    captured_sql,
    disconnection,
    explain,
    new_connection,
    new_provider,
    notice,
)

BACKED_OFF = 30


def _back_off(engine: Engine, ids: list[str], failures: int = 6) -> None:
    """Put rows into a transient streak, as a run of 503s would have left them (their retry times stay)."""
    with engine.begin() as connection:
        for connection_id in ids:
            connection.execute(
                text("UPDATE connections SET consecutive_transient_failures = :n WHERE id = :id"),
                {"n": failures, "id": connection_id},
            )


def _due_now(engine: Engine) -> set[str]:
    """The rows a wake made due: due within a minute of T0 (every other row's next attempt is later)."""
    c = connections.c
    with engine.connect() as connection:
        return set(connection.scalars(select(c.id).where(c.next_attempt_at < T0 + timedelta(minutes=1))))


def _backed_off(store: SqlStore, tenant_id: str) -> list[str]:
    """``BACKED_OFF`` connections backing off, retries 1..30 hours ahead; returned furthest retry first."""
    rows = [new_connection(f"u{i}", next_attempt_at=T0 + timedelta(hours=1 + i)) for i in range(BACKED_OFF)]
    ids = list(store.import_connections(tenant_id, rows, T0 - timedelta(days=1)))
    _back_off(store.engine, ids)
    return ids[::-1]


def _recoveries(store: SqlStore, tenant_id: str, users: list[str], limit: int) -> list[AttemptCommit]:
    """Backed-off connections whose refreshes succeed and wake others, as the worker would commit them."""
    rows = [new_connection(user, next_attempt_at=T0) for user in users]
    wakers = list(store.import_connections(tenant_id, rows, T0))
    _back_off(store.engine, wakers, failures=3)
    tokens = TokenSet("at-new", "rt-new", expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(
        last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0 + timedelta(minutes=50)
    )
    succeeded = Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens)
    return [
        attempt_commit(claim, succeeded, state, effects=(RetryProviderNow(limit),))
        for claim in store.claim_ids(tenant_id, wakers, T0, "worker", LEASE_TTL)
    ]


def _recovery(store: SqlStore, tenant_id: str, user: str, limit: int) -> None:
    """One backed-off connection's refresh succeeds and wakes others, committed on its own."""
    [commit] = _recoveries(store, tenant_id, [user], limit)
    assert store.commit_attempt(commit)


def test_each_recovery_wakes_at_most_its_limit_furthest_retry_first(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    furthest_first = _backed_off(store, tenant_id)

    _recovery(store, tenant_id, "waker-1", limit=8)
    assert _due_now(store.engine) == set(furthest_first[:8])

    _recovery(store, tenant_id, "waker-2", limit=8)  # the next recovery wakes the next eight
    assert _due_now(store.engine) == set(furthest_first[:16])


def test_a_wake_leaves_leased_disconnected_healthy_and_other_providers_rows_alone(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.add_provider(tenant_id, new_provider("github"))
    later = T0 + timedelta(hours=5)
    leased, disconnected, _healthy, elsewhere, woken = store.import_connections(
        tenant_id,
        [
            new_connection("leased", next_attempt_at=later),
            new_connection("disconnected", next_attempt_at=later),
            new_connection("healthy", next_attempt_at=later),
            new_connection("elsewhere", provider="github", next_attempt_at=later),
            new_connection("woken", next_attempt_at=later),
        ],
        T0 - timedelta(days=1),
    )
    _back_off(store.engine, [leased, disconnected, elsewhere, woken])
    store.claim_ids(tenant_id, [leased], T0, "other-worker", LEASE_TTL)
    with store.engine.begin() as connection:
        disconnect = text("UPDATE connections SET status = 'needs_reauthorization' WHERE id = :id")
        connection.execute(disconnect, {"id": disconnected})

    with store.engine.begin() as connection:
        assert retry_provider_now(connection, provider.provider_id, T0, limit=100) == 1

    assert _due_now(store.engine) == {woken}


def test_the_wake_reads_the_transient_index_not_the_table(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _backed_off(store, tenant_id)
    with captured_sql(store.engine) as sent, store.engine.begin() as connection:
        retry_provider_now(connection, provider.provider_id, T0, limit=8)
    statement, parameters = next((s, p) for s, p in sent if s.lstrip().upper().startswith("SELECT"))

    plan = explain(store.engine, statement, parameters)

    assert "ix_connections_transient" in plan, plan
    assert "SCAN connections" not in plan, plan
    assert "Seq Scan" not in plan, plan


def test_two_wakes_at_once_take_different_rows_without_waiting(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """On PostgreSQL the second wake runs while the first still holds its rows, under a lock timeout that
    would fail it if it waited; SQLite has one writer at a time, so there the second runs after the first."""
    furthest_first = _backed_off(store, tenant_id)
    is_postgresql = store.engine.dialect.name == "postgresql"

    def wake(connection: Connection) -> int:
        if is_postgresql:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
        return retry_provider_now(connection, provider.provider_id, T0, limit=8)

    with store.engine.connect() as first:
        first.begin()
        assert wake(first) == 8
        if not is_postgresql:
            first.commit()
        with store.engine.begin() as second:
            assert wake(second) == 8
        first.commit()

    assert _due_now(store.engine) == set(furthest_first[:16])


def test_a_batchs_recoveries_wake_as_many_as_all_their_limits_in_one_statement(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    furthest_first = _backed_off(store, tenant_id)
    batch = _recoveries(store, tenant_id, ["w1", "w2", "w3"], limit=5)

    with captured_sql(store.engine) as sent:
        assert store.commit_attempts(batch) == [True, True, True]

    assert _due_now(store.engine) == set(furthest_first[:15])
    picks = [s for s, _ in sent if "ORDER BY connections.next_attempt_at DESC" in s]
    assert len(picks) == 1  # one wake for the batch, not one per recovery


def test_a_batch_reads_destinations_and_preferences_and_writes_notices_once_for_all(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    batch = [
        replace(commit, notifications=(notice(NotificationType.RECOVERED),))
        for commit in _recoveries(store, tenant_id, ["w1", "w2", "w3"], limit=1)
    ]

    with captured_sql(store.engine) as sent:
        assert store.commit_attempts(batch) == [True, True, True]

    assert len(store.list_notifications(tenant_id)) == 3
    for read_or_written_once in ("FROM destinations", "FROM user_preferences", "INSERT INTO notifications"):
        assert sum(read_or_written_once in statement for statement, _ in sent) == 1, read_or_written_once


def _notices_routed(store: SqlStore, tenant_id: str, *, grouped: bool) -> list[tuple[object, ...]]:
    """Warnings (email asked for) for four users with different preferences, committed one by one or as
    one batch; what each notification and its outbox rows say, without ids."""
    secret = "whsec_" + "A" * 32
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://hooks.example.test/gk", T0, secret=secret
    )
    store.add_destination(tenant_id, DestinationKind.SLACK, "https://hooks.slack.test/u1", T0, user_id="u1")
    quiet = Preferences(email=False, slack=False)
    store.set_preferences(tenant_id, UserPreferences("u1", preferences=quiet), T0)
    digest = Preferences(warning_email=WarningEmail.DIGEST)
    store.set_preferences(tenant_id, UserPreferences("u2", preferences=digest), T0)
    store.set_preferences(tenant_id, UserPreferences("u3", email_address="fallback@example.test"), T0)
    batch = [
        replace(commit, notifications=(notice(NotificationType.WARNING, "email"),))
        for commit in _recoveries(store, tenant_id, ["u0", "u1", "u2", "u3"], limit=1)
    ]
    if grouped:
        assert store.commit_attempts(batch) == [True] * 4
    else:
        assert all(store.commit_attempt(commit) for commit in batch)
    o = outbox.c
    routed = []
    with store.engine.connect() as connection:
        for item in store.list_notifications(tenant_id, 100):
            query = select(o.channel, o.status, o.recipient, o.event, o.next_attempt_at).where(
                o.notification_id == item.notification_id
            )
            rows = sorted(tuple(row) for row in connection.execute(query))
            routed.append((item.user_id, item.type, item.title, item.connection_id is not None, *rows))
    return sorted(routed, key=repr)


def test_grouped_notices_are_routed_exactly_as_single_ones(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    """The grouped path reads preferences and destinations once for the batch; the result must not differ:
    an opted-out user gets no email or chat, a digest user a digest row, a user without a connection
    address their preferences' one, and the tenant's webhook every event."""
    single = _notices_routed(store, tenant_id, grouped=False)
    grouped = _notices_routed(store, other_tenant_id, grouped=True)

    assert grouped == single
    by_user = {row[0]: row[4:] for row in single}
    assert ("email", "pending", "u0@example.test", None) in [row[:4] for row in by_user["u0"]]
    assert all(channel not in ("email", "slack") for channel, *_ in by_user["u1"])
    assert any(channel == "email_digest" for channel, *_ in by_user["u2"])
    emails = [recipient for channel, _, recipient, *_ in by_user["u3"] if channel == "email"]
    assert emails == ["u3@example.test"]  # the connection's own address before the preferences' one
    assert all(any(channel == "webhook" for channel, *_ in rows) for rows in by_user.values())


def _disconnections_recorded(store: SqlStore, tenant_id: str, *, grouped: bool) -> tuple[object, ...]:
    """Three connections disconnected in one batch, two sharing a workflow, committed one by one or as a
    group: the workflows, the notifications and every outbox row (the webhook's ``workflow.paused`` events
    too), without ids."""
    secret = "whsec_" + "B" * 32
    store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, "https://hooks.example.test/gk", T0, secret=secret
    )
    rows = [
        new_connection("d0", workflows=("shared", "own-0"), next_attempt_at=T0),
        new_connection("d1", workflows=("shared", "own-1"), next_attempt_at=T0),
        new_connection("d2", next_attempt_at=T0),
        new_connection("d3", workflows=("own-3",), next_attempt_at=T0),
    ]
    ids = list(store.import_connections(tenant_id, rows, T0))
    # each its own reason, so a workflow's paused_reason says which connection paused it
    reasons = {
        "d0": DisconnectReason.LOST_ROTATION,
        "d1": DisconnectReason.REAUTH_REQUIRED,
        "d2": DisconnectReason.AUTH_FAILURES,
    }
    claims = sorted(store.claim_ids(tenant_id, ids, T0, "worker", LEASE_TTL), key=lambda c: str(c.user_id))
    earlier = [claim for claim in claims if claim.user_id == "d3"]
    assert store.commit_attempt(disconnection(earlier[0]))  # "own-3" is paused already
    batch = [
        disconnection(
            claim,
            reason=reasons[str(claim.user_id)],
            notify=(Notify(NotificationType.DISCONNECTED, email=True),),
            notifications=(notice(NotificationType.DISCONNECTED, "email"),),
        )
        for claim in claims
        if claim.user_id != "d3"
    ]
    if grouped:
        with captured_sql(store.engine) as sent:
            assert store.commit_attempts(batch) == [True] * 3
        assert sum("INSERT INTO notifications" in statement for statement, _ in sent) == 1  # as a group
        assert sum("FROM workflow_connections" in statement for statement, _ in sent) == 1
    else:
        assert all(store.commit_attempt(commit) for commit in batch)
    flows = sorted((w.name, w.status, w.paused_reason) for w in store.list_workflows(tenant_id))
    users = {claim.connection_id: claim.user_id for claim in claims}
    o = outbox.c
    with store.engine.connect() as connection:
        query = select(o.channel, o.recipient, o.event, o.notification_id.is_(None), o.payload).where(
            o.tenant_id == tenant_id
        )
        deliveries = sorted((*row[:4], _paused_by(row[4], users)) for row in connection.execute(query))
    notices = sorted((n.user_id, n.type) for n in store.list_notifications(tenant_id, 100))
    return flows, deliveries, notices


def _paused_by(payload: object, users: dict[str, str | None]) -> tuple[object, ...] | None:
    """A ``workflow.paused`` event's workflow, reason and connection (by its user, ids differ per tenant)."""
    if not isinstance(payload, dict) or payload.get("type") != "workflow.paused":
        return None
    data = payload["data"]
    return data["name"], data["reason"], users[data["connection_id"]]


def test_grouped_disconnections_pause_and_tell_exactly_as_single_ones(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    """Three disconnections in one batch, two sharing a workflow, beside a workflow paused earlier: the
    group pauses each workflow once, by the first of its connections in the batch and with that one's
    reason, and leaves the earlier pause as it was, as committing them one by one does."""
    single = _disconnections_recorded(store, tenant_id, grouped=False)
    grouped = _disconnections_recorded(store, other_tenant_id, grouped=True)

    assert grouped == single
    flows, deliveries, notices = single
    assert flows == [
        ("own-0", WorkflowStatus.PAUSED, "lost_rotation"),
        ("own-1", WorkflowStatus.PAUSED, "reauth_required"),
        ("own-3", WorkflowStatus.PAUSED, "reauth_required"),
        ("shared", WorkflowStatus.PAUSED, "lost_rotation"),
    ]
    paused_events = sorted(row[4] for row in deliveries if row[2] == "workflow.paused")
    assert paused_events == [
        ("own-0", "lost_rotation", "d0"),
        ("own-1", "reauth_required", "d1"),
        ("own-3", "reauth_required", "d3"),
        ("shared", "lost_rotation", "d0"),  # once, though two of its connections went
    ]
    assert len(notices) == 3


def test_two_groups_pausing_the_same_workflows_at_once_wait_and_never_deadlock(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """Two workers' groups each disconnect a connection of workflow "alpha" and one of "beta", listed in
    opposite orders. Locking each connection's workflows in turn, one group could hold alpha and the other
    beta, each then waiting for the other: a deadlock that PostgreSQL breaks by failing one transaction. A
    group locks all its workflows in one statement, in id order (checked in the SQL sent), so on PostgreSQL
    the second waits for the first (seen waiting on a lock) and then finds nothing left to pause; SQLite has
    one writer at a time, so there the second runs after the first."""
    rows = [
        new_connection(user, workflows=(flow,), next_attempt_at=T0)
        for user, flow in (("a1", "alpha"), ("b1", "beta"), ("b2", "beta"), ("a2", "alpha"))
    ]
    imported = list(store.import_connections(tenant_id, rows, T0))
    ids = {str(c.user_id): c.connection_id for c in store.claim_ids(tenant_id, imported, T0, "w", LEASE_TTL)}
    flows = {w.name: w.workflow_id for w in store.list_workflows(tenant_id)}
    first_group = [(ids[u], DisconnectReason.REAUTH_REQUIRED, T0) for u in ("a1", "b1")]
    second_group = [(ids[u], DisconnectReason.LOST_ROTATION, T0) for u in ("b2", "a2")]
    is_postgresql = store.engine.dialect.name == "postgresql"
    second: dict[str, object] = {}

    def pause_second() -> None:
        try:
            with store.engine.begin() as connection:
                if is_postgresql:
                    connection.exec_driver_sql("SET LOCAL lock_timeout = '20s'")
                second["made"] = pause_linked(connection, second_group)
        except Exception as exc:  # a deadlock or a timeout: the test says which
            second["error"] = exc

    with store.engine.connect() as first, captured_sql(store.engine) as sent:
        first.begin()
        made_first = pause_linked(first, first_group)
        locks = [statement for statement, _ in sent if "FOR UPDATE" in statement]
        if is_postgresql:  # what makes it deadlock-free: every lock in one statement, in id order
            assert len(locks) == 1, locks
            assert "ORDER BY workflows.id" in locks[0], locks[0]
        else:
            first.commit()
        waiter = threading.Thread(target=pause_second)
        waiter.start()
        if is_postgresql:
            assert _waits_on_a_lock(store.engine), "the second group did not wait for the first's locks"
            first.commit()
        waiter.join(30)

    assert "error" not in second, second.get("error")
    assert made_first == {ids["a1"]: [(flows["alpha"], "alpha")], ids["b1"]: [(flows["beta"], "beta")]}
    assert second["made"] == {}  # both paused already, by the first group: no second pause, no event
    reasons = {w.name: (w.status, w.paused_reason) for w in store.list_workflows(tenant_id)}
    assert reasons == {
        "alpha": (WorkflowStatus.PAUSED, "reauth_required"),
        "beta": (WorkflowStatus.PAUSED, "reauth_required"),
    }


def _waits_on_a_lock(engine: Engine, within: float = 10.0) -> bool:
    """Whether another session of this database comes to wait on a lock within ``within`` seconds."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + within
    with engine.connect() as watcher:
        while time.monotonic() < deadline:
            if watcher.execute(query).scalar_one():
                return True
            watcher.rollback()
            time.sleep(0.02)
    return False
