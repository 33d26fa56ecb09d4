"""Pruning old refresh attempts: oldest first, in batches, by primary key, safe to run from two places at once
(both databases)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.tables import refresh_attempts
from grantkeeper.core.model import ConnectionState, Outcome, OutcomeClass, TokenSet
from grantkeeper.ports import ProviderConfig, PruneBatch
from grantkeeper.service.retention import prune_attempts
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, captured_sql, explain, new_connection

KEEP = timedelta(days=30)
CUTOFF = T0 - KEEP
OLD = CUTOFF - timedelta(days=10)


def _import(store: SqlStore, tenant_id: str, count: int) -> list[str]:
    rows = [new_connection(f"u{i}", next_attempt_at=T0) for i in range(count)]
    return store.import_connections(tenant_id, rows, T0 - timedelta(days=60))


def _insert_attempts(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    connection_ids: list[str],
    stamps: list[datetime],
) -> list[int]:
    """Test set-up: one attempt row per stamp, in order (ids grow with it), cycling through the connections;
    returns the new ids. Thousands of rows through the real commit path would take minutes."""
    rows = [
        {
            "connection_id": connection_ids[i % len(connection_ids)],
            "tenant_id": tenant_id,
            "provider_id": provider.provider_id,
            "attempted_at": stamp,
            "outcome": OutcomeClass.SUCCESS.value,
            "http_status": 200,
            "error_code": None,
            "duration_ms": 120,
        }
        for i, stamp in enumerate(stamps)
    ]
    with store.engine.begin() as connection:
        before = connection.scalar(select(func.coalesce(func.max(refresh_attempts.c.id), 0)))
        if rows:
            connection.execute(insert(refresh_attempts), rows)
        return list(
            connection.scalars(
                select(refresh_attempts.c.id)
                .where(refresh_attempts.c.id > before)
                .order_by(refresh_attempts.c.id)
            )
        )


def _old_stamps(count: int) -> list[datetime]:
    return [OLD + timedelta(minutes=i) for i in range(count)]


def _commit_recent_attempts(store: SqlStore, tenant_id: str, connection_ids: list[str]) -> None:
    """One attempt per connection at T0, through the store's real path: claim, then commit."""
    claims = store.claim_due(T0, len(connection_ids), "worker-a", LEASE_TTL, tenant_id)
    assert {claim.connection_id for claim in claims} == set(connection_ids)
    for claim in claims:
        tokens = TokenSet("at-new", "rt-new", expires_at=T0 + timedelta(hours=1))
        state = ConnectionState(last_refreshed_at=T0, expires_at=tokens.expires_at, next_attempt_at=T0)
        outcome = Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens)
        assert store.commit_attempt(attempt_commit(claim, outcome, state, attempted_at=T0))


def _ids(store: SqlStore) -> list[int]:
    with store.engine.connect() as connection:
        return list(connection.scalars(select(refresh_attempts.c.id).order_by(refresh_attempts.c.id)))


