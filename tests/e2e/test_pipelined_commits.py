"""An attempt gives its request slot back when the provider answers, not when its commit lands: the next
attempt's start then shares that commit's transaction, and the attempt started ahead of the slot leaves.
Real store (both databases), real sandbox over HTTP; the store's ``commit_and_start`` is only counted, never
replaced."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from grantkeeper.ports import StoreUnavailableError
from grantkeeper.service.cycle import RefreshService
from grantkeeper.service.report import CycleReport

from .harness import count_ticks, one_slot_service


async def test_with_one_slot_each_commit_carries_the_next_start(rig):
    ids = [rig.connect(f"user-{i}")[0] for i in range(6)]
    calls = count_ticks(rig)
    rig.sandbox.set_latency(0.05)  # each answer comes after the last tick ended, so the ticks are exact
    service = one_slot_service(rig)

    report = await service.run_cycle()

    assert report.refreshed == len(ids)
    assert sum(commits for commits, _ in calls) == len(ids)
    assert sum(starts for _, starts in calls) == len(ids)
    # the first two starts in one transaction (the second ahead of the one slot, ADR 21), then one per
    # answer: its commit, and the start of the attempt made in the place the answer freed
    assert calls == [(0, 2)] + [(1, 1)] * (len(ids) - 2) + [(1, 0), (1, 0)], calls
    assert rig.sandbox.stats().max_in_flight_by_client == {"app": 1}  # still one request at a time
    assert rig.sandbox.stats().reuse_detected == 0


async def test_a_claim_that_fails_mid_cycle_lets_the_attempts_in_flight_finish_and_commit(rig):
    """The database goes away between two claims of a cycle: the claim's error must not cancel the attempts
    already sent, or every answer they hold (a rotated refresh token each) is lost with them."""
    ids = [rig.connect(f"user-{i}")[0] for i in range(4)]
    rig.sandbox.set_latency(0.3)
    service = RefreshService(
        rig.store, rig.endpoint, rig.clock, rig.policy, concurrency=4,
        max_attempt_duration=timedelta(seconds=10), rng=random.Random(0),
    )  # fmt: skip
    report = CycleReport(started_at=rig.clock.now())
    calls = 0

    async def claim(limit: int):
        nonlocal calls
        calls += 1
        if calls == 1:
            claims = rig.store.claim_due(rig.clock.now(), limit, service.owner, service.lease_ttl)
            return claims, False  # more may come: the cycle asks again once these are under way
        await asyncio.sleep(0.1)  # the first attempts are at the provider now
        raise StoreUnavailableError("connection refused")

    with pytest.raises(StoreUnavailableError):
        await service._drain(claim, report)

    assert report.refreshed == len(ids)  # every answer committed
    assert report.errors == 0
    assert rig.sandbox.stats().reuse_detected == 0
    for connection_id in ids:
        assert rig.state(connection_id).in_flight_since is None
