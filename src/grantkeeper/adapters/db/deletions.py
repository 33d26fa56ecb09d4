"""Deleting a connection (``DELETE /v1/connections/{id}``): its row and tokens go, the schema does the rest.

Attempts and workflow links cascade; its notifications stay, with ``connection_id`` set NULL, because they
are the tenant's history. A workflow the connection had paused by disconnecting is resumed when no other of
its connections needs reauthorization: nothing is left to reconnect that could ever lift the pause.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select

from grantkeeper.adapters.db.commits import lock_linked_workflows, resume_unblocked
from grantkeeper.adapters.db.fanout import Fanout
from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.routing import EventType

_c = connections.c


def delete_connection(connection: Connection, tenant_id: str, connection_id: str, at: datetime) -> bool:
    """False when the tenant has no such connection. Locks the connection row, then its workflows: the order
    ``commits`` uses, so a deletion racing an attempt's commit waits instead of deadlocking."""
    owned = select(_c.id).where(_c.tenant_id == tenant_id, _c.id == connection_id).with_for_update()
    if connection.scalar(owned) is None:
        return False
    workflow_ids = lock_linked_workflows(connection, connection_id)
    connection.execute(delete(connections).where(_c.id == connection_id))
    fanout = Fanout(connection, tenant_id, at)
    for workflow_id, name in resume_unblocked(connection, workflow_ids, at):
        fanout.event(
            EventType.WORKFLOW_RESUMED,
            {"workflow_id": workflow_id, "name": name, "connection_id": connection_id},
        )
    fanout.flush()
    return True
