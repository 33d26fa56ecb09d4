"""Rows a dead or cut-off attempt left in flight (both databases): retaken first, on a short lease, and an
answer that outlived its lease still lands while nobody has sent another request (ADR 11)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.engine import plan_on_indexes
from grantkeeper.core.model import ConnectionState, Outcome, OutcomeClass, TokenSet
from grantkeeper.ports import AttemptCommit, ClaimedConnection, ProviderConfig
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, captured_sql, explain, new_connection

ATTEMPT_TTL = timedelta(seconds=25)
RESCUE_TTL = timedelta(seconds=35)
AFTER_DEADLINE = T0 + ATTEMPT_TTL + timedelta(seconds=1)


def _import(store: SqlStore, tenant_id: str, count: int) -> list[str]:
    rows = [new_connection(f"u{i}", next_attempt_at=T0 + timedelta(seconds=i)) for i in range(count)]
    return store.import_connections(tenant_id, rows, T0 - timedelta(hours=1))


def _start(store: SqlStore, claim: ClaimedConnection, at=T0) -> ClaimedConnection:
    """What the start gate does: record the start, and hand back the claim with its attempt lease."""
    starts = store.start_attempts([claim], at, ATTEMPT_TTL)
    assert starts.started == {claim.connection_id}
    return replace(claim, lease_expires_at=starts.lease_expires_at, started_at=starts.started_at)


def _success(claim: ClaimedConnection, refresh_token: str) -> AttemptCommit:
    tokens = TokenSet("at-" + refresh_token, refresh_token, expires_at=T0 + timedelta(hours=1))
    state = ConnectionState(last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0)
    return attempt_commit(claim, Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens), state)


def _stored_refresh_token(store: SqlStore, tenant_id: str, connection_id: str) -> str | None:
    tokens = store.read_tokens(tenant_id, connection_id)
    assert tokens is not None
    return tokens.refresh_token


def test_a_row_left_in_flight_is_retaken_first_and_only_for_the_short_rescue_lease(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = _import(store, tenant_id, 3)
    dead = {
        claim.connection_id: claim
        for claim in store.claim_due(T0 + timedelta(seconds=2), 3, "dead", LEASE_TTL)
    }
    _start(store, dead[ids[2]])  # the newest due: by due time alone it would come last
    store.release(dead[ids[0]])
    store.release(dead[ids[1]])

    retaken = store.claim_due(AFTER_DEADLINE, 10, "w2", LEASE_TTL, rescue_ttl=RESCUE_TTL)

    assert [claim.connection_id for claim in retaken] == [ids[2], ids[0], ids[1]]
    assert retaken[0].state.in_flight_since == T0
    assert retaken[0].lease_expires_at == AFTER_DEADLINE + RESCUE_TTL
    assert {claim.lease_expires_at for claim in retaken[1:]} == {AFTER_DEADLINE + LEASE_TTL}
    # should w2 die before starting it, the retry waits for the rescue lease only, not a whole claim lease
    later = AFTER_DEADLINE + RESCUE_TTL + timedelta(seconds=1)
    third = store.claim_due(later, 10, "w3", LEASE_TTL, rescue_ttl=RESCUE_TTL)
    assert [claim.connection_id for claim in third] == [ids[2]]


def test_a_claim_that_skips_rows_in_flight_leaves_them_to_their_owner(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = _import(store, tenant_id, 2)
    owner = {
        claim.connection_id: claim for claim in store.claim_due(T0 + timedelta(seconds=1), 2, "a", LEASE_TTL)
    }
    _start(store, owner[ids[0]])
    store.release(owner[ids[1]])

    taken = store.claim_due(AFTER_DEADLINE, 10, "b", LEASE_TTL, skip_in_flight=True)

    assert [claim.connection_id for claim in taken] == [ids[1]]


def test_an_answer_that_outlived_its_lease_lands_if_nobody_started_since(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    (connection_id,) = _import(store, tenant_id, 1)
    started = _start(store, store.claim_due(T0, 1, "a", LEASE_TTL)[0])
    # the database was away past the deadline; another worker claimed the row but has not sent anything
    other = store.claim_due(AFTER_DEADLINE, 1, "b", LEASE_TTL, rescue_ttl=RESCUE_TTL)
    assert [claim.connection_id for claim in other] == [connection_id]

    assert store.commit_attempt(_success(started, "rt-from-a"))

    assert _stored_refresh_token(store, tenant_id, connection_id) == "rt-from-a"
    starts = store.start_attempts(other, AFTER_DEADLINE, ATTEMPT_TTL)
    assert starts.lost == {connection_id}  # b's claim is void: it never sends the consumed token


def test_an_answer_that_outlived_its_lease_is_refused_once_another_attempt_started(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    (connection_id,) = _import(store, tenant_id, 1)
    started = _start(store, store.claim_due(T0, 1, "a", LEASE_TTL)[0])
    other = _start(store, store.claim_due(AFTER_DEADLINE, 1, "b", LEASE_TTL)[0], at=AFTER_DEADLINE)

    assert not store.commit_attempt(_success(started, "rt-from-a"))
    assert store.commit_attempt(_success(other, "rt-from-b"))
    assert _stored_refresh_token(store, tenant_id, connection_id) == "rt-from-b"


def test_a_claim_given_back_unsent_does_not_stop_the_late_answer(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    (connection_id,) = _import(store, tenant_id, 1)
    started = _start(store, store.claim_due(T0, 1, "a", LEASE_TTL)[0])
    store.release(store.claim_due(AFTER_DEADLINE, 1, "b", LEASE_TTL)[0])  # b gave it back, unsent

    assert store.commit_attempt(_success(started, "rt-from-a"))
    assert _stored_refresh_token(store, tenant_id, connection_id) == "rt-from-a"


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "single"])
def test_the_late_answer_lands_through_grouped_commits_too_and_only_once(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, grouped: bool
) -> None:
    ids = _import(store, tenant_id, 2)
    claims = store.claim_due(T0 + timedelta(seconds=1), 2, "a", LEASE_TTL)
    late = _start(store, claims[0])
    second = _start(store, claims[1])
    store.claim_due(AFTER_DEADLINE, 10, "b", LEASE_TTL)  # takes both: a's leases ran out
    commits = [_success(late, "rt-late"), _success(second, "rt-second")]

    if grouped:
        committed, _ = store.commit_and_start(commits, [], AFTER_DEADLINE, ATTEMPT_TTL)
    else:
        committed = [store.commit_attempt(commit) for commit in commits]

    assert committed == [True, True]
    assert [_stored_refresh_token(store, tenant_id, i) for i in ids] == ["rt-late", "rt-second"]
    again, _ = store.commit_and_start(commits, [], AFTER_DEADLINE, ATTEMPT_TTL)
    assert again == [False, False]  # the start is no longer the last one recorded: no double write


def test_a_row_left_in_flight_jumps_a_backlog_of_older_due_rows(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """A worker running behind has older due rows than the one whose answer was lost; the rescue must not
    wait behind them, or the provider's grace window closes."""
    ids = _import(store, tenant_id, 6)
    newest = store.claim_due(T0 + timedelta(seconds=5), 6, "dead", LEASE_TTL)
    by_id = {claim.connection_id: claim for claim in newest}
    _start(store, by_id[ids[5]])  # the newest due row's answer is lost
    for connection_id in ids[:5]:
        store.release(by_id[connection_id])

    first = store.claim_due(AFTER_DEADLINE, 2, "w2", LEASE_TTL, rescue_ttl=RESCUE_TTL)

    assert [claim.connection_id for claim in first] == [ids[5], ids[0]]
    assert first[0].lease_expires_at == AFTER_DEADLINE + RESCUE_TTL
    rest = store.claim_due(AFTER_DEADLINE, 10, "w3", LEASE_TTL, rescue_ttl=RESCUE_TTL)
    assert [claim.connection_id for claim in rest] == ids[1:5]


