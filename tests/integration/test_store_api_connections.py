"""The store for the HTTP API, part 2: keyset pages of connections, deletion, lease holders (both DBs)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import connections, refresh_attempts, workflow_connections
from grantkeeper.core.model import ConnectionStatus, NotificationType, Outcome, OutcomeClass
from grantkeeper.ports import ConnectionRecord, ProviderConfig, WorkflowStatus
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

NEEDS_REAUTH = ConnectionStatus.NEEDS_REAUTHORIZATION
REVOKED = ConnectionStatus.REVOKED
TRANSIENT = Outcome(OutcomeClass.TRANSIENT, http_status=503)


@dataclass(frozen=True)
class Row:
    """What the test knows of each imported connection, to compute every filter's expected rows."""

    connection_id: str
    provider: str
    user_id: str
    status: ConnectionStatus


def _walk(
    store: SqlStore,
    tenant_id: str,
    limit: int,
    *,
    status: ConnectionStatus | None = None,
    provider: str | None = None,
    user_id: str | None = None,
    after: str | None = None,
) -> Iterator[list[ConnectionRecord]]:
    """Every page of a listing, following ``after`` until the store says there is no next page."""
    while True:
        page, after = store.list_connections_page(
            tenant_id, status=status, provider=provider, user_id=user_id, after=after, limit=limit
        )
        yield page
        if after is None:
            return
        assert page, "a page that promises a next page must not be empty"
        assert after == page[-1].connection_id


def _set_status(store: SqlStore, connection_ids: list[str], status: ConnectionStatus) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(connections).where(connections.c.id.in_(connection_ids)).values(status=status.value)
        )


@pytest.fixture
def population(store: SqlStore, tenant_id: str, other_tenant_id: str) -> list[Row]:
    """2,400 connections of one tenant over three providers, 40 users and every status, and 600 of another
    tenant with the same provider and user names, so a filter that forgets the tenant shows."""
    for name in ("google", "slack", "github"):
        store.add_provider(tenant_id, new_provider(name))
    store.add_provider(other_tenant_id, new_provider("slack"))
    providers = ["google", "google", "slack", "github"]
    lines = [new_connection(f"user-{i % 40}", provider=providers[i % 4]) for i in range(2400)]
    ids = store.import_connections(tenant_id, lines, T0)
    theirs = [new_connection(f"user-{i % 40}", provider=("google", "slack")[i % 2]) for i in range(600)]
    store.import_connections(other_tenant_id, theirs, T0)
    statuses = [ConnectionStatus.CONNECTED] * 5 + [NEEDS_REAUTH, NEEDS_REAUTH, REVOKED]
    rows = [
        Row(connection_id, line.provider, line.user_id, statuses[i % len(statuses)])
        for i, (connection_id, line) in enumerate(zip(ids, lines, strict=True))
    ]
    for status in (NEEDS_REAUTH, REVOKED):
        _set_status(store, [row.connection_id for row in rows if row.status is status], status)
    return rows


# Pagination


def test_pages_walk_every_matching_row_exactly_once_in_id_order_under_every_filter(
    store: SqlStore, tenant_id: str, population: list[Row]
) -> None:
    statuses = [None, *ConnectionStatus]
    providers = [None, "google", "slack", "github", "dropbox"]
    users = [None, "user-3", "user-39", "nobody"]

    for status, provider, user_id in itertools.product(statuses, providers, users):
        expected = sorted(
            row.connection_id
            for row in population
            if (status is None or row.status is status)
            and (provider is None or row.provider == provider)
            and (user_id is None or row.user_id == user_id)
        )
        limit = 97 if user_id is None else 4
        pages = list(_walk(store, tenant_id, limit, status=status, provider=provider, user_id=user_id))
        walked = [record.connection_id for page in pages for record in page]

        assert walked == expected, (status, provider, user_id)
        assert all(len(page) == limit for page in pages[:-1])
        assert len(pages) == max(1, -(-len(expected) // limit))


def test_page_records_carry_provider_name_and_state_but_never_tokens(
    store: SqlStore, tenant_id: str, population: list[Row]
) -> None:
    page, _ = store.list_connections_page(tenant_id, provider="slack", status=NEEDS_REAUTH, limit=5)

    assert [record.provider for record in page] == ["slack"] * 5
    assert all(record.state.status is NEEDS_REAUTH and record.tenant_id == tenant_id for record in page)
    assert "rt-plain" not in repr(page)
    assert "at-plain" not in repr(page)


def test_the_last_page_has_no_next_cursor_even_when_it_is_full(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = sorted(store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(6)], T0))

    first, after = store.list_connections_page(tenant_id, limit=3)
    second, last = store.list_connections_page(tenant_id, after=after, limit=3)

    assert [r.connection_id for r in first + second] == ids
    assert after == ids[2]
    assert last is None
    assert store.list_connections_page(tenant_id, after=ids[-1]) == ([], None)


def test_a_cursor_pointing_at_a_deleted_row_continues_after_it(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = sorted(store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(9)], T0))
    _, after = store.list_connections_page(tenant_id, limit=3)
    assert after == ids[2]

    assert store.delete_connection(tenant_id, ids[2])
    assert store.delete_connection(tenant_id, ids[3])
    rest = [r.connection_id for page in _walk(store, tenant_id, 3, after=after) for r in page]

    assert rest == ids[4:]


