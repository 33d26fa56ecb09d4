"""In-app notifications as the tenant reads them: newest first, filtered by type or read state, marked read.

The rows are written by ``commits`` in the transaction of the attempt that caused them; nothing here writes
but the read flag.
"""

from __future__ import annotations

from sqlalchemy import Connection, false, select, update

from grantkeeper.adapters.db.rows import notification_from_row
from grantkeeper.adapters.db.tables import notifications
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import NotificationRecord

_n = notifications.c


def list_notifications(
    connection: Connection,
    tenant_id: str,
    limit: int,
    *,
    kind: NotificationType | None,
    unread_only: bool,
) -> list[NotificationRecord]:
    """Newest first. ``is_read = false`` rather than ``IS false`` so ``ix_notifications_tenant_unread`` serves
    it (PostgreSQL matches only operators against an index, and ``IS`` is not one)."""
    query = select(notifications).where(_n.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(_n.type == kind.value)
    if unread_only:
        query = query.where(_n.is_read == false())
    query = query.order_by(_n.created_at.desc(), _n.id.desc()).limit(limit)
    return [notification_from_row(row) for row in connection.execute(query)]


def mark_notification_read(connection: Connection, tenant_id: str, notification_id: str) -> bool:
    """Idempotent: marking a read notification again succeeds; False only when the tenant has no such row."""
    statement = (
        update(notifications).where(_n.tenant_id == tenant_id, _n.id == notification_id).values(is_read=True)
    )
    return connection.execute(statement).rowcount == 1
