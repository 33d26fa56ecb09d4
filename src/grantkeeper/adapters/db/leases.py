"""The work queue: a lease per refresh attempt, so no connection is ever refreshed twice at once.

A claim is one statement: ``UPDATE ... WHERE ctid = ANY(ARRAY(SELECT ctid ... LIMIT n)) RETURNING``
(``rowid IN`` on SQLite; ``hotpath._CLAIM``, ADR 17). The subquery runs once, before any row is updated:
a subquery the planner re-ran per row would ignore its LIMIT (``claim_due`` refuses a longer answer).
On PostgreSQL the inner SELECT locks its rows ``FOR UPDATE SKIP LOCKED``, so concurrent workers on many
machines split the due rows instead of queueing on them, and re-checks each locked row's WHERE against its
newest version, so a row leased meanwhile is skipped, never taken twice. On SQLite the claim runs in a
``BEGIN IMMEDIATE`` transaction and SQLite runs one writer at a time.
Every claim increments ``version``: the commit of an attempt is fenced on it (see ``commits``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, and_, bindparam, or_, select, update

from grantkeeper.adapters.crypto import DecryptionError
from grantkeeper.adapters.db import hotpath
from grantkeeper.adapters.db.catalog import providers_by_id
from grantkeeper.adapters.db.rows import FieldCipher, SealedSecret, state_from_row
from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import (
    ClaimedConnection,
    PlainSecret,
    ProviderConfig,
    StoreError,
    UnknownConnectionError,
)

_c = connections.c
log = logging.getLogger("grantkeeper.store")

#: How long a connection whose tokens cannot be decrypted waits before the next try.
UNREADABLE_RETRY_INTERVAL = timedelta(hours=1)


# A lease is live from its claim until ``lease_expires_at`` inclusive: the complement of ``is_unleased``.
_LEASE_HOLDER = select(_c.lease_owner).where(
    _c.tenant_id == bindparam("tenant_id"),
    _c.id == bindparam("connection_id"),
    _c.lease_expires_at >= bindparam("now"),
)


@dataclass(frozen=True)
class Lease:
    """Who takes the rows, from when, for how long; ``now`` is also the instant the due test uses."""

    now: datetime
    owner: str
    ttl: timedelta
    #: for rows a dead attempt left in flight (``claim_due``); by default as long as the others'
    rescue_ttl: timedelta | None = None

    @property
    def expires_at(self) -> datetime:
        return self.now + self.ttl

    @property
    def rescue_expires_at(self) -> datetime:
        return self.now + (self.ttl if self.rescue_ttl is None else min(self.rescue_ttl, self.ttl))


def is_unleased(now: datetime) -> ColumnElement[bool]:
    """Never leased, released, or the lease ran out (its worker died or stalled): free to take."""
    return or_(_c.lease_expires_at.is_(None), _c.lease_expires_at < now)


def is_due(now: datetime) -> ColumnElement[bool]:
    """The cycle's query; ``ix_connections_due`` serves it as an equality plus a range in index order."""
    return and_(_c.status == ConnectionStatus.CONNECTED.value, _c.next_attempt_at <= now, is_unleased(now))


def claim_due(
    connection: Connection,
    cipher: FieldCipher,
    lease: Lease,
    limit: int,
    tenant_id: str | None,
    *,
    due_at: datetime | None = None,
    skip_in_flight: bool = False,
) -> list[ClaimedConnection]:
    """Rows due at ``due_at`` (default: the lease's start) and free at the lease's start, oldest due first.

    Rows a dead (or cut off) attempt left in flight come first in the answer and are leased only until
    ``lease.rescue_expires_at``: their retry is the one that can still recover a rotated token inside the
    provider's grace window, so it must start at once, and should this worker die before starting it, the
    next one must not wait out a whole claim lease. ``skip_in_flight`` leaves them alone (just after the
    database came back, so that workers holding their answers in memory can commit them first).

    The statement is ``hotpath``'s (plain SQL, the due rows picked once and updated by their address); a
    refresh never needs the access token, so it is not even returned.
    """
    now = due_at or lease.now
    hot = hotpath.for_connection(connection)
    rows = hot.claim(
        connection,
        now,
        lease,
        limit,
        tenant_id,
        skip_in_flight=skip_in_flight,
    )
    claimed = _claimed_rows(connection, cipher, lease, rows, hot)
    if len(claimed) > limit:  # the guard for the planner trap of a rescanned subquery; rolls the claim back
        raise StoreError(f"claim matched {len(claimed)} rows for a limit of {limit}; nothing was leased")
    return sorted(
        claimed,
        key=lambda claim: (
            claim.state.in_flight_since is None,
            claim.state.next_attempt_at or now,
            claim.connection_id,
        ),
    )


