"""Workflows: named groups of connections that pause while one of them needs reauthorization.

``commits`` pauses and resumes them as connections disconnect and reconnect; this module creates and reads
them. A workflow is created paused when one of its connections is already disconnected, so the invariant
"paused by a disconnection exactly while a connection needs reauthorization" holds from the first moment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, select
from sqlalchemy.exc import IntegrityError

from grantkeeper.adapters.db.tables import connections, new_id, workflow_connections, workflows
from grantkeeper.core.model import ConnectionStatus, DisconnectReason
from grantkeeper.ports import (
    DuplicateWorkflowError,
    UnknownConnectionError,
    WorkflowRecord,
    WorkflowStatus,
)

_c = connections.c
_w = workflows.c
_links = workflow_connections.c


def list_workflows(connection: Connection, tenant_id: str) -> list[WorkflowRecord]:
    return _workflow_records(connection, _w.tenant_id == tenant_id)


def get_workflow(connection: Connection, tenant_id: str, workflow_id: str) -> WorkflowRecord | None:
    found = _workflow_records(connection, _w.tenant_id == tenant_id, _w.id == workflow_id)
    return found[0] if found else None


def _workflow_records(connection: Connection, *conditions: ColumnElement[bool]) -> list[WorkflowRecord]:
    """Workflows by name with their connection ids in id order: two queries, however many workflows."""
    rows = connection.execute(select(workflows).where(*conditions).order_by(_w.name)).all()
    links = connection.execute(
        select(_links.workflow_id, _links.connection_id)
        .join(workflows, _w.id == _links.workflow_id)
        .where(*conditions)
        .order_by(_links.connection_id)
    ).all()
    linked: defaultdict[str, list[str]] = defaultdict(list)
    for workflow_id, connection_id in links:
        linked[workflow_id].append(connection_id)
    return [_record(row, linked[row.id]) for row in rows]


def _record(row: Row[Any], connection_ids: list[str]) -> WorkflowRecord:
    return WorkflowRecord(
        workflow_id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        status=WorkflowStatus(row.status),
        paused_reason=row.paused_reason,
        connection_ids=tuple(connection_ids),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def create_workflow(
    connection: Connection, tenant_id: str, name: str, connection_ids: Sequence[str], now: datetime
) -> WorkflowRecord:
    """Create the workflow with its links, or nothing: ``UnknownConnectionError`` names every id the tenant
    does not have, ``DuplicateWorkflowError`` a name already taken (also when a concurrent call took it)."""
    wanted = list(dict.fromkeys(connection_ids))
    members = _share_lock_members(connection, tenant_id, wanted)
    missing = [connection_id for connection_id in wanted if connection_id not in members]
    if missing:
        raise UnknownConnectionError(missing)
    workflow_id = new_id("wf")
    paused_reason = _pause_reason(members.values())
    status = WorkflowStatus.ACTIVE if paused_reason is None else WorkflowStatus.PAUSED
    row = {
        "id": workflow_id,
        "tenant_id": tenant_id,
        "name": name,
        "status": status.value,
        "paused_reason": paused_reason,
        "created_at": now,
        "updated_at": now,
    }
    _insert_workflow(connection, tenant_id, row)
    if wanted:
        links = [{"workflow_id": workflow_id, "connection_id": connection_id} for connection_id in wanted]
        connection.execute(workflow_connections.insert(), links)
    created = get_workflow(connection, tenant_id, workflow_id)
    assert created is not None  # inserted by this very transaction
    return created


def _share_lock_members(
    connection: Connection, tenant_id: str, connection_ids: list[str]
) -> dict[str, tuple[str, str | None]]:
    """Status and disconnect reason of the tenant's connections among the ids, read under ``FOR SHARE``.

    The lock makes a disconnection committing meanwhile wait for this transaction, after which it sees the new
    links and pauses the workflow; without it, under READ COMMITTED, the workflow could be created active over
    a connection that had just disconnected. Id order keeps concurrent lockers from deadlocking.
    """
    if not connection_ids:
        return {}
    query = (
        select(_c.id, _c.status, _c.disconnect_reason)
        .where(_c.tenant_id == tenant_id, _c.id.in_(connection_ids))
        .order_by(_c.id)
        .with_for_update(read=True)
    )
    return {row.id: (row.status, row.disconnect_reason) for row in connection.execute(query)}


def _pause_reason(members: Iterable[tuple[str, str | None]]) -> str | None:
    """The disconnect reason of the first disconnected member, so a reconnect lifts the pause by itself."""
    for status, reason in members:
        if status == ConnectionStatus.NEEDS_REAUTHORIZATION.value:
            return reason or DisconnectReason.REAUTH_REQUIRED.value
    return None


def _insert_workflow(connection: Connection, tenant_id: str, row: dict[str, Any]) -> None:
    try:
        with connection.begin_nested():
            connection.execute(workflows.insert(), row)
    except IntegrityError as exc:
        taken = select(_w.id).where(_w.tenant_id == tenant_id, _w.name == row["name"])
        if connection.scalar(taken) is not None:
            raise DuplicateWorkflowError(row["name"]) from None
        raise exc
