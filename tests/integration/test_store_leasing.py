"""The work queue under load: the due query's plan, and exclusive leases across threads and processes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.ports import ProviderConfig
from tests.fixtures.db import LEASE_TTL, T0, captured_sql, new_connection, run_claimers


def _plan_of_claim_due(store: SqlStore) -> str:
    with captured_sql(store.engine) as sent:
        store.claim_due(T0, 50, "explainer", LEASE_TTL)
    statement, parameters = next((s, p) for s, p in sent if "AS due_connections" in s)
    prefix = "EXPLAIN QUERY PLAN " if store.engine.dialect.name == "sqlite" else "EXPLAIN "
    with store.engine.begin() as connection:
        rows = connection.exec_driver_sql(prefix + statement, parameters).all()
    return "\n".join(str(row[-1]) for row in rows)


def test_due_connections_are_found_through_the_due_index(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    rows = [
        new_connection(f"later{i}", next_attempt_at=T0 + timedelta(hours=1 + i % 90)) for i in range(3000)
    ]
    rows += [new_connection(f"due{i}", next_attempt_at=T0 - timedelta(minutes=i)) for i in range(30)]
    store.import_connections(tenant_id, rows, T0 - timedelta(days=1))
    with store.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")

    plan = _plan_of_claim_due(store)

    if store.engine.dialect.name == "sqlite":
        due_index = "SEARCH due_connections USING INDEX ix_connections_due (status=? AND next_attempt_at<?)"
        assert due_index in plan, plan
        assert "SEARCH connections USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan  # no second index
    else:  # the pick (Index or Bitmap Index Scan), run once, then straight to the rows by address
        assert "ix_connections_due on connections due_connections" in plan, plan
        assert "Seq Scan" not in plan, plan
        assert "Tid Scan on connections" in plan, plan


def test_threads_claiming_at_once_never_share_a_connection(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(600)], T0)
    barrier = threading.Barrier(4)
    claimed: list[list[str]] = [[] for _ in range(4)]

    def work(slot: int) -> None:
        barrier.wait()
        while batch := store.claim_due(T0, 7, f"thread-{slot}", LEASE_TTL):
            claimed[slot].extend(claim.connection_id for claim in batch)
            time.sleep(0.001)  # the refresh itself; without any work one thread may win every race

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every_claim = [connection_id for per_thread in claimed for connection_id in per_thread]
    assert sorted(every_claim) == sorted(ids)  # each exactly once
    assert sum(1 for per_thread in claimed if per_thread) > 1  # they really competed


def _claim_until_empty(url: str, key_line: str, slot: int, barrier: Any, results: Any) -> None:
    """One worker process: its own engine, claiming small batches until nothing is due."""
    engine = make_engine(url)
    store = SqlStore(engine, Keyring.parse(key_line), create_schema=False)
    mine: list[str] = []
    barrier.wait()
    while batch := store.claim_due(T0, 25, f"process-{slot}", LEASE_TTL):
        mine.extend(claim.connection_id for claim in batch)
        time.sleep(0.001)
    engine.dispose()
    results.put(mine)


@pytest.mark.slow
def test_processes_claiming_at_once_never_share_a_connection(
    database_url: str, key_line: str, store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    ids = store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(3000)], T0)
    claimed = run_claimers(_claim_until_empty, database_url, key_line)
    every_claim = [connection_id for per_process in claimed for connection_id in per_process]
    assert len(every_claim) == len(set(every_claim)) == 3000
    assert set(every_claim) == set(ids)
    assert sum(1 for per_process in claimed if per_process) > 1


@pytest.mark.slow
def test_claiming_10000_connections_in_batches_of_200_takes_seconds(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    store.import_connections(tenant_id, [new_connection(f"u{i}") for i in range(10_000)], T0)

    started = time.perf_counter()
    batches = 0
    while batch := store.claim_due(T0, 200, "worker", LEASE_TTL):
        assert len(batch) <= 200
        batches += 1
    elapsed = time.perf_counter() - started

    assert batches == 50
    assert elapsed < 10, f"claiming 10,000 took {elapsed:.1f}s"


def test_only_the_claim_commits_without_waiting_for_the_disk(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    """ADR 18: on PostgreSQL the claim's transaction alone sets ``synchronous_commit = off``, for itself only
    (``SET LOCAL``); the start that must be durable before a request leaves, and the commit that stores a
    rotated token, wait for the disk as always. SQLite has nothing to set."""
    store.import_connections(tenant_id, [new_connection("u1")], T0 - timedelta(hours=1))
    is_postgresql = store.engine.dialect.name == "postgresql"

    with captured_sql(store.engine) as claim_sent:
        (claim,) = store.claim_due(T0, 10, "w1", LEASE_TTL)
    with captured_sql(store.engine) as start_sent:
        assert store.start_attempts([claim], T0, timedelta(seconds=30)).started == {claim.connection_id}

    settings = [s for s, _ in claim_sent if "synchronous_commit" in s]
    assert settings == (["SET LOCAL synchronous_commit = off"] if is_postgresql else [])
    if is_postgresql:  # set first, before the claim's statements
        assert claim_sent[0][0] == "SET LOCAL synchronous_commit = off"
    assert not [s for s, _ in start_sent if "synchronous_commit" in s]
    if is_postgresql:  # and gone with the transaction: the pooled connection commits durably again
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
