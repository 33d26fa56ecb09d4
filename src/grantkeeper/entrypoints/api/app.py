"""``create_app``: the HTTP API of ``grantkeeper serve``, with the scheduler beside it unless told not to.

Nothing is built at import time: the app's context (HTTP client, refresh service, token vendor, metrics)
is made in the lifespan, inside the server's event loop, and closed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

from grantkeeper import __version__
from grantkeeper.bootstrap import Runtime, warn_if_retries_miss_grace_windows
from grantkeeper.entrypoints.api import (
    routes_connect,
    routes_connections,
    routes_notify,
    routes_ops,
    routes_resources,
)
from grantkeeper.entrypoints.api.context import ApiContext
from grantkeeper.entrypoints.api.errors import install_error_handlers
from grantkeeper.entrypoints.api.metrics import Metrics
from grantkeeper.service.retention import run_pruning
from grantkeeper.service.scheduler import run_cycles
from grantkeeper.service.vending import TokenVendor

access_log = logging.getLogger("grantkeeper.access")


def _status_counts(runtime: Runtime) -> Callable[[], dict[str, int]]:
    def counts() -> dict[str, int]:
        totals: dict[str, int] = {}
        for tenant in runtime.store.list_tenants():
            for status, count in runtime.store.count_by_status(tenant.tenant_id).items():
                totals[status] = totals.get(status, 0) + count
        return totals

    return counts


def _context(runtime: Runtime, metrics: Metrics) -> ApiContext:
    service, endpoint = runtime.refresh_service(on_attempt=metrics.observe_attempt)
    vendor = TokenVendor(
        runtime.store, service.runner, runtime.clock, owner=service.owner, lease_ttl=service.lease_ttl
    )
    return ApiContext(
        settings=runtime.settings,
        store=runtime.store,
        clock=runtime.clock,
        policy=runtime.policy,
        metrics=metrics,
        service=service,
        vendor=vendor,
        endpoint=endpoint,
        connect=runtime.connect_flow(endpoint),
    )


def create_app(runtime: Runtime, *, run_scheduler: bool = True) -> FastAPI:
    metrics = Metrics(_status_counts(runtime))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = _context(runtime, metrics)
        app.state.context = context
        stop = asyncio.Event()
        background: list[asyncio.Task[int]] = []
        dispatcher = None
        if run_scheduler:
            interval = runtime.settings.poll_interval_seconds
            warn_if_retries_miss_grace_windows(runtime.settings, interval)
            background.append(
                asyncio.create_task(run_cycles(context.run_cycle, interval=interval, stop=stop))
            )
            dispatcher = runtime.dispatcher()
            if dispatcher is not None:
                deliver = run_cycles(dispatcher.deliver_due, interval=interval, stop=stop)
                background.append(asyncio.create_task(deliver))
            settings = runtime.settings  # a retention of 0 keeps those rows; expired links go anyway
            prune = run_pruning(
                runtime.store,
                runtime.clock,
                settings.attempt_retention,
                stop=stop,
                notifications_keep=settings.notification_retention,
            )
            background.append(asyncio.create_task(prune))
        try:
            yield
        finally:
            stop.set()
            context.service.runner.stop_committing_after()  # a held answer gets a bounded grace, as in worker
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await context.endpoint.close()
            context.service.runner.close()
            if dispatcher is not None:
                await dispatcher.close()

    app = FastAPI(
        title="grantkeeper",
        version=__version__,
        description="Keeps OAuth connections alive: valid tokens on demand, refreshes before expiry, "
        "and a clear signal when a user must reconnect.",
        lifespan=lifespan,
    )
    app.state.public_url = runtime.settings.public_url.rstrip("/")
    install_error_handlers(app)
    for router in (
        routes_connections.router,
        routes_resources.providers,
        routes_resources.workflows,
        routes_resources.notifications,
        routes_notify.webhooks,
        routes_notify.channels,
        routes_notify.preferences,
        routes_notify.deliveries,
        routes_ops.router,
        routes_connect.api,
        routes_connect.pages,
    ):
        app.include_router(router)
    app.middleware("http")(_access_log)
    # Our access log replaces uvicorn's, which would print query strings (the cron secret may be one). The
    # servers are started with access_log=False too; disabling the logger also holds when a handler was
    # attached to it directly, as pytest's log capture does.
    logging.getLogger("uvicorn.access").disabled = True
    return app


_SESSION_LINK_PREFIX = "/connect/session/"


async def _access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """One line per request with the path only: a query string may carry the cron secret (``?secret=``)."""
    started = time.perf_counter()
    response = await call_next(request)
    path = request.url.path
    if path.startswith(_SESSION_LINK_PREFIX):  # a connect link's secret is in its path
        path = _SESSION_LINK_PREFIX + "<secret>"
    access_log.info(
        "%s %s %d %.1fms",
        request.method,
        path,
        response.status_code,
        (time.perf_counter() - started) * 1000,
        extra={"action": "http_request"},
    )
    return response
