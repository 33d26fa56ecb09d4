"""A cycle that lasts longer than a lease still ends: claims taken late in it get leases from the present,
not from the cycle's start (a slow provider, a rate limit or a provider's backlog make such cycles)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from grantkeeper.service.cycle import RefreshService

CONNECTIONS = 300


async def test_a_cycle_longer_than_a_lease_claims_with_fresh_leases_and_ends(rig):
    for i in range(CONNECTIONS):
        rig.connect(f"user-{i}")

    def one_second_per_attempt(_result) -> None:
        rig.clock.advance(timedelta(seconds=1))  # 300 attempts: five minutes, over two leases of 2 min

    service = RefreshService(
        rig.store, rig.endpoint, rig.clock, rig.policy, concurrency=8,
        max_attempt_duration=timedelta(seconds=10), lease_ttl=timedelta(minutes=2),
        rng=random.Random(0), on_attempt=one_second_per_attempt,
    )  # fmt: skip

    report = await asyncio.wait_for(service.run_cycle(), timeout=60)  # it ends (it used to loop forever)

    # claims that waited in the queue past their lease were handed back unsent and claimed again later
    refreshed = report.refreshed
    for _ in range(3):
        rig.clock.advance(timedelta(minutes=3))  # past every lease of the long cycle
        refreshed += (await asyncio.wait_for(service.run_cycle(), timeout=60)).refreshed
    assert refreshed == CONNECTIONS
    requests = rig.sandbox.stats().by_grant
    assert len(requests) == CONNECTIONS
    assert set(requests.values()) == {1}  # each grant refreshed exactly once: nothing sent twice
    assert rig.sandbox.stats().reuse_detected == 0
