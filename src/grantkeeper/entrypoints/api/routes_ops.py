"""Operations: the cron endpoint, health and readiness probes, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from grantkeeper.entrypoints.api.context import Context
from grantkeeper.entrypoints.api.errors import Problem, problem_responses
from grantkeeper.entrypoints.api.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


def _secret_matches(given: str | None, configured: str) -> bool:
    """Constant-time comparison, so response timing says nothing about how much of a guess was right."""
    return given is not None and hmac.compare_digest(given.encode("utf-8"), configured.encode("utf-8"))


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


_CRON_ERRORS = problem_responses(401, 422, 503)


@router.get("/api/cron/token-refresh", operation_id="cron_token_refresh_get", responses=_CRON_ERRORS)
@router.post("/api/cron/token-refresh", operation_id="cron_token_refresh_post", responses=_CRON_ERRORS)
async def cron_token_refresh(
    context: Context,
    authorization: Annotated[str | None, Header()] = None,
    secret: Annotated[
        str | None, Query(max_length=512, description="Compatibility; prefer the header")
    ] = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run one refresh cycle now, for cron-style deployments (``Authorization: Bearer <CRON_SECRET>``).

    A call that arrives while a cycle runs in this process returns at once with ``status: already_running``;
    across processes, leases keep two cycles from refreshing one connection twice.
    """
    configured = context.settings.cron_secret
    if configured is None or not configured.get_secret_value():
        raise Problem(503, "cron-disabled", "the cron endpoint is off: set GRANTKEEPER_CRON_SECRET")
    expected = configured.get_secret_value()
    if not (_secret_matches(_bearer(authorization), expected) or _secret_matches(secret, expected)):
        raise Problem(
            401, "unauthorized", "wrong or missing cron secret", headers={"WWW-Authenticate": "Bearer"}
        )
    report = await context.run_cycle()
    if report is None:
        return {"status": "already_running"}
    return {"status": "completed", **report.as_dict(verbose=verbose)}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (liveness): no dependency is checked."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503))
async def readyz(context: Context) -> dict[str, str]:
    """The database answers and its schema is current (readiness)."""
    try:
        await asyncio.to_thread(context.store.ping)
        is_current = await asyncio.to_thread(context.store.schema_is_current)
    except Exception as exc:
        raise Problem(503, "not-ready", f"database unreachable ({type(exc).__name__})") from None
    if not is_current:
        raise Problem(503, "not-ready", "database schema is not current: run `grantkeeper migrate`")
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(context: Context) -> Response:
    body = await asyncio.to_thread(context.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