def test_an_unknown_provider_name_matches_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    store.import_connections(tenant_id, [new_connection("u1")], T0)
    store.add_provider(other_tenant_id, new_provider("slack"))
    store.import_connections(other_tenant_id, [new_connection("u1", provider="slack")], T0)

    assert store.list_connections_page(tenant_id, provider="dropbox") == ([], None)
    assert store.list_connections_page(tenant_id, provider="slack") == ([], None)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(store: SqlStore, tenant_id: str, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_connections_page(tenant_id, limit=limit)


def test_pages_never_show_another_tenants_connections(
    store: SqlStore, tenant_id: str, population: list[Row], other_tenant_id: str
) -> None:
    theirs = [r for page in _walk(store, other_tenant_id, 500) for r in page]
    ours = {row.connection_id for row in population}

    assert len(theirs) == 600
    assert all(record.tenant_id == other_tenant_id for record in theirs)
    assert not ours & {record.connection_id for record in theirs}
    page, _ = store.list_connections_page(other_tenant_id, user_id="user-3", after=min(ours), limit=500)
    assert all(record.tenant_id == other_tenant_id for record in page)


@pytest.mark.parametrize(
    ("status", "provider", "user_id", "index"),
    [
        (None, None, None, "ix_connections_tenant_page"),
        (NEEDS_REAUTH, None, None, "ix_connections_tenant_status_page"),
        (None, "slack", None, "ix_connections_tenant_provider_page"),
        (None, None, "user-3", "ix_connections_tenant_user_page"),
    ],
)
def test_each_filter_finds_its_rows_through_a_tenant_index_not_a_table_scan(
    store: SqlStore,
    tenant_id: str,
    population: list[Row],
    status: ConnectionStatus | None,
    provider: str | None,
    user_id: str | None,
    index: str,
) -> None:
    """SQLite plans by rule: the filter's page index, read in id order, no sort. PostgreSQL plans by cost and,
    on a table this small, may sort a few hundred matches rather than read them in index order; the check
    there is that it never scans the table."""
    with store.engine.connect() as connection:  # a fresh table has no statistics until autovacuum runs
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    for after in (None, sorted(row.connection_id for row in population)[1200]):
        with captured_sql(store.engine) as sent:
            store.list_connections_page(
                tenant_id, status=status, provider=provider, user_id=user_id, after=after
            )
        [(statement, parameters)] = [(s, p) for s, p in sent if "FROM connections" in s]
        plan = explain(store.engine, statement, parameters, allow_seqscan=True)

        assert "con_" not in statement, "the cursor must be a bound parameter"
        if store.engine.dialect.name == "sqlite":
            assert f"SEARCH connections USING INDEX {index} (tenant_id=?" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            assert "Seq Scan on connections" not in plan, plan
            # an index either way: the filter's own, or (the tenant being the only one here) the primary key,
            # which yields rows in id order so the LIMIT stops after one page
            indexed = (" on ix_connections_", " using ix_connections_", "using pk_connections")
            assert any(name in plan for name in indexed), plan


@pytest.mark.slow
def test_a_page_of_10000_rows_filtered_takes_milliseconds(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.add_provider(tenant_id, new_provider("slack"))
    lines = [new_connection(f"u{i}", provider=("google", "slack")[i % 2]) for i in range(10_000)]
    store.import_connections(tenant_id, lines, T0)

    started = time.perf_counter()
    pages = list(_walk(store, tenant_id, 100, provider="slack", status=ConnectionStatus.CONNECTED))
    elapsed = time.perf_counter() - started

    assert sum(len(page) for page in pages) == 5000
    assert elapsed / len(pages) < 0.05, f"{elapsed / len(pages) * 1000:.1f} ms per page"


# Deletion


def _rows_referencing(store: SqlStore, connection_id: str) -> tuple[int, int]:
    """Workflow links and refresh attempts still pointing at a connection."""
    with store.engine.connect() as connection:
        return (
            connection.execute(
                select(func.count()).where(workflow_connections.c.connection_id == connection_id)
            ).scalar_one(),
            connection.execute(
                select(func.count()).where(refresh_attempts.c.connection_id == connection_id)
            ).scalar_one(),
        )


def test_delete_removes_the_connection_its_tokens_attempts_and_links(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    gone, kept = store.import_connections(
        tenant_id, [new_connection("u1", workflows=("sync",)), new_connection("u2", workflows=("sync",))], T0
    )
    [claim] = store.claim_ids(tenant_id, [gone], T0, "worker", LEASE_TTL)
    assert store.commit_attempt(attempt_commit(claim, TRANSIENT, claim.state))
    assert _rows_referencing(store, gone) == (1, 1)

    assert store.delete_connection(tenant_id, gone)

    assert store.get_connection(tenant_id, gone) is None
    assert store.read_tokens(tenant_id, gone) is None
    assert _rows_referencing(store, gone) == (0, 0)
    [workflow] = store.list_workflows(tenant_id)
    assert workflow.connection_ids == (kept,)
    assert store.get_connection(tenant_id, kept) is not None


def test_delete_keeps_the_notifications_without_their_connection(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    disconnect(store, tenant_id, connection_id, notifications=(notice(NotificationType.DISCONNECTED),))

    assert store.delete_connection(tenant_id, connection_id)

    [notification] = store.list_notifications(tenant_id)
    assert notification.connection_id is None
    assert notification.type is NotificationType.DISCONNECTED
    assert notification.user_id == "user-1"


def test_delete_resumes_a_workflow_only_the_deleted_connection_kept_paused(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    lines = [
        new_connection("u1", workflows=("alone", "shared")),
        new_connection("u2", workflows=("shared",)),
    ]
    first, second = store.import_connections(tenant_id, lines, T0)
    disconnect(store, tenant_id, first)
    disconnect(store, tenant_id, second, at=T0 + timedelta(minutes=1))

    assert store.delete_connection(tenant_id, first)

    statuses = {w.name: w.status for w in store.list_workflows(tenant_id)}
    assert statuses == {"alone": WorkflowStatus.ACTIVE, "shared": WorkflowStatus.PAUSED}


def test_delete_of_an_unknown_or_foreign_connection_returns_false_and_deletes_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    [theirs] = store.import_connections(other_tenant_id, [new_connection()], T0)

    assert not store.delete_connection(tenant_id, theirs)
    assert not store.delete_connection(tenant_id, "con_00000000000000000000")
    assert store.get_connection(other_tenant_id, theirs) is not None
    assert store.read_tokens(other_tenant_id, theirs) is not None
    assert store.read_tokens(tenant_id, theirs) is None


def test_delete_twice_returns_false_the_second_time(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)

    assert store.delete_connection(tenant_id, connection_id)
    assert not store.delete_connection(tenant_id, connection_id)


def test_an_attempt_in_flight_when_its_connection_is_deleted_commits_nothing(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    [claim] = store.claim_ids(tenant_id, [connection_id], T0, "worker", LEASE_TTL)

    assert store.delete_connection(tenant_id, connection_id)

    assert not store.commit_attempt(attempt_commit(claim, TRANSIENT, claim.state))
    assert store.attempts_for(connection_id) == []


# Lease holders


def test_lease_holder_names_the_owner_of_a_live_lease(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    [connection_id] = store.import_connections(tenant_id, [new_connection()], T0)
    assert store.lease_holder(tenant_id, connection_id, T0) is None

    [claim] = store.claim_ids(tenant_id, [connection_id], T0, "worker-7", LEASE_TTL)

    assert store.lease_holder(tenant_id, connection_id, T0) == "worker-7"
    assert store.lease_holder(tenant_id, connection_id, T0 + LEASE_TTL) == "worker-7"
    assert store.lease_holder(tenant_id, connection_id, T0 + LEASE_TTL + timedelta(seconds=1)) is None
    store.release(claim)
    assert store.lease_holder(tenant_id, connection_id, T0) is None


def test_lease_holder_never_reports_another_tenants_lease(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    [theirs] = store.import_connections(other_tenant_id, [new_connection()], T0)
    store.claim_ids(other_tenant_id, [theirs], T0, "their-worker", LEASE_TTL)

    assert store.lease_holder(tenant_id, theirs, T0) is None
    assert store.lease_holder(other_tenant_id, theirs, T0) == "their-worker"
    assert store.lease_holder(tenant_id, "con_00000000000000000000", T0) is None
