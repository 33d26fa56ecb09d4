"""Attempts started ahead of their request slot (ADR 21): a cycle records the start of an attempt of a
provider without limits before a request slot is free, so the slot an answer frees sends a request already
recorded in flight. Real store (both databases), real sandbox over HTTP, the rig's frozen clock; the store's
``commit_and_start`` is only counted, never replaced."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from grantkeeper.service import admin

from .harness import count_ticks, one_slot_service
from .test_database_outage import wait_for


async def test_a_wait_for_the_slot_that_ate_the_budget_starts_the_attempt_again_instead_of_dropping_it(rig):
    """A slow provider keeps the one slot busy while the next attempt, started ahead, waits: when the slot
    frees too late for the request to fit in that start's deadline, nothing has been sent, so the start is
    recorded anew with a whole deadline and the request goes; the row is not given up for the cycle."""
    connected = [rig.connect(f"user-{i}") for i in range(2)]
    calls = count_ticks(rig)
    rig.sandbox.set_latency(0.5)
    service = one_slot_service(rig)

    cycle = asyncio.create_task(service.run_cycle())
    await wait_for(lambda: rig.sandbox.stats().requests == 1)
    (sent_grant,) = rig.sandbox.stats().by_grant
    (waiting,) = [connection_id for connection_id, grant in connected if grant.grant_id != sent_grant]
    started_at = rig.state(waiting).in_flight_since
    assert started_at is not None  # started ahead, while the other's request is at the provider
    rig.clock.advance(timedelta(seconds=3))  # of the attempt's 10 s, the request needs 8: 7 are left
    report = await asyncio.wait_for(cycle, timeout=30)

    assert (report.refreshed, report.skipped, report.errors) == (2, 0, 0)
    assert sum(starts for _, starts in calls) == 3  # the waiting attempt's start, recorded twice
    assert rig.sandbox.stats().requests == 2
    assert rig.sandbox.stats().reuse_detected == 0
    assert rig.state(waiting).last_refreshed_at == started_at + timedelta(seconds=3)


async def test_an_attempt_cancelled_while_waiting_for_its_slot_gives_its_row_back(rig):
    """Stopping a cycle while an attempt started ahead waits for its slot: nothing was sent for it, so its
    row is released (not left looking like an answer lost in flight); the one at the provider stays marked."""
    ids = [rig.connect(f"user-{i}")[0] for i in range(2)]
    rig.sandbox.set_latency(0.8)
    service = one_slot_service(rig)

    cycle = asyncio.create_task(service.run_cycle())
    await wait_for(lambda: rig.sandbox.stats().requests == 1)
    await wait_for(lambda: all(rig.state(c).in_flight_since is not None for c in ids))  # both started
    cycle.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cycle

    marked = [c for c in ids if rig.state(c).in_flight_since is not None]
    assert len(marked) == 1  # the request that left stays in doubt; the other is free again
    assert rig.sandbox.stats().requests == 1


async def test_attempts_of_a_provider_with_limits_are_not_started_ahead(rig):
    """A start counts against the provider's concurrency limit in every worker, and its rate limit is taken
    at the start: an attempt of such a provider takes its slot first, so no start waits for one."""
    admin.update_provider(rig.store, rig.tenant_id, rig.provider, {"max_concurrency": 8})
    ids = [rig.connect(f"user-{i}")[0] for i in range(4)]
    calls = count_ticks(rig)
    rig.sandbox.set_latency(0.05)

    report = await one_slot_service(rig).run_cycle()

    assert report.refreshed == len(ids)
    assert calls[0] == (0, 1)  # one start: the one slot's
    assert max(starts for _, starts in calls) == 1
