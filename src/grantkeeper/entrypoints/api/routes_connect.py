"""Connecting in a browser: the API that makes connect links, and the pages a user's browser visits.

``POST /v1/connect-sessions`` and ``POST /v1/connections/{id}/reconnect-link`` answer ``{url, expires_at}``
for the application to show its user. ``/connect/...`` starts the authorization-code flow and
``/oauth/callback`` ends it (``service.connecting`` holds the logic and ADR 13 the reasons). The pages are
plain HTML (``html_pages``), and so are their errors.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Field

from grantkeeper.entrypoints.api.context import Context, Tenant
from grantkeeper.entrypoints.api.errors import problem_responses
from grantkeeper.entrypoints.api.html_pages import PAGE_HEADERS, page
from grantkeeper.entrypoints.api.schemas import Id, Strict, Text, Url
from grantkeeper.service.connecting import DEFAULT_LINK_TTL, MAX_LINK_TTL, Connected, Redirect, Refusal

#: The browser's id for binding a ``state`` to it (only its SHA-256 is stored); HttpOnly, SameSite=Lax (the
#: provider's redirect back is a top-level GET from another site, which Lax lets through).
BROWSER_COOKIE = "gk_browser"
BROWSER_COOKIE_MAX_AGE = 24 * 3600

api = APIRouter(tags=["connect"], responses=problem_responses(400, 401, 404, 422))
pages = APIRouter(tags=["connect pages"], include_in_schema=False)


class LinkOut(Strict):
    url: str
    expires_at: datetime


_Ttl = Annotated[
    int,
    Field(
        ge=60,
        le=int(MAX_LINK_TTL.total_seconds()),
        description="How long the link works, in seconds (default one hour, at most seven days).",
    ),
]


class ConnectSessionIn(Strict):
    provider: Text
    user_id: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    return_to: Url | None = None
    ttl_seconds: _Ttl = int(DEFAULT_LINK_TTL.total_seconds())


class ReconnectLinkIn(Strict):
    return_to: Url | None = None
    ttl_seconds: _Ttl = int(DEFAULT_LINK_TTL.total_seconds())


@api.post("/v1/connect-sessions", status_code=status.HTTP_201_CREATED, response_model=LinkOut)
async def create_connect_session(body: ConnectSessionIn, context: Context, tenant: Tenant) -> LinkOut:
    """A link that lets ``user_id`` connect ``provider`` in a browser; the connection exists once they
    consent. ``return_to`` must be on ``GRANTKEEPER_RETURN_URL_ALLOWLIST``."""
    link = await asyncio.to_thread(
        context.connect.new_session_link,
        tenant.tenant_id,
        body.provider,
        body.user_id,
        email=body.email,
        return_to=body.return_to,
        ttl=timedelta(seconds=body.ttl_seconds),
    )
    return LinkOut(url=link.url, expires_at=link.expires_at)


@api.post(
    "/v1/connections/{connection_id}/reconnect-link",
    status_code=status.HTTP_201_CREATED,
    response_model=LinkOut,
)
async def create_reconnect_link(
    connection_id: Id, context: Context, tenant: Tenant, body: ReconnectLinkIn | None = None
) -> LinkOut:
    """A link that reconnects this connection (it keeps its id): counters reset, workflows resume."""
    body = body or ReconnectLinkIn()
    link = await asyncio.to_thread(
        context.connect.reconnect_link,
        tenant.tenant_id,
        connection_id,
        return_to=body.return_to,
        ttl=timedelta(seconds=body.ttl_seconds),
    )
    return LinkOut(url=link.url, expires_at=link.expires_at)


# --- pages -----------------------------------------------------------------------------------------------

_Query = Annotated[str | None, Query(max_length=4096)]


@pages.get("/connect/session/{secret}")
async def connect_session(
    secret: str, request: Request, context: Context, return_to: _Query = None
) -> Response:
    answer = await asyncio.to_thread(
        context.connect.begin_session, secret, request.cookies.get(BROWSER_COOKIE), return_to
    )
    return _begun(answer, context.settings.public_url)


@pages.get("/connect/{connection_id}")
async def connect_signed(
    connection_id: str, request: Request, context: Context, token: _Query = None, return_to: _Query = None
) -> Response:
    answer = await asyncio.to_thread(
        context.connect.begin_signed,
        connection_id[:64],
        token or "",
        request.cookies.get(BROWSER_COOKIE),
        return_to,
    )
    return _begun(answer, context.settings.public_url)


@pages.get("/oauth/callback")
async def oauth_callback(
    request: Request,
    context: Context,
    state: _Query = None,
    code: _Query = None,
    error: _Query = None,
    iss: _Query = None,
) -> Response:
    answer = await context.connect.finish(
        state=state, code=code, error=error, browser_id=request.cookies.get(BROWSER_COOKIE), iss=iss
    )
    if isinstance(answer, Refusal):
        return _refusal_page(answer)
    if answer.return_to is not None:
        return RedirectResponse(answer.return_to, status_code=303, headers=PAGE_HEADERS)
    return _connected_page(answer)


def _begun(answer: Redirect | Refusal, public_url: str) -> Response:
    if isinstance(answer, Refusal):
        return _refusal_page(answer)
    response = RedirectResponse(answer.location, status_code=303, headers=PAGE_HEADERS)
    if answer.browser_cookie is not None:
        response.set_cookie(
            BROWSER_COOKIE,
            answer.browser_cookie,
            max_age=BROWSER_COOKIE_MAX_AGE,
            path="/",
            secure=public_url.startswith("https://"),
            httponly=True,
            samesite="lax",
        )
    return response


def _connected_page(connected: Connected) -> HTMLResponse:
    verb = "connected" if connected.is_new else "reconnected"
    message = f"Your {connected.provider} account is {verb}."
    if not connected.is_new and not connected.resumed_workflows:
        message += " No workflows were waiting on it."
    return page(
        200,
        kind="connected",
        ok=True,
        title=f"{connected.provider} {verb}",
        message=message,
        workflows=connected.resumed_workflows,
    )


def _refusal_page(refusal: Refusal) -> HTMLResponse:
    return page(
        refusal.status, kind=refusal.kind.value, ok=False, title=refusal.title, message=refusal.message
    )
