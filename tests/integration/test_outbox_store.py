"""The outbox as a work queue: claiming, recording deliveries, fencing, listings (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.core.model import ConnectionState, Outcome
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import DeliveryResult, OutboxItem, ProviderConfig
from grantkeeper.service.retention import prune_deliveries
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import LEASE_TTL, T0, attempt_commit, new_connection, notice, run_claimers

DELIVERED = DeliveryResult(is_delivered=True)
REFUSED = DeliveryResult(is_delivered=False, error="smtp_451")


def emit(store: SqlStore, tenant_id: str, user_id: str, at: datetime, *channels: str, count: int = 1) -> None:
    """One attempt at ``at`` that leaves ``count`` warnings, each with an outbox row per channel."""
    [connection_id] = store.import_connections(tenant_id, [new_connection(user_id)], at)
    [claim] = store.claim_ids(tenant_id, [connection_id], at, "worker", LEASE_TTL)
    commit = attempt_commit(
        claim,
        Outcome(Klass.TRANSIENT, http_status=429),
        ConnectionState(next_attempt_at=at + timedelta(minutes=5)),
        notifications=tuple(notice(Kind.WARNING, *channels) for _ in range(count)),
        attempted_at=at,
    )
    assert store.commit_attempt(commit)


@pytest.fixture
def three_emails(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    for minute in range(3):
        emit(store, tenant_id, f"u{minute}", T0 + timedelta(minutes=minute), "email")


LATER = T0 + timedelta(minutes=10)
#: Notifications are stamped when their attempt finished: ``attempt_commit`` attempts take 120 ms.
ATTEMPT_DURATION = timedelta(milliseconds=120)


def _claim_one(store: SqlStore, owner: str = "d1", now: datetime = LATER) -> OutboxItem:
    [item] = store.claim_outbox(now, 1, owner, LEASE_TTL)
    return item


def test_claim_leases_due_rows_oldest_first_with_their_notification(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    items = store.claim_outbox(LATER, 2, "d1", LEASE_TTL)

    assert [item.user_id for item in items] == ["u0", "u1"]
    first = items[0]
    assert (first.channel, first.tenant_id, first.attempts, first.lease_owner) == (
        "email",
        tenant_id,
        0,
        "d1",
    )
    assert (first.email, first.provider, first.type) == ("u0@example.test", "google", Kind.WARNING)
    assert (first.title, first.message) == (f"{Kind.WARNING.value} title", f"{Kind.WARNING.value} message")
    assert first.metadata["provider"] == "google"
    assert first.connection_id is not None
    assert first.created_at == T0 + ATTEMPT_DURATION
    assert first.idempotency_key == first.outbox_id


def test_a_leased_row_is_claimed_again_only_after_its_lease_expires(
    store: SqlStore, three_emails: None
) -> None:
    assert len(store.claim_outbox(LATER, 10, "d1", LEASE_TTL)) == 3

    assert store.claim_outbox(LATER + LEASE_TTL, 10, "d2", LEASE_TTL) == []
    again = store.claim_outbox(LATER + LEASE_TTL + timedelta(seconds=1), 10, "d2", LEASE_TTL)
    assert [item.lease_owner for item in again] == ["d2"] * 3


def test_rows_not_yet_due_are_not_claimed(store: SqlStore, three_emails: None) -> None:
    first_due_at = T0 + ATTEMPT_DURATION
    assert store.claim_outbox(first_due_at - timedelta(microseconds=1), 10, "d1", LEASE_TTL) == []
    assert len(store.claim_outbox(first_due_at, 10, "d1", LEASE_TTL)) == 1


def test_claim_can_be_limited_to_channels(store: SqlStore, tenant_id: str, provider: ProviderConfig) -> None:
    store.add_destination(tenant_id, DestinationKind.SLACK, "https://hooks.slack.example/T/B/x", T0)
    emit(store, tenant_id, "u1", T0, "email")

    [item] = store.claim_outbox(LATER, 10, "d1", LEASE_TTL, channels=["slack"])

    assert item.channel == "slack"
    assert store.claim_outbox(LATER, 10, "d1", LEASE_TTL, channels=[]) == []


def test_a_delivery_marks_the_row_delivered_and_logs_the_attempt(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    item = _claim_one(store)

    assert store.record_delivery(item, DELIVERED, LATER, timedelta(milliseconds=42), None)

    [record] = store.list_outbox(item.notification_id)
    assert (record.status, record.attempts) == ("delivered", 1)
    [delivery] = store.list_deliveries(tenant_id)
    assert (delivery.outbox_id, delivery.channel, delivery.is_delivered) == (item.outbox_id, "email", True)
    assert (delivery.attempted_at, delivery.duration, delivery.error) == (
        LATER,
        timedelta(milliseconds=42),
        None,
    )
    assert store.outbox_counts(tenant_id) == {"pending": 2, "delivered": 1, "failed": 0}
    far = LATER + timedelta(days=1)
    assert item.outbox_id not in {
        claimed.outbox_id for claimed in store.claim_outbox(far, 10, "d2", LEASE_TTL)
    }


def test_a_retryable_failure_keeps_the_row_pending_until_its_next_attempt(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    item = _claim_one(store)
    retry_at = LATER + timedelta(minutes=30)

    assert store.record_delivery(item, REFUSED, LATER, timedelta(0), retry_at)

    [record] = store.list_outbox(item.notification_id)
    assert (record.status, record.attempts, record.next_attempt_at) == ("pending", 1, retry_at)
    pending_ids = {claimed.outbox_id for claimed in store.claim_outbox(LATER, 10, "d2", LEASE_TTL)}
    assert item.outbox_id not in pending_ids
    retried = {claimed.outbox_id: claimed for claimed in store.claim_outbox(retry_at, 10, "d3", LEASE_TTL)}
    assert retried[item.outbox_id].attempts == 1
    [delivery] = store.list_deliveries(tenant_id)
    assert (delivery.is_delivered, delivery.error) == (False, "smtp_451")


def test_a_failure_without_a_next_attempt_fails_the_row(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    item = _claim_one(store)

    assert store.record_delivery(item, REFUSED, LATER, timedelta(0), None)

    assert store.list_outbox(item.notification_id)[0].status == "failed"
    assert store.outbox_counts(tenant_id) == {"pending": 2, "delivered": 0, "failed": 1}


def test_a_long_error_is_cut_short(store: SqlStore, tenant_id: str, three_emails: None) -> None:
    item = _claim_one(store)

    assert store.record_delivery(item, DeliveryResult(False, "x" * 5000), LATER, timedelta(0), None)

    assert store.list_deliveries(tenant_id)[0].error == "x" * 200


def test_a_dispatcher_that_lost_its_lease_records_nothing(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    stale = _claim_one(store, "d1")
    after_expiry = LATER + LEASE_TTL + timedelta(seconds=1)
    current = _claim_one(store, "d2", after_expiry)
    assert current.outbox_id == stale.outbox_id

    assert not store.record_delivery(stale, DELIVERED, after_expiry, timedelta(0), None)
    assert store.list_deliveries(tenant_id) == []
    assert store.list_outbox(stale.notification_id)[0].status == "pending"

    assert store.record_delivery(current, DELIVERED, after_expiry, timedelta(0), None)
    assert not store.record_delivery(current, DELIVERED, after_expiry, timedelta(0), None)  # only once
    assert len(store.list_deliveries(tenant_id)) == 1


def test_deliveries_and_counts_are_scoped_to_the_tenant(
    store: SqlStore, tenant_id: str, other_tenant_id: str, three_emails: None
) -> None:
    emit(store, other_tenant_id, "theirs", T0, "email")
    for item in store.claim_outbox(LATER, 10, "d1", LEASE_TTL):
        assert store.record_delivery(item, DELIVERED, LATER, timedelta(0), None)

    assert store.outbox_counts(tenant_id) == {"pending": 0, "delivered": 3, "failed": 0}
    assert store.outbox_counts(other_tenant_id) == {"pending": 0, "delivered": 1, "failed": 0}
    assert len(store.list_deliveries(tenant_id)) == 3
    [theirs] = store.list_deliveries(other_tenant_id)
    assert len(store.list_deliveries(tenant_id, limit=2)) == 2
    assert theirs.outbox_id not in {d.outbox_id for d in store.list_deliveries(tenant_id)}


def test_deliveries_are_listed_newest_first(store: SqlStore, tenant_id: str, three_emails: None) -> None:
    for minute, item in enumerate(store.claim_outbox(LATER, 10, "d1", LEASE_TTL)):
        attempted_at = LATER + timedelta(minutes=minute)
        assert store.record_delivery(item, DELIVERED, attempted_at, timedelta(0), None)

    listed = [delivery.attempted_at for delivery in store.list_deliveries(tenant_id)]
    assert listed == sorted(listed, reverse=True)


def test_threads_claiming_at_once_never_share_an_outbox_row(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    emit(store, tenant_id, "u1", T0, "email", count=300)
    barrier = threading.Barrier(4)
    claimed: list[list[str]] = [[] for _ in range(4)]

    def work(slot: int) -> None:
        barrier.wait()
        while batch := store.claim_outbox(LATER, 7, f"thread-{slot}", LEASE_TTL):
            claimed[slot].extend(item.outbox_id for item in batch)
            time.sleep(0.001)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    every_claim = [outbox_id for per_thread in claimed for outbox_id in per_thread]
    assert len(every_claim) == len(set(every_claim)) == 300
    assert sum(1 for per_thread in claimed if per_thread) > 1


def _claim_until_empty(url: str, key_line: str, slot: int, barrier: Any, results: Any) -> None:
    """One dispatcher process: its own engine, claiming small batches until nothing is due."""
    engine = make_engine(url)
    store = SqlStore(engine, Keyring.parse(key_line), create_schema=False)
    mine: list[str] = []
    barrier.wait()
    while batch := store.claim_outbox(LATER, 25, f"process-{slot}", LEASE_TTL):
        mine.extend(item.outbox_id for item in batch)
        # leave the write lock free long enough for a rival's busy handler, which polls at growing intervals
        # (1, 2, 5, 10 ms...), to find it free: with 1 ms, one process of a loaded machine once took all 40
        time.sleep(0.005)
    engine.dispose()
    results.put(mine)


@pytest.mark.slow
def test_processes_claiming_at_once_never_share_an_outbox_row(
    database_url: str, key_line: str, store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    emit(store, tenant_id, "u1", T0, "email", count=1000)
    claimed = run_claimers(_claim_until_empty, database_url, key_line)
    every_claim = [outbox_id for per_process in claimed for outbox_id in per_process]
    assert len(every_claim) == len(set(every_claim)) == 1000
    assert sum(1 for per_process in claimed if per_process) > 1


async def test_finished_deliveries_are_pruned_with_their_attempts_and_pending_ones_stay(
    store: SqlStore, tenant_id: str, three_emails: None
) -> None:
    """Retention (``GRANTKEEPER_ATTEMPT_RETENTION_DAYS``) covers deliveries too: delivered and failed rows
    older than the cutoff go with their delivery attempts, in batches; a pending row stays however old it
    is, and so do the in-app notifications."""
    delivered, failed = _claim_one(store, "d1"), _claim_one(store, "d2")
    assert store.record_delivery(delivered, DELIVERED, LATER, timedelta(0), None)
    assert store.record_delivery(failed, REFUSED, LATER, timedelta(0), None)
    notifications_before = len(store.list_notifications(tenant_id))
    keep = timedelta(days=30)

    assert store.prune_finished_outbox(T0).deleted == 0  # a cutoff before they finished: nothing goes
    clock = FrozenClock(T0 + keep + timedelta(days=1))
    assert await prune_deliveries(store, clock, keep) == 2

    assert store.outbox_counts(tenant_id) == {"pending": 1, "delivered": 0, "failed": 0}
    assert store.list_deliveries(tenant_id) == []
    assert len(store.list_notifications(tenant_id)) == notifications_before
    batch = store.prune_finished_outbox(clock.now(), batch_size=1)
    assert (batch.deleted, batch.is_done) == (0, True)
