"""Pruning in-app notifications (``GRANTKEEPER_NOTIFICATION_RETENTION_DAYS``): old ones go in batches, every
tenant's, with their finished deliveries; recent ones stay, and so does one whose delivery is pending."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from grantkeeper.adapters.db import SqlStore
from grantkeeper.ports import DeliveryResult, ProviderConfig
from grantkeeper.service.retention import prune_notifications
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import LEASE_TTL, T0, captured_sql, explain
from tests.integration.test_outbox_store import emit

KEEP = timedelta(days=30)
CUTOFF = T0 + KEEP + timedelta(days=1)  # "now" for a prune: T0 is past the retention, T0 + 2 days is not


def users(store: SqlStore, tenant_id: str) -> list[str | None]:
    return sorted(n.user_id for n in store.list_notifications(tenant_id, 1000))


def test_old_notifications_go_with_finished_deliveries_while_recent_and_pending_ones_stay(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    emit(store, tenant_id, "old", T0)
    emit(store, tenant_id, "recent", T0 + timedelta(days=2))
    emit(store, tenant_id, "emailed", T0, "email")
    emit(store, tenant_id, "pending", T0 + timedelta(minutes=1), "email")
    emit(store, other_tenant_id, "elsewhere", T0)
    [emailed] = store.claim_outbox(T0 + timedelta(minutes=10), 1, "dispatcher", LEASE_TTL)
    assert emailed.user_id == "emailed"
    delivered = DeliveryResult(is_delivered=True)
    assert store.record_delivery(emailed, delivered, T0 + timedelta(minutes=10), timedelta(0), None)

    batch = store.prune_notifications(CUTOFF - KEEP)

    assert (batch.deleted, batch.is_done) == (3, True)
    assert users(store, tenant_id) == ["pending", "recent"]
    assert users(store, other_tenant_id) == []
    assert store.outbox_counts(tenant_id) == {"pending": 1, "delivered": 0, "failed": 0}  # went with it
    assert store.list_deliveries(tenant_id) == []


def test_a_prune_goes_in_batches_across_tenants_until_none_is_left(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, other_tenant_id: str
) -> None:
    emit(store, tenant_id, "a", T0, count=5)
    emit(store, other_tenant_id, "b", T0, count=3)
    before = CUTOFF - KEEP

    batches = [store.prune_notifications(before, batch_size=3) for _ in range(4)]

    assert [(b.deleted, b.is_done) for b in batches] == [(3, False), (3, False), (2, True), (0, True)]
    assert users(store, tenant_id) == users(store, other_tenant_id) == []
    with pytest.raises(ValueError, match="batch_size"):
        store.prune_notifications(before, batch_size=0)


async def test_the_service_prunes_every_old_notification_and_logs_the_count(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, caplog: pytest.LogCaptureFixture
) -> None:
    emit(store, tenant_id, "old", T0, count=2500)  # more than one store batch of 1,000
    emit(store, tenant_id, "recent", CUTOFF - timedelta(days=1))
    caplog.set_level(logging.INFO, logger="grantkeeper.retention")

    deleted = await prune_notifications(store, FrozenClock(CUTOFF), KEEP, pause_seconds=0)

    assert deleted == 2500
    assert users(store, tenant_id) == ["recent"]
    [record] = [r for r in caplog.records if getattr(r, "action", None) == "notifications_pruned"]
    assert record.deleted == 2500  # type: ignore[attr-defined]
    for keep in (timedelta(0), timedelta(days=-1)):
        with pytest.raises(ValueError, match="keep must be positive"):
            await prune_notifications(store, FrozenClock(CUTOFF), keep)


def test_a_batch_reads_each_tenant_through_its_index_not_the_table(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    emit(store, tenant_id, "old", T0, "email", count=20)
    with captured_sql(store.engine) as sent:
        store.prune_notifications(CUTOFF - KEEP)
    statement, parameters = next((s, p) for s, p in sent if "FROM notifications" in s and "SELECT" in s)

    plan = explain(store.engine, statement, parameters)

    assert "ix_notifications_tenant_created" in plan, plan
    assert "ix_outbox_notification_id" in plan, plan  # a notification's own deliveries, not every pending row
    for table in ("notifications", "outbox"):
        assert f"SCAN {table}" not in plan, plan
    assert "Seq Scan" not in plan, plan
