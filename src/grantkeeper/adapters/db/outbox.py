"""The outbox as a work queue: a lease per delivery attempt, so no notification is sent twice at once.

Claiming follows ``leases``: one ``WITH due AS MATERIALIZED (SELECT id ... LIMIT n FOR UPDATE SKIP LOCKED)
UPDATE ... FROM due RETURNING`` statement, so concurrent dispatchers on PostgreSQL split the due rows and a
row leased meanwhile is skipped, never taken twice; on SQLite the claim runs under ``BEGIN IMMEDIATE``.
Recording a result is fenced on ``lease_owner`` and ``attempts``: a dispatcher whose lease ran out and was
taken over writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CTE, ColumnElement, Connection, Row, and_, func, or_, select, update

from grantkeeper.adapters.db.leases import Lease
from grantkeeper.adapters.db.tables import connections, delivery_attempts, notifications, outbox
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import DeliveryAttemptRecord, DeliveryResult, OutboxItem

_o = outbox.c
_n = notifications.c
_d = delivery_attempts.c
STATUSES = ("pending", "delivered", "failed")
#: ``delivery_attempts.error`` and ``outbox.last_error`` keep this many characters of a sender's reason.
MAX_ERROR_LENGTH = 200
_NOTIFICATION_COLUMNS = (
    _n.tenant_id,
    _n.connection_id,
    _n.user_id,
    _n.type,
    _n.title,
    _n.message,
    _n.metadata,
    _n.created_at.label("notified_at"),
)


def is_due(now: datetime) -> ColumnElement[bool]:
    """Pending, due, and not leased (never, released, or the lease ran out); ``ix_outbox_due`` serves it."""
    is_unleased = or_(_o.lease_expires_at.is_(None), _o.lease_expires_at < now)
    return and_(_o.status == "pending", _o.next_attempt_at <= now, is_unleased)


def claim_outbox(
    connection: Connection, lease: Lease, limit: int, channels: Sequence[str] | None
) -> list[OutboxItem]:
    """Lease up to ``limit`` due rows, oldest first, with their notification and the connection's email."""
    due = _due_ids(lease.now, limit, channels)
    statement = (
        update(outbox)
        .where(_o.id == due.c.id)
        .values(lease_owner=lease.owner, lease_expires_at=lease.expires_at)
        .returning(_o.id)
    )
    leased = list(connection.scalars(statement))
    if not leased:
        return []
    query = (
        select(outbox, *_NOTIFICATION_COLUMNS, connections.c.email)
        .join(notifications, _n.id == _o.notification_id)
        .outerjoin(connections, connections.c.id == _n.connection_id)
        .where(_o.id.in_(leased))
        # which rows are due follows the retry schedule (and its index); within a batch, deliver in the
        # order the notifications were made, so a relay that comes back gets them in order
        .order_by(_o.created_at, _o.id)
    )
    return [_item(row) for row in connection.execute(query)]


def _due_ids(now: datetime, limit: int, channels: Sequence[str] | None) -> CTE:
    """Materialised once, for the planner trap described in ``leases._due_ids``."""
    due = select(_o.id).where(is_due(now))
    if channels is not None:
        due = due.where(_o.channel.in_(list(channels)))
    due = due.order_by(_o.next_attempt_at, _o.created_at).limit(limit).with_for_update(skip_locked=True)
    return due.cte("due_outbox").prefix_with("MATERIALIZED")


def _item(row: Row[Any]) -> OutboxItem:
    metadata: dict[str, Any] = dict(row.metadata)
    return OutboxItem(
        outbox_id=row.id,
        notification_id=row.notification_id,
        channel=row.channel,
        attempts=row.attempts,
        tenant_id=row.tenant_id,
        connection_id=row.connection_id,
        user_id=row.user_id,
        email=row.email,
        provider=str(metadata.get("provider", "")),
        type=NotificationType(row.type),
        title=row.title,
        message=row.message,
        metadata=metadata,
        created_at=row.notified_at,
        lease_owner=row.lease_owner,
    )


def record_delivery(
    connection: Connection,
    item: OutboxItem,
    result: DeliveryResult,
    attempted_at: datetime,
    duration_ms: int,
    next_attempt_at: datetime | None,
) -> bool:
    """Log the attempt and move the row on (delivered, retry later, or failed), releasing the lease.

    Writes nothing and returns False when the lease is no longer ours: another dispatcher owns the row now.
    """
    error = None if result.error is None else result.error[:MAX_ERROR_LENGTH]
    statement = (
        update(outbox)
        .where(
            _o.id == item.outbox_id,
            _o.status == "pending",
            _o.lease_owner == item.lease_owner,
            _o.attempts == item.attempts,
        )
        .values(_outcome_values(result, error, attempted_at, next_attempt_at))
    )
    if connection.execute(statement).rowcount != 1:
        return False
    connection.execute(
        delivery_attempts.insert(),
        {
            "outbox_id": item.outbox_id,
            "tenant_id": item.tenant_id,
            "channel": item.channel,
            "attempted_at": attempted_at,
            "is_delivered": result.is_delivered,
            "error": error,
            "duration_ms": duration_ms,
        },
    )
    return True


def _outcome_values(
    result: DeliveryResult, error: str | None, attempted_at: datetime, next_attempt_at: datetime | None
) -> dict[str, Any]:
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "attempts": _o.attempts + 1}
    if result.is_delivered:
        return values | {"status": "delivered", "delivered_at": attempted_at, "last_error": None}
    if next_attempt_at is None:
        return values | {"status": "failed", "last_error": error}
    return values | {"next_attempt_at": next_attempt_at, "last_error": error}


def list_deliveries(connection: Connection, tenant_id: str, limit: int) -> list[DeliveryAttemptRecord]:
    """Newest first; ``ix_delivery_attempts_tenant_attempted`` serves it."""
    query = (
        select(delivery_attempts)
        .where(_d.tenant_id == tenant_id)
        .order_by(_d.attempted_at.desc(), _d.id.desc())
        .limit(limit)
    )
    return [
        DeliveryAttemptRecord(
            outbox_id=row.outbox_id,
            channel=row.channel,
            attempted_at=row.attempted_at,
            is_delivered=row.is_delivered,
            error=row.error,
            duration=timedelta(milliseconds=row.duration_ms),
        )
        for row in connection.execute(query)
    ]


def outbox_counts(connection: Connection, tenant_id: str) -> dict[str, int]:
    """Rows per status, zero included; the outbox has no tenant column, so through its notification."""
    counts = dict.fromkeys(STATUSES, 0)
    query = (
        select(_o.status, func.count())
        .join(notifications, _n.id == _o.notification_id)
        .where(_n.tenant_id == tenant_id)
        .group_by(_o.status)
    )
    for status, count in connection.execute(query):
        counts[status] = count
    return counts
