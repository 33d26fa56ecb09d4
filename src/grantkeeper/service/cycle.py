"""A refresh cycle: lease due connections in batches, refresh them concurrently (bounded), commit each alone.

A cycle takes only connections due at its start. Every attempt schedules the next one after that instant, so
a cycle always ends, even against a provider that fails fast forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from grantkeeper.core.model import ConnectionStatus, NotificationType, OutcomeClass
from grantkeeper.core.policy import Policy
from grantkeeper.ports import ClaimedConnection, Clock, ConnectionStore, TokenEndpoint
from grantkeeper.service.attempt import AttemptResult, AttemptRunner

log = logging.getLogger("grantkeeper.cycle")

#: A provider whose attempts in one cycle fail at least this often (over at least ``_ALERT_MIN_ATTEMPTS``)
#: gets an operator alert: most users cannot all have revoked access at once.
_ALERT_FAILURE_RATIO = 0.8
_ALERT_MIN_ATTEMPTS = 10


@dataclass(frozen=True)
class AttemptRow:
    """One line of a verbose cycle report: ids, outcome, counters and status; never a token."""

    connection_id: str
    provider: str
    user_id: str
    outcome: OutcomeClass
    error_code: str | None
    http_status: int | None
    consecutive_failures: int
    consecutive_transient_failures: int
    status: ConnectionStatus
    is_stale: bool
    is_committed: bool


@dataclass
class CycleReport:
    started_at: datetime
    finished_at: datetime | None = None
    due: int = 0
    by_outcome: Counter[str] = field(default_factory=Counter)
    newly_disconnected: int = 0
    notifications: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    skipped: int = 0
    errors: int = 0
    lease_conflicts: int = 0
    provider_alerts: list[str] = field(default_factory=list)
    rows: list[AttemptRow] = field(default_factory=list)

    @property
    def refreshed(self) -> int:
        return self.by_outcome[OutcomeClass.SUCCESS.value]

    @property
    def duration(self) -> timedelta:
        return (self.finished_at or self.started_at) - self.started_at

    def add(self, result: AttemptResult) -> None:
        self.by_outcome[result.outcome.klass.value] += 1
        state = result.transition.state
        was_connected = result.claim.state.status is ConnectionStatus.CONNECTED
        if was_connected and state.status is ConnectionStatus.NEEDS_REAUTHORIZATION:
            self.newly_disconnected += 1
        for content in result.notifications:
            self.notifications[content.type.value] += 1
        self.stale += result.transition.is_stale
        self.lease_conflicts += not result.is_committed
        self.rows.append(_row(result))

    def as_dict(self, *, verbose: bool = False) -> dict[str, object]:
        """The JSON summary (CLI ``--json`` and the cron endpoint)."""
        summary: dict[str, object] = {
            "started_at": self.started_at.isoformat(),
            "finished_at": (self.finished_at or self.started_at).isoformat(),
            "duration_seconds": round(self.duration.total_seconds(), 3),
            "due": self.due,
            "refreshed": self.refreshed,
            "by_outcome": {klass.value: self.by_outcome[klass.value] for klass in OutcomeClass},
            "newly_disconnected": self.newly_disconnected,
            "notifications_created": sum(self.notifications.values()),
            "notifications": {kind.value: self.notifications[kind.value] for kind in NotificationType},
            "stale": self.stale,
            "skipped": self.skipped,
            "errors": self.errors,
            "lease_conflicts": self.lease_conflicts,
            "provider_alerts": list(self.provider_alerts),
        }
        if verbose:
            summary["connections"] = [_row_dict(row) for row in self.rows]
        return summary


def _row(result: AttemptResult) -> AttemptRow:
    state = result.transition.state
    return AttemptRow(
        connection_id=result.claim.connection_id,
        provider=result.claim.provider.name,
        user_id=result.claim.user_id,
        outcome=result.outcome.klass,
        error_code=result.outcome.error.code if result.outcome.error else None,
        http_status=result.outcome.http_status,
        consecutive_failures=state.consecutive_failures,
        consecutive_transient_failures=state.consecutive_transient_failures,
        status=state.status,
        is_stale=result.transition.is_stale,
        is_committed=result.is_committed,
    )


def _row_dict(row: AttemptRow) -> dict[str, object]:
    return {
        "id": row.connection_id,
        "provider": row.provider,
        "user_id": row.user_id,
        "outcome": row.outcome.value,
        "error_code": row.error_code,
        "http_status": row.http_status,
        "consecutive_failures": row.consecutive_failures,
        "consecutive_transient_failures": row.consecutive_transient_failures,
        "status": row.status.value,
        "stale": row.is_stale,
    }


def failing_providers(rows: Sequence[AttemptRow]) -> list[str]:
    """Providers whose refreshes failed for most connections in this cycle: an operator problem."""
    attempts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for row in rows:
        attempts[row.provider] += 1
        failures[row.provider] += row.outcome is not OutcomeClass.SUCCESS
    return sorted(
        name
        for name, count in attempts.items()
        if count >= _ALERT_MIN_ATTEMPTS and failures[name] / count >= _ALERT_FAILURE_RATIO
    )


def default_owner() -> str:
    """A lease owner id unique to this process (host, pid, random) so two workers never share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: Leases up to n more connections; also says whether that was the last batch.
