"""Connect sessions and authorization requests: the stored side of connecting in a browser (ADR 13).

Bearer values (a link's secret, a ``state``, the browser's cookie) are stored only as SHA-256 digests, so a
copy of the database opens no flow; the PKCE verifier must be sent to the provider later, so it is sealed
like a token, bound to its row. Taking an authorization request is one conditional UPDATE: of two callbacks
with the same ``state`` (a replay, a double submit) exactly one gets it. Completing a session is likewise
conditional on ``completed_at IS NULL``, in the same transaction that stores the tokens, so a link connects
once even when two tabs come back at once.
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from grantkeeper.adapters.db import commits, imports
from grantkeeper.adapters.db.catalog import insert_ignoring_duplicates, providers_by_id
from grantkeeper.adapters.db.fanout import DEFAULT_DIGEST_HOUR
from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import (
    authorization_requests,
    connect_sessions,
    connections,
    new_id,
    providers,
)
from grantkeeper.ports import (
    CallbackCheck,
    ConnectCompletion,
    ConnectResult,
    ConnectSession,
    NewAuthorizationRequest,
    NewConnectSession,
    TakenAuthorization,
    UnknownConnectionError,
    UnknownProviderError,
)

_s = connect_sessions.c
_a = authorization_requests.c


def create_session(
    connection: Connection, cipher: FieldCipher, session: NewConnectSession, now: datetime
) -> ConnectSession:
    """Store a link's session; the provider (by name) or the connection must be the tenant's own."""
    if session.connection_id is not None:
        row = connection.execute(
            select(connections.c.provider_id, connections.c.user_id, connections.c.email).where(
                connections.c.tenant_id == session.tenant_id, connections.c.id == session.connection_id
            )
        ).first()
        if row is None:
            raise UnknownConnectionError([session.connection_id])
        provider_id, user_id, email = row
    else:
        provider_id = connection.scalar(
            select(providers.c.id).where(
                providers.c.tenant_id == session.tenant_id, providers.c.name == session.provider
            )
        )
        if provider_id is None:
            raise UnknownProviderError(session.provider or "")
        user_id, email = session.user_id, session.email
    session_id = new_id("cs")
    values = {
        "id": session_id,
        "tenant_id": session.tenant_id,
        "secret_hash": session.secret_hash,
        "provider_id": provider_id,
        "user_id": user_id,
        "email": email,
        "connection_id": session.connection_id,
        "return_to": session.return_to,
        "created_at": now,
        "expires_at": session.expires_at,
        "completed_at": None,
    }
    # An email's signed link makes its session on each click: the first one's row wins, the rest find it.
    insert_ignoring_duplicates(connection, connect_sessions, [values], ["secret_hash"])
    stored = session_by_secret(connection, cipher, session.secret_hash)
    if stored is None:  # its provider's secret no key opens
        raise UnknownProviderError(session.provider or str(provider_id))
    return stored


def tenant_of_connection(connection: Connection, connection_id: str) -> str | None:
    """The tenant owning a connection id (an email's signed link names only the connection)."""
    query = select(connections.c.tenant_id).where(connections.c.id == connection_id)
    tenant_id: str | None = connection.scalar(query)
    return tenant_id


def session_by_secret(connection: Connection, cipher: FieldCipher, secret_hash: str) -> ConnectSession | None:
    row = connection.execute(select(connect_sessions).where(_s.secret_hash == secret_hash)).first()
    if row is None:
        return None
    provider = providers_by_id(connection, cipher, [row.provider_id]).get(row.provider_id)
    if provider is None:
        return None
    return ConnectSession(
        session_id=row.id,
        tenant_id=row.tenant_id,
        provider=provider,
        user_id=row.user_id,
        email=row.email,
        connection_id=row.connection_id,
        return_to=row.return_to,
        expires_at=row.expires_at,
        completed_at=row.completed_at,
    )


def _session_by_id(connection: Connection, cipher: FieldCipher, session_id: str) -> ConnectSession | None:
    secret_hash = connection.scalar(select(_s.secret_hash).where(_s.id == session_id))
    return None if secret_hash is None else session_by_secret(connection, cipher, secret_hash)


def add_authorization_request(
    connection: Connection, cipher: FieldCipher, request: NewAuthorizationRequest, now: datetime
) -> None:
    sealed = cipher.seal("authorization_requests", request.state_hash, "code_verifier", request.code_verifier)
    connection.execute(
        authorization_requests.insert().values(
            state_hash=request.state_hash,
            session_id=request.session_id,
            browser_hash=request.browser_hash,
            code_verifier_enc=sealed,
            redirect_uri=request.redirect_uri,
            return_to=request.return_to,
            created_at=now,
            expires_at=request.expires_at,
            used_at=None,
        )
    )


def take_authorization_request(
    connection: Connection, cipher: FieldCipher, state_hash: str, browser_hash: str | None, now: datetime
) -> TakenAuthorization:
    """Check a callback's ``state`` and, when it is good, mark it used (once, whoever asks first).

    A state presented by another browser is refused without being used up: the attacker's request must not
    cancel the user's own sign-in, still under way in the user's browser."""
    row = connection.execute(select(authorization_requests).where(_a.state_hash == state_hash)).first()
    if row is None:
        return TakenAuthorization(CallbackCheck.UNKNOWN)
    if row.used_at is not None:
        return TakenAuthorization(CallbackCheck.USED)
    if row.expires_at <= now:
        return TakenAuthorization(CallbackCheck.EXPIRED)
    if browser_hash is None or not _same(browser_hash, row.browser_hash):
        return TakenAuthorization(CallbackCheck.OTHER_BROWSER)
    taken = connection.execute(
        update(authorization_requests)
        .where(_a.state_hash == state_hash, _a.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if taken != 1:
        return TakenAuthorization(CallbackCheck.USED)
    session = _session_by_id(connection, cipher, row.session_id)
    if session is None:  # the provider or connection was deleted since
        return TakenAuthorization(CallbackCheck.UNKNOWN)
    verifier = cipher.open("authorization_requests", state_hash, "code_verifier", row.code_verifier_enc)
    return TakenAuthorization(
        CallbackCheck.OK,
        session=session,
        code_verifier=verifier,
        redirect_uri=row.redirect_uri,
        return_to=row.return_to,
    )


def complete(
    connection: Connection,
    cipher: FieldCipher,
    completion: ConnectCompletion,
    *,
    digest_hour: int = DEFAULT_DIGEST_HOUR,
) -> ConnectResult | None:
    """Store the tokens of a finished flow, once per session; None when the session was completed already
    (another tab got there first) or its connection is gone."""
    claimed = connection.execute(
        update(connect_sessions)
        .where(_s.id == completion.session_id, _s.completed_at.is_(None))
        .values(completed_at=completion.now)
        .returning(_s.tenant_id, _s.connection_id)
    ).first()
    if claimed is None:
        return None
    tenant_id, connection_id = claimed
    if connection_id is not None:
        if completion.transition is None:
            raise ValueError("a reconnect needs its transition")
        resumed = commits.reconnect(
            connection,
            cipher,
            tenant_id,
            connection_id,
            completion.tokens,
            completion.transition,
            completion.now,
            notifications=completion.notifications,
            digest_hour=digest_hour,
        )
        if resumed is None:
            return None
        return ConnectResult(connection_id, is_new=False, resumed_workflows=tuple(resumed))
    if completion.new_connection is None:
        raise ValueError("a new connection needs its row")
    [created] = imports.import_connections(
        connection, cipher, tenant_id, [completion.new_connection], completion.now
    )
    connection.execute(
        update(connect_sessions).where(_s.id == completion.session_id).values(connection_id=created)
    )
    return ConnectResult(created, is_new=True, resumed_workflows=())


def prune_expired(connection: Connection, before: datetime) -> int:
    """Delete authorization requests and connect sessions that expired before ``before`` (their requests
    go with them); returns how many rows went. A link lives hours and a request minutes, so these tables stay
    small: one statement each, no batching."""
    requests_gone = connection.execute(delete(authorization_requests).where(_a.expires_at < before)).rowcount
    sessions_gone = connection.execute(delete(connect_sessions).where(_s.expires_at < before)).rowcount
    return int(requests_gone) + int(sessions_gone)


def _same(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode("ascii", "replace"), right.encode("ascii", "replace"))
