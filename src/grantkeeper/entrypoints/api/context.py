"""What every request handler needs, built once per server process, and the tenant of a request.

Every ``/v1`` handler receives the tenant from its API key and passes its id to every store call, so a key
can never reach another tenant's rows (they answer 404, as if they did not exist).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.config import Settings
from grantkeeper.core.policy import Policy
from grantkeeper.entrypoints.api.errors import Problem
from grantkeeper.entrypoints.api.metrics import Metrics
from grantkeeper.ports import Clock, TenantRecord
from grantkeeper.service.connecting import ConnectFlow
from grantkeeper.service.cycle import RefreshService
from grantkeeper.service.report import CycleReport
from grantkeeper.service.tenants import tenant_for_api_key
from grantkeeper.service.vending import TokenVendor


@dataclass
class ApiContext:
    settings: Settings
    store: SqlStore
    clock: Clock
    policy: Policy
    metrics: Metrics
    service: RefreshService
    vendor: TokenVendor
    endpoint: HttpTokenEndpoint
    connect: ConnectFlow
    cycle_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def run_cycle(self) -> CycleReport | None:
        """One cycle, unless one is already running in this process (then None, at once)."""
        if self.cycle_lock.locked():
            return None
        async with self.cycle_lock:
            report = await self.service.run_cycle()
        self.metrics.observe_cycle(report)
        return report


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(get_context)]

_bearer = HTTPBearer(
    auto_error=False, description="The tenant's API key (`grantkeeper tenants create NAME`)."
)


async def current_tenant(
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantRecord:
    if credentials is None:
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    tenant = await asyncio.to_thread(tenant_for_api_key, context.store, credentials.credentials)
    if tenant is None:
        raise _unauthorized("unknown API key")
    return tenant


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="grantkeeper"'})


Tenant = Annotated[TenantRecord, Depends(current_tenant)]
