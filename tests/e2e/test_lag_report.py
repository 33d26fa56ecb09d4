"""A cycle reports how late its attempts started after their connections came due (p50, p99, max)."""

from __future__ import annotations

from datetime import timedelta


async def test_the_cycle_reports_the_lag_from_due_to_started(rig):
    for i in range(3):
        rig.connect(f"user-{i}")
    due_at = rig.store.list_connections(rig.tenant_id)[0].state.next_attempt_at
    rig.clock.set(due_at + timedelta(seconds=90))  # the workers were 90 s behind

    report = await rig.cycle()

    assert report.refreshed == 3
    assert report.as_dict()["lag_seconds"] == {"p50": 90.0, "p99": 90.0, "max": 90.0}


async def test_a_cycle_with_nothing_due_reports_no_lag(rig):
    assert (await rig.cycle()).as_dict()["lag_seconds"] == {"p50": None, "p99": None, "max": None}
