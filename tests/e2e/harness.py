"""An end-to-end rig: the real store (SQLite or PostgreSQL), the real HTTP client, the sandbox provider over
loopback, and a frozen clock, so the origin write-up's timelines run in milliseconds."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine

from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.core.policy import Policy
from grantkeeper.ports import AuthMethod, NewConnection, NewProvider
from grantkeeper.sandbox import Behaviour, GrantTokens, Sandbox
from grantkeeper.service import admin
from grantkeeper.service.cycle import RefreshService
from grantkeeper.service.report import CycleReport
from grantkeeper.testing import FrozenClock

CLIENT_ID = "app"
CLIENT_SECRET = "app-secret"


@dataclass
class Rig:
    engine: Engine
    store: SqlStore
    sandbox: Sandbox
    token_url: str
    clock: FrozenClock = field(default_factory=FrozenClock)
    policy: Policy = field(default_factory=Policy)
    tenant_id: str = ""
    provider: str = "sandbox"

    def __post_init__(self) -> None:
        self.tenant_id = self.store.ensure_tenant("default")
        admin.add_provider(
            self.store,
            self.tenant_id,
            NewProvider(
                name=self.provider,
                token_url=self.token_url,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                auth_method=AuthMethod.CLIENT_SECRET_BASIC,
            ),
        )
        self.endpoint = HttpTokenEndpoint(self.clock, connect_timeout=2.0, read_timeout=1.0)
        self.service = RefreshService(
            self.store,
            self.endpoint,
            self.clock,
            self.policy,
            concurrency=8,
            max_attempt_duration=timedelta(seconds=10),
            lease_ttl=timedelta(minutes=2),
            rng=random.Random(0),
        )

    def connect(
        self,
        user_id: str = "user-1",
        *,
        expires_in: timedelta = timedelta(minutes=-1),
        workflows: tuple[str, ...] = ("daily-sync",),
        behaviour: Behaviour | None = None,
        script: list[Behaviour] | None = None,
        lifetime: int = 3600,
    ) -> tuple[str, GrantTokens]:
        """A sandbox grant imported as a connection; by default its access token just expired (due now)."""
        grant = self.sandbox.issue_grant(client_id=CLIENT_ID, access_token_lifetime=lifetime)
        if behaviour is not None:
            self.sandbox.set_behaviour(grant.grant_id, behaviour)
        if script:
            self.sandbox.script(grant.grant_id, script)
        row = NewConnection(
            provider=self.provider,
            user_id=user_id,
            refresh_token=grant.refresh_token,
            access_token=grant.access_token,
            expires_at=self.clock.now() + expires_in,
            email=f"{user_id}@example.test",
            workflows=workflows,
        )
        (connection_id,) = admin.import_rows(self.store, self.tenant_id, [row], self.policy, self.clock)
        return connection_id, grant

    async def cycle(self) -> CycleReport:
        return await self.service.run_cycle()

    def state(self, connection_id: str):
        record = self.store.get_connection(self.tenant_id, connection_id)
        assert record is not None
        return record.state

    def notification_types(self) -> list[str]:
        return [n.type.value for n in reversed(self.store.list_notifications(self.tenant_id, 1000))]

    async def close(self) -> None:
        await self.endpoint.close()
        self.engine.dispose()


def one_slot_service(rig: Rig) -> RefreshService:
    """A refresh service with one request slot: the order of starts, requests and commits shows plainly."""
    return RefreshService(
        rig.store, rig.endpoint, rig.clock, rig.policy, concurrency=1,
        max_attempt_duration=timedelta(seconds=10), rng=random.Random(0),
    )  # fmt: skip


def count_ticks(rig: Rig) -> list[tuple[int, int]]:
    """(commits, starts) of each ``commit_and_start`` transaction from now on; the store's own call still
    does the work, it is only counted."""
    calls: list[tuple[int, int]] = []
    real = rig.store.commit_and_start

    def counted(batch, claims, now, attempt_ttl):
        calls.append((len(batch), len(claims)))
        return real(batch, claims, now, attempt_ttl)

    rig.store.commit_and_start = counted  # type: ignore[method-assign]
    return calls