def claim_ids(
    connection: Connection,
    cipher: FieldCipher,
    lease: Lease,
    tenant_id: str,
    connection_ids: Sequence[str] | None,
) -> list[ClaimedConnection]:
    """Lease the named (or all) connected, unleased connections of a tenant, ignoring ``next_attempt_at``."""
    now = lease.now
    conditions = [
        _c.tenant_id == tenant_id,
        _c.status == ConnectionStatus.CONNECTED.value,
        is_unleased(now),
    ]
    if connection_ids is not None:
        wanted = list(dict.fromkeys(connection_ids))
        check_known(connection, tenant_id, wanted)
        if not wanted:
            return []
        conditions.append(_c.id.in_(wanted))
    claimed = _lease(connection, cipher, lease, *conditions)
    return sorted(claimed, key=lambda claim: claim.connection_id)


def check_known(connection: Connection, tenant_id: str, connection_ids: list[str]) -> None:
    query = select(_c.id).where(_c.tenant_id == tenant_id, _c.id.in_(connection_ids))
    found = set(connection.scalars(query))
    missing = [connection_id for connection_id in connection_ids if connection_id not in found]
    if missing:
        raise UnknownConnectionError(missing)


def _lease(
    connection: Connection,
    cipher: FieldCipher,
    lease: Lease,
    *conditions: ColumnElement[bool],
) -> list[ClaimedConnection]:
    statement = (
        update(connections)
        .where(*conditions)
        .values(lease_owner=lease.owner, lease_expires_at=lease.expires_at, version=_c.version + 1)
        .returning(*connections.c)
    )
    rows = connection.execute(statement).all()
    providers = _readable_providers(connection, cipher, {row.provider_id for row in rows})
    claimed: list[ClaimedConnection] = []
    unreadable: list[str] = []
    for row in rows:
        try:
            claimed.append(_claimed(row, providers[row.provider_id], cipher))
        except (DecryptionError, KeyError):
            unreadable.append(row.id)
    if unreadable:
        _park_unreadable(connection, lease.owner, lease.now, unreadable)
    return claimed


def _claimed_rows(
    connection: Connection, cipher: FieldCipher, lease: Lease, rows: Sequence[Any], hot: hotpath.HotPath
) -> list[ClaimedConnection]:
    """``_lease``'s second half for raw rows in ``hotpath.CLAIM_COLUMNS`` order; the refresh tokens stay
    sealed (each attempt opens its own, see ``ports.Secret``), only the providers' secrets are opened here."""
    providers = _readable_providers(connection, cipher, {row[2] for row in rows})
    expires_at, rescue_expires_at = lease.expires_at, lease.rescue_expires_at
    state = hot.state
    claimed: list[ClaimedConnection] = []
    unreadable: list[str] = []
    for row in rows:
        connection_id, tenant_id, provider_id, user_id, email, refresh_token_enc, version, owner = row[:8]
        provider = providers.get(provider_id)
        if provider is None:  # its client secret no key opens
            unreadable.append(connection_id)
            continue
        refresh_secret = (
            None
            if refresh_token_enc is None
            else SealedSecret(cipher, "connections", connection_id, "refresh_token", refresh_token_enc)
        )
        claimed.append(
            hotpath.built(
                ClaimedConnection,
                {
                    "connection_id": connection_id,
                    "tenant_id": tenant_id,
                    "user_id": user_id,
                    "email": email,
                    "provider": provider,
                    "state": state(row),
                    "refresh_secret": refresh_secret,
                    "access_token": None,
                    "version": version,
                    "lease_owner": owner,
                    "lease_expires_at": expires_at if row[-1] is None else rescue_expires_at,
                    "started_at": None,
                },
            )
        )
    if unreadable:
        _park_unreadable(connection, lease.owner, lease.now, unreadable)
    return claimed


