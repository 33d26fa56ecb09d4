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

from sqlalchemy import CTE, ColumnElement, Connection, Row, and_, exists, func, or_, select, update
from sqlalchemy.sql.functions import coalesce

from grantkeeper.adapters.db import destinations as destination_rows
from grantkeeper.adapters.db.leases import Lease
from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import (
    connections,
    delivery_attempts,
    destinations,
    notifications,
    outbox,
)
from grantkeeper.core.model import NotificationType
from grantkeeper.core.routing import ChannelKind
from grantkeeper.ports import DeliveryAttemptRecord, DeliveryResult, OutboxItem

_o = outbox.c
_n = notifications.c
_d = delivery_attempts.c
STATUSES = ("pending", "delivered", "failed")
#: ``delivery_attempts.error`` and ``outbox.last_error`` keep this many characters of a sender's reason.
MAX_ERROR_LENGTH = 200
_NOTIFICATION_COLUMNS = (
    _n.connection_id,
    _n.user_id,
    _n.type,
    _n.title,
    _n.message,
    _n.metadata,
    coalesce(_o.recipient, connections.c.email).label("email"),
    destinations.c.url_enc,
    destinations.c.secret_enc,
    destinations.c.user_id.label("destination_user_id"),
)


def is_due(now: datetime) -> ColumnElement[bool]:
    """Pending, due, and not leased (never, released, or the lease ran out); ``ix_outbox_due`` serves it."""
    is_unleased = or_(_o.lease_expires_at.is_(None), _o.lease_expires_at < now)
    return and_(_o.status == "pending", _o.next_attempt_at <= now, is_unleased)


def _destination_disabled() -> ColumnElement[bool]:
    """A row fanned out just before its destination was disabled waits, rather than hitting it again."""
    return exists().where(
        destinations.c.id == _o.destination_id, destinations.c.status == destination_rows.DISABLED
    )


def claim_outbox(
    connection: Connection,
    cipher: FieldCipher,
    lease: Lease,
    limit: int,
    channels: Sequence[str] | None,
) -> list[OutboxItem]:
    """Lease up to ``limit`` due rows, oldest first, with their notification and destination.

    Digest rows are never claimed here: ``claim_digests`` takes them a recipient at a time."""
    if channels is None:
        channels = [kind.value for kind in ChannelKind if kind is not ChannelKind.EMAIL_DIGEST]
    else:
        channels = [channel for channel in channels if channel != ChannelKind.EMAIL_DIGEST.value]
    due = _due_ids(lease.now, limit, channels)
    return _lease(connection, cipher, lease, _o.id == due.c.id)


def claim_digests(
    connection: Connection, cipher: FieldCipher, lease: Lease, max_recipients: int
) -> list[list[OutboxItem]]:
    """Lease every due digest row of up to ``max_recipients`` recipients: one group, one email each.

    Taking a recipient's rows all at once is what keeps a day's warnings in one message; a batch limit on rows
    could split them across two emails."""
    recipients = (
        select(_o.tenant_id, _o.recipient)
        .where(is_due(lease.now), _o.channel == ChannelKind.EMAIL_DIGEST.value)
        .group_by(_o.tenant_id, _o.recipient)
        .order_by(func.min(_o.next_attempt_at))
        .limit(max_recipients)
    )
    groups = [(row.tenant_id, row.recipient) for row in connection.execute(recipients)]
    claimed: list[list[OutboxItem]] = []
    for tenant_id, recipient in groups:
        due = (
            select(_o.id)
            .where(
                is_due(lease.now),
                _o.channel == ChannelKind.EMAIL_DIGEST.value,
                _o.tenant_id == tenant_id,
                _o.recipient == recipient,
            )
            .with_for_update(skip_locked=True)
            .cte("due_digest")
            .prefix_with("MATERIALIZED")
        )
        items = _lease(connection, cipher, lease, _o.id == due.c.id)
        if items:
            claimed.append(items)
    return claimed


def _lease(
    connection: Connection, cipher: FieldCipher, lease: Lease, which: ColumnElement[bool]
) -> list[OutboxItem]:
    statement = (
        update(outbox)
        .where(which)
        .values(lease_owner=lease.owner, lease_expires_at=lease.expires_at)
        .returning(_o.id)
    )
    leased = list(connection.scalars(statement))
    if not leased:
        return []
    query = (
        select(outbox, *_NOTIFICATION_COLUMNS)
        .outerjoin(notifications, _n.id == _o.notification_id)
        .outerjoin(connections, connections.c.id == _n.connection_id)
        .outerjoin(destinations, destinations.c.id == _o.destination_id)
        .where(_o.id.in_(leased))
        # which rows are due follows the retry schedule (and its index); within a batch, deliver in the
        # order the notifications were made, so a relay that comes back gets them in order
        .order_by(_o.created_at, _o.id)
    )
    return [_item(row, cipher) for row in connection.execute(query)]


