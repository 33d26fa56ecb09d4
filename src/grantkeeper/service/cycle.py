"""A refresh cycle: lease due connections in batches, refresh them concurrently (bounded), commit in groups.

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
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from grantkeeper.core.model import ConnectionStatus
from grantkeeper.core.policy import Policy, probe_horizon
from grantkeeper.ports import ClaimedConnection, Clock, ConnectionStore, StoreUnavailableError, TokenEndpoint
from grantkeeper.service.attempt import AttemptResult, AttemptRunner
from grantkeeper.service.outage import OutageWatch
from grantkeeper.service.report import CycleReport, failing_providers
from grantkeeper.service.slots import Slots

log = logging.getLogger("grantkeeper.cycle")


def default_owner() -> str:
    """A lease owner id unique to this process (host, pid, random) so two workers never share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


#: How long a row left in flight may wait to start once claimed (``rescue_ttl``). It goes first in its batch,
#: so it starts within milliseconds, and its start gives it the attempt's own lease (ADR 19). This is what a
#: rescuer that dies before starting it costs: the whole chain of deaths must fit in the provider's grace
#: window, and each such death used to cost a whole attempt budget more.
RESCUE_QUEUE_MARGIN = timedelta(seconds=3)

#: Leases up to n more connections; also says whether that was the last batch.
Claimer = Callable[[int], Awaitable[tuple[list[ClaimedConnection], bool]]]


def starts_ahead(claim: ClaimedConnection) -> bool:
    """Whether a cycle may record this attempt's start before a request slot is free (ADR 21).

    Not for a provider with limits: an attempt started counts against its concurrency limit in every
    worker, and its rate limit is taken at the start, so one waiting for a slot would hold a share of the
    provider that no request uses, and requests would leave later than the limits meant them to."""
    provider = claim.provider
    return provider.max_concurrency is None and provider.rate_limit_per_second is None


