"""Deleting connections: one (``DELETE /v1/connections/{id}``) or all of a provider's with the provider
(``DELETE /v1/providers/{name}?with_connections=true``). Their rows and tokens go, the schema does the rest.

Attempts, workflow links and connect sessions cascade; notifications stay, with ``connection_id`` set NULL,
because they are the tenant's history. A workflow a deleted connection had paused by disconnecting is resumed
when no other of its connections needs reauthorization: nothing is left to reconnect that could ever lift
the pause.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from grantkeeper.adapters.db.commits import lock_linked_workflows, resume_unblocked
from grantkeeper.adapters.db.fanout import Fanout
from grantkeeper.adapters.db.tables import connections, providers, workflow_connections, workflows
from grantkeeper.core.routing import EventType
from grantkeeper.ports import ProviderInUseError, UnknownProviderError

_c = connections.c
_links = workflow_connections.c


def delete_connection(connection: Connection, tenant_id: str, connection_id: str, at: datetime) -> bool:
    """False when the tenant has no such connection. Locks the connection row, then its workflows: the order
    ``commits`` uses, so a deletion racing an attempt's commit waits instead of deadlocking."""
    owned = select(_c.id).where(_c.tenant_id == tenant_id, _c.id == connection_id).with_for_update()
    if connection.scalar(owned) is None:
        return False
    workflow_ids = lock_linked_workflows(connection, connection_id)
    connection.execute(delete(connections).where(_c.id == connection_id))
    _resume_unblocked(connection, tenant_id, {workflow_id: connection_id for workflow_id in workflow_ids}, at)
    return True


#: How many of a provider's connections ``delete_provider`` locks per statement: the ids read are dropped
#: batch by batch, so removing a provider with a million connections does not hold a million ids.
LOCK_BATCH = 5000


def delete_provider(
    connection: Connection,
    tenant_id: str,
    name: str,
    *,
    with_connections: bool,
    at: datetime,
    lock_batch: int = LOCK_BATCH,
) -> int:
    """Remove a provider and, with ``with_connections``, its connections (as ``delete_connection`` does each);
    returns how many connections went. ``UnknownProviderError`` / ``ProviderInUseError`` change nothing.

    Locks are taken in the order an attempt's commit takes them (its connection, then workflows, then the
    provider it flags or clears), so the two wait for each other instead of deadlocking on PostgreSQL:
    first the provider's connections in id order (``lock_batch`` at a time; SQLite has one writer at a time
    and needs none of this), then the provider's row. A connection being added meanwhile takes a key-share
    lock on the provider for its foreign key, so it either lands before the provider is locked, and is
    counted and removed, or waits and then fails for want of a provider. Then the workflows of the
    connections, in id order. A worker holding a lease on a removed connection finds its commit fenced off
    (no row) and writes nothing.
    """
    named = select(providers.c.id).where(providers.c.tenant_id == tenant_id, providers.c.name == name)
    provider_id = connection.scalar(named)
    if provider_id is None:
        raise UnknownProviderError(name)
    if with_connections and connection.dialect.name != "sqlite":
        _lock_connections(connection, tenant_id, provider_id, lock_batch)
    if connection.scalar(named.with_for_update()) is None:  # removed meanwhile by another call
        raise UnknownProviderError(name)
    # The tenant as well as the provider, though the provider implies it: then the index on
    # ``(tenant_id, provider_id, id)`` (ix_connections_tenant_provider_page) finds the rows; by the provider
    # alone no index could, and each of these three statements read the whole table.
    of_provider = (_c.tenant_id == tenant_id, _c.provider_id == provider_id)
    count = int(connection.scalar(select(func.count()).where(*of_provider)) or 0)
    if count and not with_connections:
        raise ProviderInUseError(name, count)
    owned = select(_c.id).where(*of_provider)
    links = select(_links.workflow_id, func.min(_links.connection_id)).where(_links.connection_id.in_(owned))
    # per workflow, one of its removed connections: the ``connection_id`` of its workflow.resumed event
    cause = {row[0]: row[1] for row in connection.execute(links.group_by(_links.workflow_id))}
    locked = select(workflows.c.id).where(workflows.c.id.in_(sorted(cause))).order_by(workflows.c.id)
    connection.execute(locked.with_for_update()).all()
    removed = int(connection.execute(delete(connections).where(*of_provider)).rowcount)
    connection.execute(delete(providers).where(providers.c.id == provider_id))
    _resume_unblocked(connection, tenant_id, cause, at)
    return removed


def _lock_connections(connection: Connection, tenant_id: str, provider_id: str, batch: int) -> None:
    """``FOR UPDATE`` on every connection of the provider, in id order, ``batch`` rows per statement (each a
    range of ``ix_connections_tenant_provider_page``)."""
    after = ""
    while True:
        page = (
            select(_c.id)
            .where(_c.tenant_id == tenant_id, _c.provider_id == provider_id, _c.id > after)
            .order_by(_c.id)
            .limit(batch)
            .with_for_update()
        )
        ids = connection.scalars(page).all()
        if len(ids) < batch:
            return
        after = ids[-1]


def _resume_unblocked(connection: Connection, tenant_id: str, cause: dict[str, str], at: datetime) -> None:
    """Resume the (locked) workflows nothing blocks any more; one workflow.resumed event each, naming the
    deleted connection that had been linked to it."""
    fanout = Fanout(connection, tenant_id, at)
    for workflow_id, name in resume_unblocked(connection, sorted(cause), at):
        fanout.event(
            EventType.WORKFLOW_RESUMED,
            {"workflow_id": workflow_id, "name": name, "connection_id": cause[workflow_id]},
        )
    fanout.flush()