def _readable_providers(
    connection: Connection, cipher: FieldCipher, provider_ids: set[str]
) -> dict[str, ProviderConfig]:
    """Provider configs by id; one whose client secret no key opens is left out (its rows are parked)."""
    try:
        return providers_by_id(connection, cipher, provider_ids)
    except DecryptionError:
        readable: dict[str, ProviderConfig] = {}
        for provider_id in provider_ids:
            try:
                readable |= providers_by_id(connection, cipher, {provider_id})
            except DecryptionError:
                continue
        return readable


def park_unreadable(connection: Connection, claim: ClaimedConnection, now: datetime) -> bool:
    """Set a claimed row aside whose refresh token its attempt could not open; a no-op when the lease is no
    longer ours. Its ``in_flight_since`` stays as the claim found it: no request was sent."""
    return _park_unreadable(connection, claim.lease_owner, now, [claim.connection_id], claim.version) == 1


def _park_unreadable(
    connection: Connection,
    owner: str,
    now: datetime,
    connection_ids: list[str],
    version: int | None = None,
) -> int:
    """Rows whose tokens no configured key opens (a removed key, a copied value) must not stop the batch.

    They are set aside for ``UNREADABLE_RETRY_INTERVAL`` with a clear ``last_error`` and logged by id, so the
    operator can restore the key; their counters and status are untouched (it is not the user's fault).
    """
    log.error(
        "cannot decrypt the stored tokens of %d connection(s): %s; is a key missing from "
        "GRANTKEEPER_ENCRYPTION_KEYS?",
        len(connection_ids),
        ", ".join(connection_ids[:20]),
        extra={"action": "decryption_failed"},
    )
    fence = [_c.id.in_(connection_ids), _c.lease_owner == owner]
    if version is not None:
        fence.append(_c.version == version)
    statement = (
        update(connections)
        .where(*fence)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            version=_c.version + 1,
            next_attempt_at=now + UNREADABLE_RETRY_INTERVAL,
            last_error_code="decryption_failed",
            last_error_description="stored tokens cannot be decrypted with the configured keys",
        )
    )
    return connection.execute(statement).rowcount


def _claimed(row: Row[Any], provider: ProviderConfig, cipher: FieldCipher) -> ClaimedConnection:
    return ClaimedConnection(
        connection_id=row.id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        email=row.email,
        provider=provider,
        state=state_from_row(row),
        refresh_secret=_opened(
            cipher.open_optional("connections", row.id, "refresh_token", row.refresh_token_enc)
        ),
        access_token=cipher.open_optional("connections", row.id, "access_token", row.access_token_enc),
        version=row.version,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
    )


def _opened(value: str | None) -> PlainSecret | None:
    return None if value is None else PlainSecret(value)


def lease_holder(connection: Connection, tenant_id: str, connection_id: str, now: datetime) -> str | None:
    """Who holds a live lease on the connection, if anyone: token vending waits for that refresh to finish
    instead of starting a second one. A primary-key lookup with a prebuilt statement; it runs per request."""
    params = {"tenant_id": tenant_id, "connection_id": connection_id, "now": now}
    owner: str | None = connection.scalar(_LEASE_HOLDER, params)
    return owner


def release(connection: Connection, claim: ClaimedConnection) -> bool:
    """Give a lease back early (the attempt was abandoned, its request never sent); a no-op when the lease
    is no longer ours. ``in_flight_since`` goes back to what the claim found: a start recorded for a request
    that never left must not look like a lost answer."""
    statement = (
        update(connections)
        .where(_c.id == claim.connection_id, _c.version == claim.version, _c.lease_owner == claim.lease_owner)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            version=_c.version + 1,
            in_flight_since=claim.state.in_flight_since,
        )
    )
    return connection.execute(statement).rowcount == 1