def test_the_rescue_reads_only_the_small_index_of_rows_in_flight_and_the_primary_key(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 300)
    _start(store, store.claim_due(T0 + timedelta(minutes=5), 1, "dead", LEASE_TTL)[0])
    if store.engine.dialect.name == "postgresql":  # what autovacuum does on a real table
        with store.engine.connect() as connection:
            connection.exec_driver_sql("COMMIT")
            connection.exec_driver_sql("ANALYZE connections")
    with captured_sql(store.engine) as sent:
        claimed = store.claim_due(AFTER_DEADLINE, 10, "w1", LEASE_TTL, rescue_ttl=RESCUE_TTL)
    assert claimed[0].state.in_flight_since == T0
    [(ids_sql, ids_parameters)] = [(s, p) for s, p in sent if "ORDER BY in_flight_since LIMIT 1000" in s]
    [(rescue_sql, rescue_parameters)] = [(s, p) for s, p in sent if "rescued_connections" in s]

    ids_plan = explain(store.engine, ids_sql, ids_parameters)
    rescue_plan = explain(store.engine, rescue_sql, rescue_parameters)

    assert "ix_connections_in_flight_since" in ids_plan, ids_plan
    assert "ix_connections_due" not in rescue_plan, rescue_plan
    assert "pk_connections" in rescue_plan or "sqlite_autoindex_connections_1 (id=?)" in rescue_plan, (
        rescue_plan
    )


