"""Grouped commits (both databases): many attempts in one transaction, each still fenced on its own lease."""

from __future__ import annotations

import re
from datetime import timedelta

from grantkeeper.adapters.db import SqlStore
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    NotificationType,
    Notify,
    Outcome,
    OutcomeClass,
    TokenSet,
)
from grantkeeper.ports import ClaimedConnection, ProviderConfig
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, captured_sql, new_connection, notice

SHORT_LEASE = timedelta(seconds=5)


def _success(claim: ClaimedConnection):
    tokens = TokenSet(f"at-{claim.user_id}-2", f"rt-{claim.user_id}-2", expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0)
    return attempt_commit(claim, Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens), state)


def test_a_group_with_one_lost_lease_commits_the_others_and_reports_exactly_which(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection(f"u{i}", next_attempt_at=T0) for i in range(5)], T0)
    claims = store.claim_due(T0, 5, "slow-worker", SHORT_LEASE)
    stolen = claims[2]
    # the slow worker's lease on one row ran out and another worker took it
    thief = store.claim_ids(tenant_id, [stolen.connection_id], T0 + timedelta(seconds=6), "thief", LEASE_TTL)

    answers = store.commit_attempts([_success(claim) for claim in claims])

    assert answers == [True, True, False, True, True]
    for claim in claims:
        tokens = store.read_tokens(tenant_id, claim.connection_id)
        assert tokens is not None
        expected = f"rt-plain-{claim.user_id}" if claim is stolen else f"rt-{claim.user_id}-2"
        assert tokens.refresh_token == expected
        assert len(store.attempts_for(claim.connection_id)) == (0 if claim is stolen else 1)
    assert store.commit_attempt(_success(thief[0]))  # the thief's lease is intact


def test_attempts_with_notifications_and_plain_ones_commit_together(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection(f"u{i}", next_attempt_at=T0) for i in range(4)], T0)
    claims = store.claim_due(T0, 4, "w", LEASE_TTL)
    warned = ConnectionState(consecutive_failures=2, warning_sent=True, next_attempt_at=T0)
    warning = attempt_commit(
        claims[0],
        Outcome(OutcomeClass.AUTH, 400),
        warned,
        effects=(Notify(NotificationType.WARNING, email=False),),
        notifications=(notice(NotificationType.WARNING),),
    )
    transient = attempt_commit(
        claims[1], Outcome(OutcomeClass.TRANSIENT, 503), ConnectionState(consecutive_transient_failures=1)
    )

    answers = store.commit_attempts([warning, transient, _success(claims[2]), _success(claims[3])])

    assert answers == [True, True, True, True]
    notes = store.list_notifications(tenant_id)
    assert [(n.connection_id, n.type) for n in notes] == [(claims[0].connection_id, NotificationType.WARNING)]
    by_id = {record.connection_id: record for record in store.list_connections(tenant_id)}
    assert by_id[claims[0].connection_id].state.consecutive_failures == 2
    assert by_id[claims[1].connection_id].state.consecutive_transient_failures == 1
    assert by_id[claims[2].connection_id].state.last_refreshed_at == T0


def test_an_empty_group_commits_nothing(store: SqlStore) -> None:
    assert store.commit_attempts([]) == []


def test_status_is_written_only_when_it_changes(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """SQLite rewrites every index holding a column the UPDATE sets, changed or not: a plain success leaves
    ``status`` out of its statement (its cost, ``docs/benchmarks.md``), and a change of status is still
    stored, whichever path (grouped or single) commits it."""
    store.import_connections(tenant_id, [new_connection(f"u{i}", next_attempt_at=T0) for i in range(3)], T0)
    claims = store.claim_due(T0, 3, "w", LEASE_TTL)
    disconnected = ConnectionState(
        status=ConnectionStatus.NEEDS_REAUTHORIZATION,
        consecutive_failures=1,
        disconnect_reason=DisconnectReason.AUTH_FAILURES,
    )
    with captured_sql(store.engine) as sent:
        answers = store.commit_attempts(
            [
                _success(claims[0]),
                attempt_commit(claims[1], Outcome(OutcomeClass.AUTH, 400), disconnected),
            ]
        )
        assert store.commit_attempt(attempt_commit(claims[2], Outcome(OutcomeClass.AUTH, 400), disconnected))
    statements = [s for s, _ in sent if s.lstrip().upper().startswith("UPDATE CONNECTIONS")]

    assert answers == [True, True]
    with_status = [s for s in statements if re.search(r"\bstatus\s*=", s.split("WHERE")[0])]
    assert len(statements) == 3, statements
    assert len(with_status) == 2, statements
    by_id = {record.connection_id: record for record in store.list_connections(tenant_id)}
    assert by_id[claims[0].connection_id].state.status is ConnectionStatus.CONNECTED
    assert by_id[claims[0].connection_id].state.last_refreshed_at == T0
    for claim in claims[1:]:
        state = by_id[claim.connection_id].state
        assert state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
        assert state.disconnect_reason is DisconnectReason.AUTH_FAILURES
