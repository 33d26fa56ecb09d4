"""Slack, Discord and webhook destinations and per-user preferences: the rows fan-out reads (issue 4).

A destination's URL is sealed like a token (a Slack or Discord incoming-webhook URL is a bearer credential)
and so is a webhook endpoint's signing secret; listings show ``url_hint`` only. Failure counting lives here
too: ``record_failure`` runs in the same transaction that records the delivery attempt, so the count and the
attempt log never disagree, and disabling a destination fails its pending rows at once rather than letting
them wait forever.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import destinations, new_id, outbox, user_preferences
from grantkeeper.core.routing import Destination, DestinationKind, Preferences, WarningEmail
from grantkeeper.core.urls import url_hint, validate_destination_url
from grantkeeper.ports import DestinationRecord, UnknownDestinationError, UserPreferences

log = logging.getLogger("grantkeeper.dispatch")
_d = destinations.c
_p = user_preferences.c
ENABLED = "enabled"
DISABLED = "disabled"
#: The reason pending rows of a disabled destination are failed with.
DISABLED_ERROR = "destination_disabled"


def add_destination(
    connection: Connection,
    cipher: FieldCipher,
    tenant_id: str,
    kind: DestinationKind,
    url: str,
    now: datetime,
    *,
    user_id: str | None,
    secret: str | None,
) -> DestinationRecord:
    """Validate and store a destination; raises ``ValueError`` with a message that never shows the path."""
    kind = DestinationKind(kind)
    validate_destination_url(url, field=f"{kind.value} URL")
    if kind is DestinationKind.WEBHOOK and not secret:
        raise ValueError("a webhook endpoint needs a signing secret")
    if user_id is not None and not user_id.strip():
        raise ValueError("user id must not be empty")
    destination_id = new_id("dst")
    row: dict[str, Any] = {
        "id": destination_id,
        "tenant_id": tenant_id,
        "kind": kind.value,
        "user_id": user_id,
        "url_enc": cipher.seal("destinations", destination_id, "url", url),
        "url_hint": url_hint(url, keep_path=kind is DestinationKind.WEBHOOK),
        "secret_enc": None
        if secret is None
        else cipher.seal("destinations", destination_id, "secret", secret),
        "status": ENABLED,
        "consecutive_failures": 0,
        "last_error": None,
        "disabled_at": None,
        "created_at": now,
    }
    connection.execute(insert(destinations), row)
    return _record_from_values(row)


def list_destinations(
    connection: Connection, tenant_id: str, kind: DestinationKind | None
) -> list[DestinationRecord]:
    query = select(destinations).where(_d.tenant_id == tenant_id).order_by(_d.created_at, _d.id)
    if kind is not None:
        query = query.where(_d.kind == DestinationKind(kind).value)
    return [_record(row) for row in connection.execute(query)]


def remove_destination(connection: Connection, tenant_id: str, destination_id: str) -> bool:
    """Delete it; its outbox rows and their attempt log go with it (ON DELETE CASCADE)."""
    statement = delete(destinations).where(_d.tenant_id == tenant_id, _d.id == destination_id)
    return bool(connection.execute(statement).rowcount)


def enable_destination(connection: Connection, tenant_id: str, destination_id: str) -> DestinationRecord:
    """Turn a disabled destination back on with a clean failure count; rows failed meanwhile stay failed."""
    statement = (
        update(destinations)
        .where(_d.tenant_id == tenant_id, _d.id == destination_id)
        .values(status=ENABLED, consecutive_failures=0, disabled_at=None)
        .returning(*destinations.c)
    )
    row = connection.execute(statement).one_or_none()
    if row is None:
        raise UnknownDestinationError(destination_id)
    return _record(row)


# Built once: both run for every notification a refresh writes (after an outage, every connection recovers
# with one), and building a statement costs SQLAlchemy more than SQLite takes to run it.
_ROUTING = select(_d.id, _d.kind, _d.user_id, _d.status).where(_d.tenant_id == bindparam("tenant_id"))
_PREFERENCES = select(user_preferences).where(
    _p.tenant_id == bindparam("tenant_id"), _p.user_id == bindparam("user_id")
)


def routing_destinations(connection: Connection, tenant_id: str) -> tuple[Destination, ...]:
    """The tenant's destinations as the pure router sees them (fan-out, in the state change's transaction)."""
    return tuple(
        Destination(row.id, DestinationKind(row.kind), row.user_id, row.status == ENABLED)
        for row in connection.execute(_ROUTING, {"tenant_id": tenant_id})
    )


def get_preferences(connection: Connection, tenant_id: str, user_id: str) -> UserPreferences:
    row = connection.execute(_PREFERENCES, {"tenant_id": tenant_id, "user_id": user_id}).one_or_none()
    return UserPreferences(user_id) if row is None else _preferences(row)


_PREFERENCES_OF_USERS = select(user_preferences).where(
    _p.tenant_id == bindparam("tenant_id"), _p.user_id.in_(bindparam("user_ids", expanding=True))
)


def preferences_of(connection: Connection, tenant_id: str, user_ids: set[str]) -> dict[str, UserPreferences]:
    """Many users' preferences in one query (the defaults for those who never set any): a batch of commits
    that notifies many users reads them once, not once per notification."""
    found = {
        row.user_id: _preferences(row)
        for row in connection.execute(
            _PREFERENCES_OF_USERS, {"tenant_id": tenant_id, "user_ids": sorted(user_ids)}
        )
    }
    return {user_id: found.get(user_id) or UserPreferences(user_id) for user_id in user_ids}


def _preferences(row: Row[Any]) -> UserPreferences:
    return UserPreferences(
        user_id=row.user_id,
        email_address=row.email_address,
        preferences=Preferences(
            email=row.email,
            slack=row.slack,
            discord=row.discord,
            warning_email=WarningEmail(row.warning_email),
        ),
        updated_at=row.updated_at,
    )


def set_preferences(
    connection: Connection, tenant_id: str, prefs: UserPreferences, now: datetime
) -> UserPreferences:
    """Insert or replace, portably: an UPDATE, then an INSERT when it matched nothing.

    The write transaction holds the lock on SQLite; on PostgreSQL two concurrent first inserts collide on the
    primary key and the second caller gets an error instead of a lost update.
    """
    if not prefs.user_id.strip():
        raise ValueError("user id must not be empty")
    values = {
        "email_address": prefs.email_address,
        "email": prefs.preferences.email,
        "slack": prefs.preferences.slack,
        "discord": prefs.preferences.discord,
        "warning_email": WarningEmail(prefs.preferences.warning_email).value,
        "updated_at": now,
    }
    updated = connection.execute(
        update(user_preferences).where(_p.tenant_id == tenant_id, _p.user_id == prefs.user_id).values(values)
    )
    if updated.rowcount == 0:
        connection.execute(
            insert(user_preferences), values | {"tenant_id": tenant_id, "user_id": prefs.user_id}
        )
    return get_preferences(connection, tenant_id, prefs.user_id)


def record_outcome(
    connection: Connection,
    destination_id: str,
    *,
    is_delivered: bool,
    error: str | None,
    failure_limit: int | None,
    at: datetime,
) -> bool:
    """Count a failure in a row (or reset the count); returns True when this failure disabled it."""
    if is_delivered:
        connection.execute(
            update(destinations)
            .where(_d.id == destination_id, _d.consecutive_failures != 0)
            .values(consecutive_failures=0)
        )
        return False
    failures = connection.scalar(
        update(destinations)
        .where(_d.id == destination_id)
        .values(consecutive_failures=_d.consecutive_failures + 1, last_error=error)
        .returning(_d.consecutive_failures)
    )
    if failure_limit is None or failures is None or failures < failure_limit:
        return False
    disabled = connection.execute(
        update(destinations)
        .where(_d.id == destination_id, _d.status == ENABLED)
        .values(status=DISABLED, disabled_at=at)
    ).rowcount
    abandoned = connection.execute(
        update(outbox)
        .where(outbox.c.destination_id == destination_id, outbox.c.status == "pending")
        .values(status="failed", last_error=DISABLED_ERROR, lease_owner=None, lease_expires_at=None)
    ).rowcount
    if disabled:
        log.error(
            "destination %s disabled after %d failed deliveries in a row (last: %s); %d pending "
            "notification(s) for it failed; re-enable it with `grantkeeper webhooks enable` or "
            "`grantkeeper channels enable`",
            destination_id,
            failures,
            error,
            abandoned,
            extra={"action": "destination_disabled", "destination_id": destination_id},
        )
    return bool(disabled)


def _record(row: Row[Any]) -> DestinationRecord:
    return _record_from_values(row._asdict())


def _record_from_values(row: dict[str, Any]) -> DestinationRecord:
    return DestinationRecord(
        destination_id=row["id"],
        tenant_id=row["tenant_id"],
        kind=DestinationKind(row["kind"]),
        user_id=row["user_id"],
        url_hint=row["url_hint"],
        status=row["status"],
        consecutive_failures=row["consecutive_failures"],
        last_error=row["last_error"],
        disabled_at=row["disabled_at"],
        created_at=row["created_at"],
    )
