"""Bulk creation of connections (``connections import``, ``POST /v1/connections``) in one transaction.

Ids are generated before the INSERT so each token is encrypted with its row id bound as associated data, and
the rows go to the database in batches (executemany / multi-row VALUES): 10,000 lines take a few round trips,
not 10,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, select

from grantkeeper.adapters.db.catalog import insert_ignoring_duplicates, provider_ids_by_name
from grantkeeper.adapters.db.rows import FieldCipher, state_values
from grantkeeper.adapters.db.tables import connections, new_id, workflow_connections, workflows
from grantkeeper.core.model import ConnectionState
from grantkeeper.ports import NewConnection, UnknownProviderError, WorkflowStatus

BATCH_SIZE = 1000


def import_connections(
    connection: Connection, cipher: FieldCipher, tenant_id: str, rows: Sequence[NewConnection], now: datetime
) -> list[str]:
    """Create every row or none: ``UnknownProviderError`` for the first line naming an unknown provider."""
    provider_ids = _resolve_providers(connection, tenant_id, rows)
    workflow_ids = ensure_workflows(connection, tenant_id, _workflow_names(rows), now)
    connection_ids = [new_id("con") for _ in rows]
    values = (
        _connection_values(cipher, tenant_id, provider_ids[row.provider], connection_id, row, now)
        for connection_id, row in zip(connection_ids, rows, strict=True)
    )
    _insert_in_batches(connection, connections.insert(), values)
    links = (
        {"workflow_id": workflow_ids[name], "connection_id": connection_id}
        for connection_id, row in zip(connection_ids, rows, strict=True)
        for name in dict.fromkeys(row.workflows)
    )
    _insert_in_batches(connection, workflow_connections.insert(), links)
    return connection_ids


def _resolve_providers(
    connection: Connection, tenant_id: str, rows: Sequence[NewConnection]
) -> dict[str, str]:
    provider_ids = provider_ids_by_name(connection, tenant_id, {row.provider for row in rows})
    for row in rows:
        if row.provider not in provider_ids:
            raise UnknownProviderError(row.provider)
    return provider_ids


def _workflow_names(rows: Sequence[NewConnection]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row.workflows))


def ensure_workflows(
    connection: Connection, tenant_id: str, names: Sequence[str], now: datetime
) -> dict[str, str]:
    """Workflow ids by name, creating the missing ones (import lines name workflows, not ids)."""
    if not names:
        return {}
    new_rows = [
        {
            "id": new_id("wf"),
            "tenant_id": tenant_id,
            "name": name,
            "status": WorkflowStatus.ACTIVE.value,
            "created_at": now,
            "updated_at": now,
        }
        for name in names
    ]
    insert_ignoring_duplicates(connection, workflows, new_rows, ["tenant_id", "name"])
    query = select(workflows.c.name, workflows.c.id).where(
        workflows.c.tenant_id == tenant_id, workflows.c.name.in_(names)
    )
    return {row.name: row.id for row in connection.execute(query)}


def _connection_values(
    cipher: FieldCipher,
    tenant_id: str,
    provider_id: str,
    connection_id: str,
    row: NewConnection,
    now: datetime,
) -> dict[str, Any]:
    state = ConnectionState(expires_at=row.expires_at, next_attempt_at=row.next_attempt_at or now)
    return state_values(state) | {
        "id": connection_id,
        "tenant_id": tenant_id,
        "provider_id": provider_id,
        "user_id": row.user_id,
        "email": row.email,
        "account_id": row.account_id,
        "access_token_enc": _seal(cipher, connection_id, "access_token", row.access_token),
        "refresh_token_enc": _seal(cipher, connection_id, "refresh_token", row.refresh_token),
        "lease_owner": None,
        "lease_expires_at": None,
        "version": 0,
        "created_at": now,
        "updated_at": now,
    }


def _seal(cipher: FieldCipher, connection_id: str, column: str, plaintext: str | None) -> str | None:
    return None if plaintext is None else cipher.seal("connections", connection_id, column, plaintext)


def _insert_in_batches(connection: Connection, statement: Any, rows: Iterable[dict[str, Any]]) -> None:
    iterator = iter(rows)
    while batch := list(islice(iterator, BATCH_SIZE)):
        connection.execute(statement, batch)