Claimer = Callable[[int], Awaitable[tuple[list[ClaimedConnection], bool]]]


class RefreshService:
    """The refresh use cases: one scheduled cycle, or an immediate refresh of named connections."""

    def __init__(
        self,
        store: ConnectionStore,
        endpoint: TokenEndpoint,
        clock: Clock,
        policy: Policy,
        *,
        concurrency: int = 32,
        lease_ttl: timedelta = timedelta(minutes=2),
        max_attempt_duration: timedelta = timedelta(seconds=30),
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease_ttl <= max_attempt_duration:
            raise ValueError("lease_ttl must be longer than max_attempt_duration")
        self._store = store
        self._clock = clock
        self._concurrency = concurrency
        self._lease_ttl = lease_ttl
        self.owner = owner or default_owner()
        self._runner = AttemptRunner(
            store,
            endpoint,
            clock,
            policy,
            rng or random.Random(),  # noqa: S311 - jitter, not security
            max_attempt_duration=max_attempt_duration,
        )

    async def run_cycle(self, tenant_id: str | None = None) -> CycleReport:
        """Refresh every connection due now (all tenants unless one is named)."""
        report = CycleReport(started_at=self._clock.now())
        due_at = report.started_at

        async def claim(limit: int) -> tuple[list[ClaimedConnection], bool]:
            claims = await asyncio.to_thread(
                self._store.claim_due, due_at, limit, self.owner, self._lease_ttl, tenant_id
            )
            return claims, len(claims) < limit

        await self._drain(claim, report)
        return self._finish(report)

    async def refresh_now(self, tenant_id: str, connection_ids: Sequence[str] | None) -> CycleReport:
        """Refresh the named (or all) connected connections now, ignoring lead window and backoff.

        Named ids are checked up front (an unknown id refreshes nothing); every connection is then leased in
        batches just before its turn, so a lease never runs out while it waits in line.
        """
        report = CycleReport(started_at=self._clock.now())
        wanted = await asyncio.to_thread(self._connected_ids, tenant_id, connection_ids)

        async def claim(limit: int) -> tuple[list[ClaimedConnection], bool]:
            batch, wanted[:] = wanted[:limit], wanted[limit:]
            claims = await asyncio.to_thread(
                self._store.claim_ids, tenant_id, batch, self._clock.now(), self.owner, self._lease_ttl
            )
            return claims, not wanted  # some may be leased elsewhere: only the id list decides the end

        await self._drain(claim, report)
        return self._finish(report)

    def _connected_ids(self, tenant_id: str, connection_ids: Sequence[str] | None) -> list[str]:
        if connection_ids is not None:
            self._store.check_connections(tenant_id, connection_ids)
            return list(dict.fromkeys(connection_ids))
        connected = self._store.list_connections(tenant_id, ConnectionStatus.CONNECTED)
        return [record.connection_id for record in connected]

    async def _drain(self, claim: Claimer, report: CycleReport) -> None:
        """Keep ``concurrency`` attempts in flight, leasing ahead so workers never wait on the store."""
        queue: asyncio.Queue[ClaimedConnection | None] = asyncio.Queue(maxsize=self._concurrency)
        batch_size = max(self._concurrency, 16)

        async def feed() -> None:
            is_last = False
            while not is_last:
                batch, is_last = await claim(batch_size)
                report.due += len(batch)
                for item in batch:
                    await queue.put(item)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                try:
                    result = await self._runner.run(item)
                except Exception as exc:  # a bug or a dead store must not stop the other attempts
                    log.error(
                        "attempt for %s failed: %s",
                        item.connection_id,
                        type(exc).__name__,
                        extra={"action": "attempt_error", "connection_id": item.connection_id},
                    )
                    report.errors += 1
                    continue
                if result is None:
                    report.skipped += 1
                else:
                    report.add(result)

        async with asyncio.TaskGroup() as group:
            for _ in range(self._concurrency):
                group.create_task(work())
            await feed()  # if it raises, the task group cancels the workers
            for _ in range(self._concurrency):
                await queue.put(None)

    def _finish(self, report: CycleReport) -> CycleReport:
        report.finished_at = self._clock.now()
        report.provider_alerts = failing_providers(report.rows)
        for name in report.provider_alerts:
            log.warning(
                "provider %s failed for most connections this cycle",
                name,
                extra={"action": "provider_alert", "provider": name},
            )
        return report
