"""The provider answers 503 to everything for an hour (issue 5), in accelerated time: the worker polls every
30 seconds of a frozen clock. No connection is disconnected, each user hears of it exactly once, and every
connection is refreshed again within one cycle of the provider's return (probes plus ``RetryProviderNow``)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from grantkeeper.core.model import ConnectionStatus
from grantkeeper.sandbox import Behaviour

POLL = timedelta(seconds=30)
CONNECTIONS = 30


async def run_for(rig, duration: timedelta) -> list:
    reports = []
    end = rig.clock.now() + duration
    while rig.clock.now() < end:
        reports.append(await rig.cycle())
        rig.clock.advance(POLL)
    return reports


async def test_an_hour_long_provider_outage_disconnects_no_one_and_all_recover_within_a_cycle(rig):
    ids = [rig.connect(f"user-{i}", expires_in=timedelta(minutes=i % 10))[0] for i in range(CONNECTIONS)]
    rig.sandbox.set_outage(Behaviour.UNAVAILABLE)

    during = await run_for(rig, timedelta(hours=1))

    assert sum(r.by_outcome["transient"] for r in during) > CONNECTIONS * 5
    assert sum(r.probes for r in during) > 0  # someone kept asking while all were backing off
    rig.sandbox.set_outage(None)
    back_at = rig.clock.now()
    after = await run_for(rig, rig.policy.cycle_interval)

    states = [rig.state(connection_id) for connection_id in ids]
    assert all(state.status is ConnectionStatus.CONNECTED for state in states)  # 0 disconnections
    assert all(state.consecutive_transient_failures == 0 for state in states)  # all recovered ...
    assert all(state.last_refreshed_at and state.last_refreshed_at >= back_at for state in states)  # ... now
    assert sum(r.newly_disconnected for r in during + after) == 0
    per_user = Counter((n.user_id, n.type.value) for n in rig.store.list_notifications(rig.tenant_id, 10_000))
    for i in range(CONNECTIONS):
        assert per_user[(f"user-{i}", "integration_rate_limit")] == 1  # exactly one notice each
        assert per_user[(f"user-{i}", "integration_recovered")] == 1
    assert set(per_user) <= {(f"user-{i}", kind) for i in range(CONNECTIONS) for kind in
                             ("integration_rate_limit", "integration_recovered")}  # fmt: skip
    assert rig.sandbox.stats().reuse_detected == 0