class AttemptHold:
    """What one attempt of a cycle holds, until the provider answers or the attempt ends without asking:
    its place among the attempts not yet answered (taken before the attempt is made), and from just before
    its request a request slot. Each is given back once."""

    __slots__ = ("_requests", "_slot_held", "_unanswered", "_unanswered_held")

    def __init__(self, unanswered: Slots, requests: Slots) -> None:
        self._unanswered = unanswered
        self._unanswered_held = True
        self._requests = requests
        self._slot_held = False

    async def take_request_slot(self) -> None:
        if not self._slot_held:
            await self._requests.acquire()
            self._slot_held = True

    def answered(self) -> None:
        if self._slot_held:
            self._slot_held = False
            self._requests.release()
        if self._unanswered_held:
            self._unanswered_held = False
            self._unanswered.release()


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
        on_attempt: Callable[[AttemptResult], None] | None = None,
        outage_watch: OutageWatch | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease_ttl <= max_attempt_duration:
            raise ValueError("lease_ttl must be longer than max_attempt_duration")
        self._store = store
        self._clock = clock
        self._policy = policy
        self._probed_at: datetime | None = None
        self._concurrency = concurrency
        self.owner = owner or default_owner()
        self.lease_ttl = lease_ttl
        # a row left in flight is retried at once, and leased only for a short wait in line until its start
        self.rescue_ttl = min(RESCUE_QUEUE_MARGIN, lease_ttl)
        self.outage = outage_watch or OutageWatch()
        self.runner = AttemptRunner(
            store,
            endpoint,
            clock,
            policy,
            rng or random.Random(),  # noqa: S311 - jitter, not security
            max_attempt_duration=max_attempt_duration,
            on_attempt=on_attempt,
            on_store_unavailable=self.outage.failed,
        )

    async def run_cycle(self, tenant_id: str | None = None) -> CycleReport:
        """Refresh every connection due now (all tenants unless one is named)."""
        report = CycleReport(started_at=self._clock.now())
        due_at = report.started_at
        if self._probed_at is None or due_at - self._probed_at >= self._policy.auth_retry_interval:
            # once per cycle, not per poll: a probe is a real user's refresh against a provider that is down
            self._probed_at = due_at
            horizon_at = probe_horizon(due_at, self._policy)
            try:
                report.probes = await self.runner.in_store_thread(
                    self._store.schedule_probes, due_at, horizon_at
                )
            except StoreUnavailableError:
                self._probed_at = None  # probe again when the database answers
                self.outage.failed()
                raise

        async def claim(limit: int) -> tuple[list[ClaimedConnection], bool]:
            try:
                claims = await self.runner.in_store_thread(
                    self._store.claim_due,
                    due_at,
                    limit,
                    self.owner,
                    self.lease_ttl,
                    tenant_id,
                    leased_at=self._clock.now(),  # a long cycle's late claims get whole leases too
                    rescue_ttl=self.rescue_ttl,
                    skip_in_flight=self.outage.is_settling,
                )
            except StoreUnavailableError:
                self.outage.failed()
                raise
            self.outage.succeeded()
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
            claims = await self.runner.in_store_thread(
                self._store.claim_ids, tenant_id, batch, self._clock.now(), self.owner, self.lease_ttl
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
        """Keep ``concurrency`` requests in flight, leasing ahead so attempts never wait on the store.

        Two bounds, both held until the provider answers, not until the commit (``AttemptHold``):
        ``concurrency`` requests at the provider, and twice that many attempts not yet answered. Freed at
        the answer, they let the next attempt's start join that answer's commit in one transaction
        (``StartGate``: one per tick) instead of waiting for the next one. Attempts of a provider without
        limits are started ahead of their request slot (``starts_ahead``, ADR 21): a slot that frees sends
        a request already recorded in flight instead of one waiting for the next tick. Answers waiting for
        their commit need no bound of their own: each came from a start recorded in an earlier tick, so a
        slow database slows the starts down with the commits instead of piling answers up in memory.
        """
        requests = Slots(self._concurrency)
        unanswered = Slots(self._concurrency * 2)
        batch_size = max(self._concurrency * 2, 128)  # larger claims amortise the per-statement cost

        async def attempt(item: ClaimedConnection, hold: AttemptHold) -> None:
            try:
                result = await self.runner.run(
                    item, on_answer=hold.answered, before_request=hold.take_request_slot
                )
            except Exception as exc:  # a bug or a dead store must not stop the other attempts
                log.error(
                    "attempt for %s failed: %s",
                    item.connection_id,
                    type(exc).__name__,
                    extra={"action": "attempt_error", "connection_id": item.connection_id},
                )
                report.errors += 1
                return
            finally:
                hold.answered()  # or ended without an answer: either way its places are free
            if result is None:
                report.skipped += 1
            else:
                report.add(result)

        failure: Exception | None = None
        async with asyncio.TaskGroup() as group:
            is_last = False
            while not is_last:
                try:
                    batch, is_last = await claim(batch_size)
                except Exception as exc:
                    # The database went away (or a bug): claim no more, but let the attempts already
                    # started finish. Raising here would cancel them, and with them answers that wait in
                    # memory for the database (a rotated refresh token lost for each).
                    failure = exc
                    break
                report.due += len(batch)
                for item in batch:
                    await unanswered.acquire()
                    hold = AttemptHold(unanswered, requests)
                    if not starts_ahead(item):
                        await hold.take_request_slot()
                    group.create_task(attempt(item, hold))
        if failure is not None:
            raise failure

    def _finish(self, report: CycleReport) -> CycleReport:
        report.finished_at = self._clock.now()
        report.provider_alerts = failing_providers(report.provider_attempts, report.provider_failures)
        for name in report.provider_alerts:
            log.warning(
                "provider %s failed for most connections this cycle",
                name,
                extra={"action": "provider_alert", "provider": name},
            )
        return report
