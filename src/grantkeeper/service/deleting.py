"""Deleting a connection for good, for the HTTP API and the CLI alike: revoke the grant at the provider first
(RFC 7009) where it has a revocation endpoint, then forget the tokens.

A revocation that fails (the provider is down, refuses, or times out) is logged and does not stop the
deletion: whoever deletes a connection asked us to forget the grant, and keeping tokens for a retry would do
the opposite. The answer says what came of the revocation, so the caller can tell the user to revoke by hand.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from grantkeeper.ports import ConnectionStore, TokenRevoker, UnknownConnectionError

log = logging.getLogger("grantkeeper.connections")


@dataclass(frozen=True)
class Deletion:
    """``revoked``: True when the provider confirmed, False when it failed (``revocation_error`` says why),
    None when nothing was sent (no revocation endpoint, or no refresh token on file)."""

    connection_id: str
    revoked: bool | None
    revocation_error: str | None = None


async def delete_connection(
    store: ConnectionStore, revoker: TokenRevoker, tenant_id: str, connection_id: str
) -> Deletion:
    """Revoke, then delete; ``UnknownConnectionError`` when the tenant has no such connection."""
    record = await asyncio.to_thread(store.get_connection, tenant_id, connection_id)
    if record is None:
        raise UnknownConnectionError([connection_id])
    provider = await asyncio.to_thread(store.get_provider, tenant_id, record.provider)
    tokens = await asyncio.to_thread(store.read_tokens, tenant_id, connection_id)
    deletion = Deletion(connection_id, None)
    if provider is not None and provider.revocation_url and tokens is not None and tokens.refresh_token:
        result = await revoker.revoke(provider, tokens.refresh_token, "refresh_token")
        error = None if result.is_revoked else str(result.error_code or result.http_status or "unknown")
        deletion = Deletion(connection_id, result.is_revoked, error)
        if error is not None:
            log.warning(
                "revocation of %s at %s failed: %s",
                connection_id,
                provider.name,
                error,
                extra={"action": "revocation_failed", "connection_id": connection_id},
            )
    await asyncio.to_thread(store.delete_connection, tenant_id, connection_id)
    return deletion