def test_the_claim_reads_the_rows_in_flight_by_a_plain_index_scan_before_any_analyze(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """ADR 20: the plan the claim really gets, on a table imported in bulk and not analysed yet. Unaided,
    PostgreSQL scans the whole table for the few rows in flight (linear in the table); in the claim's
    transaction (``engine.plan_on_indexes``) it walks the partial index, which a bitmap scan would not do
    either (it revisits the heap for every dead entry). SQLite names the index (``INDEXED BY``)."""
    _import(store, tenant_id, 3000)
    _start(store, store.claim_due(T0 + timedelta(minutes=5), 1, "dead", LEASE_TTL)[0])
    is_postgresql = store.engine.dialect.name == "postgresql"
    with captured_sql(store.engine) as sent:
        claimed = store.claim_due(AFTER_DEADLINE, 10, "w1", LEASE_TTL, rescue_ttl=RESCUE_TTL)
    assert claimed[0].state.in_flight_since == T0
    statements = [statement for statement, _ in sent]
    [(ids_sql, ids_parameters)] = [(s, p) for s, p in sent if "ORDER BY in_flight_since LIMIT 1000" in s]
    settings = [s for s in statements if "enable_seqscan" in s]

    if not is_postgresql:
        assert settings == []
        plan = explain(store.engine, ids_sql, ids_parameters)
        assert "USING INDEX ix_connections_in_flight_since" in plan, plan
        return
    assert len(settings) == 1
    assert "enable_bitmapscan" in settings[0]
    assert statements.index(settings[0]) < statements.index(ids_sql)
    with store.engine.begin() as connection:
        unaided = _plan(connection, ids_sql, ids_parameters)
        plan_on_indexes(connection)
        planned = _plan(connection, ids_sql, ids_parameters)
    assert "Seq Scan on connections" in unaided, unaided  # what the settings are for
    assert "Index Scan using ix_connections_in_flight_since" in planned, planned
    assert "Seq Scan" not in planned, planned
    assert "Bitmap" not in planned, planned
    with store.engine.connect() as connection:  # gone with the claim's transaction
        assert connection.exec_driver_sql("SHOW enable_seqscan").scalar() == "on"
        assert connection.exec_driver_sql("SHOW enable_bitmapscan").scalar() == "on"


def _plan(connection: Connection, statement: str, parameters: Any) -> str:
    rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters).all()
    return "\n".join(str(row[0]) for row in rows)


def test_without_rows_in_flight_a_claim_adds_one_small_index_read(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    _import(store, tenant_id, 5)
    with captured_sql(store.engine) as sent:
        assert (
            len(store.claim_due(T0 + timedelta(minutes=5), 10, "w1", LEASE_TTL, rescue_ttl=RESCUE_TTL)) == 5
        )
    assert not [s for s, _ in sent if "rescued_connections" in s]