def test_old_attempts_go_oldest_first_in_batches_and_recent_history_stays(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    connection_ids = _import(store, tenant_id, 3)
    old_ids = _insert_attempts(store, tenant_id, provider, connection_ids, _old_stamps(25))
    _commit_recent_attempts(store, tenant_id, connection_ids)
    recent_ids = [row_id for row_id in _ids(store) if row_id not in old_ids]
    assert len(recent_ids) == 3

    batches = []
    for expected_left in (old_ids[10:], old_ids[20:], []):
        batches.append(store.prune_refresh_attempts(CUTOFF, batch_size=10))
        assert _ids(store) == expected_left + recent_ids  # the oldest went first

    assert batches == [PruneBatch(10, False), PruneBatch(10, False), PruneBatch(5, True)]
    for connection_id in connection_ids:
        [attempt] = store.attempts_for(connection_id)
        assert (attempt.attempted_at, attempt.outcome) == (T0, OutcomeClass.SUCCESS)
    assert store.prune_refresh_attempts(CUTOFF, batch_size=10) == PruneBatch(0, True)


def test_an_attempt_exactly_at_the_cutoff_stays(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    connection_ids = _import(store, tenant_id, 1)
    _insert_attempts(store, tenant_id, provider, connection_ids, [CUTOFF - timedelta(microseconds=1)])
    at_cutoff = _insert_attempts(store, tenant_id, provider, connection_ids, [CUTOFF])

    assert store.prune_refresh_attempts(CUTOFF) == PruneBatch(1, True)
    assert _ids(store) == at_cutoff


def test_an_empty_table_is_done_at_once(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    assert store.prune_refresh_attempts(CUTOFF, batch_size=10) == PruneBatch(0, True)


def test_a_newer_row_out_of_id_order_stays_and_does_not_stop_the_run(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """A row stamped by a clock running ahead (even far ahead) stays; the old rows after it still go."""
    connection_ids = _import(store, tenant_id, 1)
    stamps = _old_stamps(10)
    stamps[4] = T0 + timedelta(days=3650)  # the fifth row came from a worker whose clock ran far ahead
    ids = _insert_attempts(store, tenant_id, provider, connection_ids, stamps)

    batches = [store.prune_refresh_attempts(CUTOFF, batch_size=3)]
    while not batches[-1].is_done:
        batches.append(store.prune_refresh_attempts(CUTOFF, batch_size=3))

    assert batches == [PruneBatch(3, False), PruneBatch(2, False), PruneBatch(2, False), PruneBatch(2, False),
                       PruneBatch(0, True)]  # fmt: skip
    assert _ids(store) == [ids[4]]


def test_a_batch_reads_the_primary_key_in_order_and_deletes_by_it(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    connection_ids = _import(store, tenant_id, 2)
    _insert_attempts(store, tenant_id, provider, connection_ids, _old_stamps(2000))

    with captured_sql(store.engine) as sent:
        assert store.prune_refresh_attempts(CUTOFF, batch_size=50) == PruneBatch(50, False)
    [(select_sql, select_parameters)] = [(s, p) for s, p in sent if s.lstrip().startswith("SELECT")]
    deletes = [(s, p) for s, p in sent if s.lstrip().startswith("DELETE")]

    plan = explain(store.engine, select_sql, select_parameters)
    assert "TEMP B-TREE" not in plan, plan  # SQLite: a sort
    assert "Sort" not in plan, plan  # PostgreSQL
    assert "Seq Scan" not in plan, plan
    if store.engine.dialect.name == "postgresql":
        assert "pk_refresh_attempts" in plan, plan
        assert "SKIP LOCKED" in select_sql
    assert deletes
    for delete_sql, delete_parameters in deletes:
        plan = explain(store.engine, delete_sql, delete_parameters)
        assert "pk_refresh_attempts" in plan or "INTEGER PRIMARY KEY" in plan, plan


def test_two_prunes_at_once_finish_without_error_and_delete_every_old_row_once(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    connection_ids = _import(store, tenant_id, 20)
    old_ids = _insert_attempts(store, tenant_id, provider, connection_ids, _old_stamps(3000))
    recent_ids = _insert_attempts(store, tenant_id, provider, connection_ids, [T0] * 40)
    barrier = threading.Barrier(2)
    deleted: list[int] = []
    errors: list[BaseException] = []

    def prune() -> None:
        try:
            barrier.wait(timeout=10)
            total = 0
            while True:
                batch = store.prune_refresh_attempts(CUTOFF, batch_size=100)
                total += batch.deleted
                if batch.is_done:
                    break
            deleted.append(total)
        except BaseException as exc:  # reported below, with the other thread's result
            errors.append(exc)

    threads = [threading.Thread(target=prune) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(deleted) == 2
    assert sum(deleted) == len(old_ids)
    # whichever finished first, the other carried on to the end: nothing old is left
    assert _ids(store) == recent_ids
    assert store.prune_refresh_attempts(CUTOFF) == PruneBatch(0, True)


async def test_the_service_prunes_every_old_attempt_batch_after_batch_and_logs_the_count(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, caplog: pytest.LogCaptureFixture
) -> None:
    connection_ids = _import(store, tenant_id, 5)
    old_ids = _insert_attempts(store, tenant_id, provider, connection_ids, _old_stamps(1234))
    _commit_recent_attempts(store, tenant_id, connection_ids)
    batches: list[PruneBatch] = []

    async def counted(call: Callable[[], PruneBatch]) -> PruneBatch:
        batch = await asyncio.to_thread(call)
        batches.append(batch)
        return batch

    caplog.set_level(logging.INFO, logger="grantkeeper.retention")
    total = await prune_attempts(
        store, FrozenClock(T0), KEEP, batch_size=100, pause_seconds=0, run_in_thread=counted
    )

    assert total == len(old_ids)
    assert len(batches) == 13  # twelve full batches, then 34 rows and the recent ones
    assert [batch.is_done for batch in batches] == [False] * 12 + [True]
    assert len(_ids(store)) == len(connection_ids)
    for connection_id in connection_ids:
        assert [a.attempted_at for a in store.attempts_for(connection_id)] == [T0]
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "attempts_pruned"]
    assert record.levelno == logging.INFO
    assert record.deleted == len(old_ids)  # type: ignore[attr-defined]
    assert str(len(old_ids)) in record.getMessage()


async def test_the_service_stops_between_batches_when_told_and_refuses_a_non_positive_window(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    connection_ids = _import(store, tenant_id, 1)
    old_ids = _insert_attempts(store, tenant_id, provider, connection_ids, _old_stamps(30))
    clock = FrozenClock(T0)
    for keep in (timedelta(0), timedelta(days=-1)):
        with pytest.raises(ValueError, match="keep must be positive"):
            await prune_attempts(store, clock, keep)
    assert _ids(store) == old_ids

    stop = asyncio.Event()
    stop.set()
    assert await prune_attempts(store, clock, KEEP, batch_size=10, stop=stop) == 10
    assert _ids(store) == old_ids[10:]
    assert await prune_attempts(store, clock, KEEP, batch_size=10, pause_seconds=0) == 20
    assert _ids(store) == []
