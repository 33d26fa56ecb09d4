"""Read-only queries for connection listings, ``grantkeeper status`` and the API.

Only ``read_tokens`` selects a token column; no listing does. Notifications are listed in ``inbox``,
workflows in ``workflows``."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, or_, select

from grantkeeper.adapters.db.rows import FieldCipher, attempt_from_row, record_from_row
from grantkeeper.adapters.db.tables import connections, outbox, providers, refresh_attempts
from grantkeeper.core.model import ConnectionStatus, DisconnectReason
from grantkeeper.ports import (
    AttemptRecord,
    ConnectionRecord,
    OutboxRecord,
    StoredTokens,
    UnknownConnectionError,
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


def list_connections_page(
    connection: Connection,
    tenant_id: str,
    *,
    status: ConnectionStatus | None,
    provider: str | None,
    user_id: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[ConnectionRecord], str | None]:
    """One keyset page in connection id order, and the ``after`` of the next page (None on the last).

    Keyset rather than OFFSET: a page costs the same at row 90,000 as at row 0, and a row deleted between two
    requests shifts nothing. One row more than asked tells whether another page exists.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    query = _page_query(status is not None, provider is not None, user_id is not None, after is not None)
    parameters = {
        "tenant_id": tenant_id,
        "status": None if status is None else status.value,
        "provider": provider,
        "user_id": user_id,
        "after": after,
        "limit": limit + 1,
    }
    rows = connection.execute(query, parameters).all()
    page = [record_from_row(row) for row in rows[:limit]]
    return page, page[-1].connection_id if len(rows) > limit else None


@functools.lru_cache(maxsize=16)
def _page_query(has_status: bool, has_provider: bool, has_user: bool, has_after: bool) -> Select[Any]:
    """The page's SELECT, built once per combination of filters with bound parameters (the API lists often).

    Every filter is an equality, so one of the ``ix_connections_tenant_*_page`` indexes yields the matching
    rows already in id order. The provider is named, so it is resolved by a scalar subquery that runs once;
    an unknown name gives NULL, which matches nothing.
    """
    query = _records().where(_c.tenant_id == bindparam("tenant_id"))
    if has_status:
        query = query.where(_c.status == bindparam("status"))
    if has_provider:
        named = providers.alias("named_provider")  # an alias, or the subquery would correlate to the join
        provider_id = select(named.c.id).where(
            named.c.tenant_id == bindparam("tenant_id"), named.c.name == bindparam("provider")
        )
        query = query.where(_c.provider_id == provider_id.scalar_subquery())
    if has_user:
        query = query.where(_c.user_id == bindparam("user_id"))
    if has_after:
        query = query.where(_c.id > bindparam("after"))
    return query.order_by(_c.id).limit(bindparam("limit"))


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


def count_by_disconnect_reason(connection: Connection, tenant_id: str) -> dict[str, int]:
    """Connections needing reauthorization, by why: ``lost_rotation`` is ours to explain, not the user's."""
    counts = dict.fromkeys((reason.value for reason in DisconnectReason), 0)
    query = (
        select(_c.disconnect_reason, func.count())
        .where(_c.tenant_id == tenant_id, _c.status == ConnectionStatus.NEEDS_REAUTHORIZATION.value)
        .group_by(_c.disconnect_reason)
    )
    for reason, count in connection.execute(query):
        if reason is not None:
            counts[reason] = count
    return counts


def attempts_for(connection: Connection, connection_id: str, limit: int) -> list[AttemptRecord]:
    """Newest first: the recent history of one connection, for ``status`` and debugging."""
    query = (
        select(refresh_attempts)
        .where(refresh_attempts.c.connection_id == connection_id)
        .order_by(refresh_attempts.c.attempted_at.desc(), refresh_attempts.c.id.desc())
        .limit(limit)
    )
    return [attempt_from_row(row) for row in connection.execute(query)]


def list_attempts(
    connection: Connection, tenant_id: str, connection_id: str, limit: int, before: datetime | None
) -> list[AttemptRecord]:
    """A tenant's connection's attempts, newest first, those before ``before`` only when given (paging back
    through a long history); ``UnknownConnectionError`` when the tenant has no such connection.
    ``ix_refresh_attempts_connection_attempted`` serves it: the connection's entries from the newest."""
    owned = select(_c.id).where(_c.tenant_id == tenant_id, _c.id == connection_id)
    if connection.scalar(owned) is None:
        raise UnknownConnectionError([connection_id])
    conditions = [refresh_attempts.c.connection_id == connection_id]
    if before is not None:
        conditions.append(refresh_attempts.c.attempted_at < before)
    query = (
        select(refresh_attempts)
        .where(*conditions)
        .order_by(refresh_attempts.c.attempted_at.desc(), refresh_attempts.c.id.desc())
        .limit(limit)
    )
    return [attempt_from_row(row) for row in connection.execute(query)]


_READ_TOKENS = select(_c.id, _c.status, _c.access_token_enc, _c.refresh_token_enc, _c.expires_at).where(
    _c.tenant_id == bindparam("tenant_id"), _c.id == bindparam("connection_id")
)


def read_tokens(
    connection: Connection,
    cipher: FieldCipher,
    tenant_id: str,
    connection_id: str,
    *,
    with_refresh_token: bool = True,
) -> StoredTokens | None:
    """One indexed read (prebuilt: the token endpoint runs it per request); the refresh token is decrypted
    only when asked for, since serving an access token never needs it."""
    row = connection.execute(_READ_TOKENS, {"tenant_id": tenant_id, "connection_id": connection_id}).first()
    if row is None:
        return None
    refresh = row.refresh_token_enc if with_refresh_token else None
    return StoredTokens(
        access_token=cipher.open_optional("connections", row.id, "access_token", row.access_token_enc),
        refresh_token=cipher.open_optional("connections", row.id, "refresh_token", refresh),
        expires_at=row.expires_at,
        status=ConnectionStatus(row.status),
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