def _due_ids(now: datetime, limit: int, channels: Sequence[str]) -> CTE:
    """Materialised once: a subquery the planner re-ran per row of the UPDATE would ignore its LIMIT and
    lease more rows than asked for (see ``leases``)."""
    due = (
        select(_o.id)
        .where(is_due(now), _o.channel.in_(list(channels)), ~_destination_disabled())
        .order_by(_o.next_attempt_at, _o.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return due.cte("due_outbox").prefix_with("MATERIALIZED")


def _item(row: Row[Any], cipher: FieldCipher) -> OutboxItem:
    metadata: dict[str, Any] = dict(row.metadata or {})
    payload: dict[str, Any] | None = None if row.payload is None else dict(row.payload)
    data = payload.get("data", {}) if payload is not None else {}
    return OutboxItem(
        outbox_id=row.id,
        notification_id=row.notification_id,
        channel=row.channel,
        attempts=row.attempts,
        tenant_id=row.tenant_id,
        connection_id=row.connection_id or data.get("connection_id"),
        user_id=row.user_id,
        email=row.email,
        provider=str(metadata.get("provider", data.get("provider", ""))),
        type=None if row.type is None else NotificationType(row.type),
        title=row.title or "",
        message=row.message or "",
        metadata=metadata,
        created_at=row.created_at,
        lease_owner=row.lease_owner,
        destination_id=row.destination_id,
        destination_url=cipher.open_optional("destinations", row.destination_id, "url", row.url_enc),
        destination_secret=cipher.open_optional("destinations", row.destination_id, "secret", row.secret_enc),
        destination_user_id=row.destination_user_id,
        event=row.event,
        payload=payload,
        lease_expires_at=row.lease_expires_at,
    )


def record_delivery(
    connection: Connection,
    item: OutboxItem,
    result: DeliveryResult,
    attempted_at: datetime,
    duration_ms: int,
    next_attempt_at: datetime | None,
    failure_limit: int | None = None,
) -> bool:
    """Log the attempt and move the row on (delivered, retry later, or failed), releasing the lease.

    Writes nothing and returns False when the lease is no longer ours: another dispatcher owns the row now.
    A Slack, Discord or webhook destination counts failures in a row; at ``failure_limit`` it is disabled.
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
    if item.destination_id is not None:
        destination_rows.record_outcome(
            connection,
            item.destination_id,
            is_delivered=result.is_delivered,
            error=error,
            failure_limit=failure_limit,
            at=attempted_at,
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


def list_deliveries(
    connection: Connection,
    tenant_id: str,
    limit: int,
    *,
    destination_id: str | None = None,
    channel: str | None = None,
) -> list[DeliveryAttemptRecord]:
    """Newest first; ``ix_delivery_attempts_tenant_attempted`` serves it."""
    query = (
        select(delivery_attempts, _o.destination_id, _o.notification_id, _o.event)
        .join(outbox, _o.id == _d.outbox_id)
        .where(_d.tenant_id == tenant_id)
        .order_by(_d.attempted_at.desc(), _d.id.desc())
        .limit(limit)
    )
    if destination_id is not None:
        query = query.where(_o.destination_id == destination_id)
    if channel is not None:
        query = query.where(_d.channel == channel)
    return [
        DeliveryAttemptRecord(
            outbox_id=row.outbox_id,
            channel=row.channel,
            attempted_at=row.attempted_at,
            is_delivered=row.is_delivered,
            error=row.error,
            duration=timedelta(milliseconds=row.duration_ms),
            destination_id=row.destination_id,
            notification_id=row.notification_id,
            event=row.event,
        )
        for row in connection.execute(query)
    ]


def outbox_counts(connection: Connection, tenant_id: str) -> dict[str, int]:
    """Rows per status, zero included."""
    counts = dict.fromkeys(STATUSES, 0)
    query = select(_o.status, func.count()).where(_o.tenant_id == tenant_id).group_by(_o.status)
    for status, count in connection.execute(query):
        counts[status] = count
    return counts
