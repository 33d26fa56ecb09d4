"""``/v1/connections``: create, bulk import, list, get, delete, attempt history, and the on-demand token."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from pydantic import AwareDatetime

from grantkeeper.core.model import ConnectionStatus
from grantkeeper.entrypoints.api.context import Context, Tenant
from grantkeeper.entrypoints.api.errors import Problem, not_found, problem_responses
from grantkeeper.entrypoints.api.schemas import (
    AttemptOut,
    ConnectionIn,
    ConnectionOut,
    ConnectionPage,
    ImportIn,
    ImportOut,
    TokenOut,
)
from grantkeeper.ports import NewConnection, UnknownConnectionError
from grantkeeper.service import admin, deleting

router = APIRouter(
    prefix="/v1/connections", tags=["connections"], responses=problem_responses(400, 401, 404, 409, 422)
)


def _new_connection(body: ConnectionIn) -> NewConnection:
    return NewConnection(
        provider=body.provider,
        user_id=body.user_id,
        refresh_token=body.refresh_token,
        access_token=body.access_token,
        expires_at=body.expires_at,
        email=body.email,
        workflows=tuple(dict.fromkeys(body.workflows)),
    )


async def _import(
    context: Context, tenant_id: str, bodies: list[ConnectionIn], *, is_bulk: bool = True
) -> list[str]:
    known = {p.name for p in await asyncio.to_thread(context.store.list_providers, tenant_id)}
    unknown = [
        {
            "location": f"body.connections.{index}.provider" if is_bulk else "body.provider",
            "message": f"unknown provider {body.provider!r}",
        }
        for index, body in enumerate(bodies)
        if body.provider not in known
    ]
    if unknown:
        detail = "nothing was imported: unknown provider(s)" if is_bulk else "unknown provider"
        raise Problem(422, "unknown-provider", detail, errors=unknown)
    rows = [_new_connection(body) for body in bodies]
    return await asyncio.to_thread(
        admin.import_rows, context.store, tenant_id, rows, context.policy, context.clock
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ConnectionOut)
async def create_connection(body: ConnectionIn, context: Context, tenant: Tenant) -> ConnectionOut:
    (connection_id,) = await _import(context, tenant.tenant_id, [body], is_bulk=False)
    record = await asyncio.to_thread(context.store.get_connection, tenant.tenant_id, connection_id)
    assert record is not None
    return ConnectionOut.of(record)


@router.post("/import", status_code=status.HTTP_201_CREATED, response_model=ImportOut)
async def import_connections(body: ImportIn, context: Context, tenant: Tenant) -> ImportOut:
    """All or nothing: one bad item (unknown provider, bad field) imports none of them."""
    ids = await _import(context, tenant.tenant_id, body.connections)
    return ImportOut(imported=len(ids), ids=ids)


def _encode_cursor(after: str | None) -> str | None:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=") if after else None


_CONNECTION_ID = re.compile(r"con_[0-9a-f]{20}")


def _decode_cursor(cursor: str) -> str:
    """Strict base64url of a connection id: anything else is a cursor this API never returned."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        after = ""
    if not _CONNECTION_ID.fullmatch(after):
        raise Problem(422, "invalid-cursor", "cursor is not one this API returned")
    return after


@router.get("", response_model=ConnectionPage)
async def list_connections(
    context: Context,
    tenant: Tenant,
    status: ConnectionStatus | None = None,
    provider: Annotated[str | None, Query(max_length=100)] = None,
    user_id: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ConnectionPage:
    after = _decode_cursor(cursor) if cursor else None
    records, next_after = await asyncio.to_thread(
        context.store.list_connections_page,
        tenant.tenant_id,
        status=status,
        provider=provider,
        user_id=user_id,
        after=after,
        limit=limit,
    )
    return ConnectionPage(
        items=[ConnectionOut.of(r) for r in records], next_cursor=_encode_cursor(next_after)
    )


@router.get("/{connection_id}", response_model=ConnectionOut)
async def get_connection(connection_id: str, context: Context, tenant: Tenant) -> ConnectionOut:
    record = await asyncio.to_thread(context.store.get_connection, tenant.tenant_id, connection_id)
    if record is None:
        raise not_found("connection", connection_id)
    return ConnectionOut.of(record)


@router.delete("/{connection_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_connection(connection_id: str, context: Context, tenant: Tenant) -> Response:
    """Revoke the grant at the provider (RFC 7009) when it has a revocation endpoint, then erase the tokens.

    A revocation that fails is logged and does not stop the deletion: the user asked us to forget the grant.
    """
    try:
        await deleting.delete_connection(context.store, context.endpoint, tenant.tenant_id, connection_id)
    except UnknownConnectionError:
        raise not_found("connection", connection_id) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{connection_id}/attempts", response_model=list[AttemptOut])
async def list_attempts(
    connection_id: str,
    context: Context,
    tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[
        AwareDatetime | None,
        Query(description="Only attempts before this instant: the last one's attempted_at pages back"),
    ] = None,
) -> list[AttemptOut]:
    """The connection's refresh attempts, newest first: when each ran, how it was classified, the HTTP status
    and error code the provider answered, how long it took. Kept for the attempt retention
    (``GRANTKEEPER_ATTEMPT_RETENTION_DAYS``)."""
    records = await asyncio.to_thread(
        context.store.list_attempts, tenant.tenant_id, connection_id, limit, before
    )
    return [AttemptOut.of(record) for record in records]


@router.get("/{connection_id}/token", response_model=TokenOut, responses=problem_responses(503))
async def get_token(
    connection_id: str,
    context: Context,
    tenant: Tenant,
    response: Response,
    min_validity: Annotated[
        int, Query(ge=0, le=86_400, description="Seconds the token must stay valid")
    ] = 60,
) -> TokenOut:
    """A valid access token, refreshed first (once, however many ask at the same time) when it would expire
    within ``min_validity`` seconds. 409 when the user must reconnect; 503 with Retry-After when the provider
    is in trouble."""
    vended = await context.vendor.token(tenant.tenant_id, connection_id, timedelta(seconds=min_validity))
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(
        access_token=vended.access_token, token_type=vended.token_type, expires_at=vended.expires_at
    )
