"""Shared by the delivery tests: notifications made the way a refresh attempt makes them (commit_attempt)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from grantkeeper.adapters.db import SqlStore
from grantkeeper.core.model import ConnectionState, Outcome
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.model import OutcomeClass as Klass
from tests.fixtures.db import LEASE_TTL, attempt_commit, new_connection, notice


def notify(
    store: SqlStore,
    tenant_id: str,
    user_id: str,
    at: datetime,
    kind: Kind = Kind.WARNING,
    *,
    email: str | None = "default",
    provider: str = "google",
) -> str:
    """A new connection of ``user_id`` whose attempt at ``at`` leaves one ``kind`` notification asking for
    email; ``email=None`` imports the connection without an address. Returns the connection id."""
    row = new_connection(user_id, provider=provider)
    if email != "default":
        row = replace(row, email=email)
    [connection_id] = store.import_connections(tenant_id, [row], at)
    [claim] = store.claim_ids(tenant_id, [connection_id], at, "worker", LEASE_TTL)
    commit = attempt_commit(
        claim,
        Outcome(Klass.AUTH, http_status=400),
        ConnectionState(next_attempt_at=at + timedelta(minutes=5)),
        notifications=(notice(kind, "email"),),
        attempted_at=at,
    )
    assert store.commit_attempt(commit)
    return connection_id
