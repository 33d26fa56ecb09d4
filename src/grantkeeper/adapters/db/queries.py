"""Read-only queries for listings, ``grantkeeper status`` and the API.

Only ``read_tokens`` selects a token column; no listing does."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, Select, func, or_, select

from grantkeeper.adapters.db.rows import FieldCipher, attempt_from_row, notification_from_row, record_from_row
from grantkeeper.adapters.db.tables import (
    connections,
    notifications,
    outbox,
    providers,
    refresh_attempts,
    workflow_connections,
    workflows,
)
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import (
    AttemptRecord,
    ConnectionRecord,
    NotificationRecord,
    OutboxRecord,
    StoredTokens,
    WorkflowRecord,
    WorkflowStatus,
)

_c = connections.c
_LISTED_COLUMNS = [column for column in connections.c if not column.name.endswith("_enc")]


def _records() -> Select[Any]:
    return select(*_LISTED_COLUMNS, providers.c.name.label("provider_name")).join(
        providers, providers.c.id == _c.provider_id
    )


def get_connection(connection: Connection, tenant_id: str, connection_id: str) -> ConnectionRecord | None:
    row = connection.execute(_records().where(_c.tenant_id == tenant_id, _c.id == connection_id)).first()
    return None if row is None else record_from_row(row)


def list_connections(
    connection: Connection, tenant_id: str, status: ConnectionStatus | None
) -> list[ConnectionRecord]:
    query = _records().where(_c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(_c.status == status.value)
    return [record_from_row(row) for row in connection.execute(query.order_by(_c.created_at, _c.id))]


def list_failing(connection: Connection, tenant_id: str, limit: int) -> list[ConnectionRecord]:
    """Connections with a failure streak or not connected, most recent failure first."""
    query = _records().where(
        _c.tenant_id == tenant_id,
        or_(
            _c.consecutive_failures > 0,
            _c.consecutive_transient_failures > 0,
            _c.status != ConnectionStatus.CONNECTED.value,
        ),
    )
    query = query.order_by(_c.last_failure_at.desc().nulls_last(), _c.id).limit(limit)
    return [record_from_row(row) for row in connection.execute(query)]


def count_by_status(connection: Connection, tenant_id: str) -> dict[str, int]:
    """Every status appears, zero included, so a dashboard need not special-case an empty tenant."""
    counts = dict.fromkeys((status.value for status in ConnectionStatus), 0)
    query = select(_c.status, func.count()).where(_c.tenant_id == tenant_id).group_by(_c.status)
    for status, count in connection.execute(query):
        counts[status] = count
    return counts


def list_notifications(connection: Connection, tenant_id: str, limit: int) -> list[NotificationRecord]:
    query = (
        select(notifications)
        .where(notifications.c.tenant_id == tenant_id)
        .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
        .limit(limit)
    )
    return [notification_from_row(row) for row in connection.execute(query)]


def list_workflows(connection: Connection, tenant_id: str) -> list[WorkflowRecord]:
    rows = connection.execute(
        select(workflows).where(workflows.c.tenant_id == tenant_id).order_by(workflows.c.name)
    ).all()
    links = connection.execute(
        select(workflow_connections.c.workflow_id, workflow_connections.c.connection_id)
        .join(workflows, workflows.c.id == workflow_connections.c.workflow_id)
        .where(workflows.c.tenant_id == tenant_id)
        .order_by(workflow_connections.c.connection_id)
    ).all()
    linked: defaultdict[str, list[str]] = defaultdict(list)
    for workflow_id, connection_id in links:
        linked[workflow_id].append(connection_id)
    return [
        WorkflowRecord(
            workflow_id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            status=WorkflowStatus(row.status),
            paused_reason=row.paused_reason,
            connection_ids=tuple(linked[row.id]),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


def attempts_for(connection: Connection, connection_id: str, limit: int) -> list[AttemptRecord]:
    """Newest first: the recent history of one connection, for ``status`` and debugging."""
    query = (
        select(refresh_attempts)
        .where(refresh_attempts.c.connection_id == connection_id)
        .order_by(refresh_attempts.c.attempted_at.desc(), refresh_attempts.c.id.desc())
        .limit(limit)
    )
    return [attempt_from_row(row) for row in connection.execute(query)]


def read_tokens(
    connection: Connection, cipher: FieldCipher, tenant_id: str, connection_id: str
) -> StoredTokens | None:
    query = select(_c.id, _c.access_token_enc, _c.refresh_token_enc, _c.expires_at).where(
        _c.tenant_id == tenant_id, _c.id == connection_id
    )
    row = connection.execute(query).first()
    if row is None:
        return None
    return StoredTokens(
        access_token=cipher.open_optional("connections", row.id, "access_token", row.access_token_enc),
        refresh_token=cipher.open_optional("connections", row.id, "refresh_token", row.refresh_token_enc),
        expires_at=row.expires_at,
    )


def list_outbox(connection: Connection, notification_id: str) -> list[OutboxRecord]:
    query = select(outbox).where(outbox.c.notification_id == notification_id).order_by(outbox.c.channel)
    return [
        OutboxRecord(
            outbox_id=row.id,
            notification_id=row.notification_id,
            channel=row.channel,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            created_at=row.created_at,
        )
        for row in connection.execute(query)
    ]
