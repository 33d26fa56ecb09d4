"""The capacity simulator: the real policy over virtual time against a fault model, checked against DESIGN."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.service import simulation, simulation_engine
from grantkeeper.service.simulation import FaultModel, Outage, SimulationConfig, SimulationReport, simulate

DAY = timedelta(days=1)
CYCLE_MINUTES = 5


def run(connections: int = 200, duration: timedelta = DAY, **kwargs: Any) -> SimulationReport:
    return simulate(SimulationConfig(connections=connections, duration=duration, **kwargs))


def comparable(report: SimulationReport) -> dict[str, Any]:
    data = report.to_dict()
    del data["wall_seconds"]
    return data


def test_no_faults_means_no_failures_no_notifications_and_a_refresh_about_every_fifty_minutes():
    report = run(connections=200)

    assert report.attempts == report.successes
    assert sum(report.failures_by_class.values()) == 0
    assert report.notifications_total == 0
    assert report.false_disconnections == report.true_disconnections == 0
    # one-hour tokens are refreshed 10 minutes before expiry, moved earlier by at most a tenth of their life:
    # every 44 to 50 minutes, so about 29 to 33 refreshes a day
    per_connection_day = report.attempts / 200
    assert 28 <= per_connection_day <= 34
    assert report.lag_p99_seconds < 5  # unlimited fleet: the only wait is for the next 5-second poll


def test_frequent_429s_give_one_notice_per_streak_that_reaches_five_and_never_disconnect():
    report = run(duration=timedelta(hours=12), faults=FaultModel(rate_limit=0.5))

    notices = report.notifications_by_type["integration_rate_limit"]
    assert report.false_disconnections == 0
    assert report.failures_by_cause["rate_limited"] > 0
    assert 0 < notices == report.transient_streaks_reaching_notice < report.transient_streaks
    assert report.notifications_by_type["integration_warning"] == 0
    assert report.notifications_by_type["integration_disconnected"] == 0
    # every notice is followed by one recovery, except for streaks still running at the end
    assert notices - 5 <= report.notifications_by_type["integration_recovered"] <= notices


def test_one_hour_outage_gives_each_connection_one_notice_one_recovery_and_no_disconnection():
    outage = Outage(start=timedelta(hours=2), duration=timedelta(hours=1))
    report = run(connections=200, duration=timedelta(hours=8), faults=FaultModel(outages=(outage,)))

    # every connection is due within the hour (refreshes are under 50 minutes apart) and fails five times
    # within four minutes of backoff, so each gets exactly one notice, then one recovery after the outage
    assert report.failures_by_cause["outage"] > 200 * 5
    assert report.false_disconnections == 0
    assert report.notifications_by_type["integration_rate_limit"] == 200
    assert report.notifications_by_type["integration_recovered"] == 200
    assert report.notifications_per_user_max == 2
    assert report.emails == 0


def test_revoked_grants_are_disconnected_within_three_cycles_of_the_first_rejection():
    report = run(connections=200, faults=FaultModel(revocations_per_day=0.3))

    assert report.true_disconnections > 0
    assert report.false_disconnections == 0
    assert report.true_disconnections + report.undetected_revocations == report.revocations
    assert report.first_rejection_to_disconnection_minutes_max is not None
    assert report.first_rejection_to_disconnection_minutes_max <= 3 * CYCLE_MINUTES
    # grantkeeper learns of a revocation at the next refresh (under 50 minutes), then needs two more tries
    assert report.revocation_to_disconnection_minutes_max is not None
    assert report.revocation_to_disconnection_minutes_max <= 50 + 3 * CYCLE_MINUTES
    assert report.notifications_by_type["integration_disconnected"] == report.true_disconnections
    assert report.notifications_by_type["integration_warning"] == report.true_disconnections
    assert report.emails == 2 * report.true_disconnections


def test_spurious_invalid_grants_are_the_only_fault_that_disconnects_a_live_grant():
    report = run(connections=200, duration=timedelta(hours=12), faults=FaultModel(spurious_invalid_grant=0.4))

    assert report.revocations == 0
    assert report.false_disconnections > 0  # three in a row, a cycle apart
    assert report.notifications_by_type["integration_warning"] > report.false_disconnections


def test_the_same_seed_gives_the_same_report_and_another_seed_another():
    faults = FaultModel(rate_limit=0.1, server_error=0.05, timeout=0.02, revocations_per_day=0.1)
    first = run(duration=timedelta(hours=6), faults=faults, seed=7)
    again = run(duration=timedelta(hours=6), faults=faults, seed=7)
    other = run(duration=timedelta(hours=6), faults=faults, seed=8)

    assert comparable(first) == comparable(again)
    assert comparable(first) != comparable(other)


def test_shards_give_the_same_report_on_one_cpu_or_several(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(simulation, "SHARD_CONNECTIONS", 100)
    config = SimulationConfig(
        connections=300, duration=timedelta(hours=6), faults=FaultModel(rate_limit=0.3), seed=3
    )

    alone = simulate(config, processes=1)
    forked = simulate(config, processes=2)

    assert comparable(alone) == comparable(forked)
    assert alone.users == 300


def test_a_sample_scales_counts_and_rates_but_not_per_user_figures():
    faults = FaultModel(rate_limit=0.3)
    whole = run(connections=400, duration=timedelta(hours=4), faults=faults)
    sampled = run(connections=4000, sample=400, duration=timedelta(hours=4), faults=faults)

    assert sampled.attempts == 10 * whole.attempts
    assert sampled.notifications_total == 10 * whole.notifications_total
    assert sampled.refreshes_per_minute_peak == pytest.approx(10 * whole.refreshes_per_minute_peak)
    assert sampled.notifications_per_user_mean == whole.notifications_per_user_mean
    assert sampled.lag_p99_seconds == whole.lag_p99_seconds
    assert sampled.users == 4000
    assert sampled.note.startswith("sampled 400 of 4,000, counts scaled \N{MULTIPLICATION SIGN}10")


def test_workers_needed_is_peak_attempts_per_second_times_latency_over_concurrency():
    report = run(
        connections=10_000_000,
        sample=5000,
        duration=timedelta(hours=3),
        latency=timedelta(milliseconds=200),
        concurrency=32,
    )

    # attempts count in the minute they fell due; with an unlimited fleet that is within a poll of when made
    assert report.due_per_second_peak == pytest.approx(report.attempts_per_second_peak, rel=0.05)
    assert report.workers_needed == math.ceil(report.due_per_second_peak * 0.2 / 32)
    assert report.workers_needed > 10
    assert report.workers_formula.startswith("ceil(peak attempts/s x latency / concurrency per worker)")
    assert f"= {report.workers_needed}; the workers' own rate needs fewer" in report.workers_formula


def test_timeouts_hold_a_slot_for_the_read_timeout_so_more_workers_are_needed():
    common: dict[str, Any] = {"connections": 1_000_000, "sample": 500, "duration": timedelta(hours=2)}
    calm = run(**common)
    slow = run(**common, faults=FaultModel(timeout=0.1), read_timeout=timedelta(seconds=15))

    assert slow.workers_needed > 3 * calm.workers_needed
    assert "read timeout" in slow.workers_formula


def test_with_the_workers_needed_the_lag_stays_small_and_with_too_few_it_grows():
    common: dict[str, Any] = {"connections": 2_000_000, "sample": 4000, "duration": timedelta(hours=3)}
    needed = run(**common).workers_needed

    enough = run(**common, workers=needed)
    starved = run(**common, workers=max(1, needed // 4))

    # the demand (attempts by the minute they fell due), not the throttled attempts, decides the number
    assert abs(enough.workers_needed - needed) <= 1
    assert abs(starved.workers_needed - needed) <= 1

    assert enough.lag_p99_seconds < 15
    assert starved.lag_p99_seconds > 600
    # what is due but not yet attempted when the simulation ends: seconds of work, or more than a minute's
    assert enough.backlog_at_end <= 5 * enough.due_per_second_peak
    assert starved.backlog_at_end > 60 * starved.due_per_second_peak


def test_after_an_outage_far_fewer_workers_than_the_busiest_minute_needs_refresh_before_expiry():
    """The provider's return wakes every backed-off connection within a minute; a fleet sized for that minute
    is mostly idle. The estimate of the fewest workers that keep every wait inside the lead window is played
    out: with that many, no refresh waits past it; with half, some do."""
    outage = Outage(start=timedelta(hours=2), duration=timedelta(hours=1))
    common: dict[str, Any] = {
        "connections": 2_000_000,
        "sample": 4000,
        "duration": timedelta(hours=6),
        "faults": FaultModel(outages=(outage,)),
    }
    unlimited = run(**common)
    estimate = unlimited.workers_before_expiry
    assert estimate is not None
    assert unlimited.refresh_slack_minutes == 10  # one-hour tokens, refreshed 10 minutes before expiry
    assert estimate * 3 < unlimited.workers_needed
    estimated_wait = unlimited.estimated_longest_wait_minutes
    assert estimated_wait is not None
    assert estimated_wait <= 10
    assert unlimited.kept_before_expiry  # an unlimited fleet waits no more than a poll or two
    capacity = unlimited.to_dict()["capacity"]
    assert capacity["before_expiry"]["workers"] == estimate
    assert capacity["before_expiry"]["slack_minutes"] == 10
    assert f"check with --workers {estimate}" in dict(unlimited.rows())["workers before expiry"]

    enough = run(**common, workers=estimate)
    starved = run(**common, workers=estimate // 2)

    assert enough.false_disconnections == starved.false_disconnections == 0
    assert enough.kept_before_expiry
    assert enough.lag_max_seconds <= 600
    assert enough.workers_before_expiry is None  # a run with a fleet plays it out instead of estimating
    row = dict(enough.rows())["workers before expiry"]
    assert row.startswith(f"with {estimate} workers the longest wait")
    assert not starved.kept_before_expiry
    assert starved.lag_max_seconds > 600
    assert dict(starved.rows())["workers before expiry"].endswith("add workers")


def test_when_the_providers_limits_keep_refreshes_waiting_no_number_of_workers_is_named():
    report = run(connections=1_000_000, sample=5000, duration=timedelta(hours=6), provider_rate_limit=200)

    assert report.workers_before_expiry is None
    assert not report.kept_before_expiry
    assert dict(report.rows())["workers before expiry"].startswith("none: the provider's limits")


def test_with_a_fast_provider_a_workers_own_rate_decides_how_many_are_needed():
    common: dict[str, Any] = {
        "connections": 10_000_000,
        "sample": 5000,
        "duration": timedelta(hours=3),
        "latency": timedelta(milliseconds=5),
    }
    unbounded = run(**common, worker_rate=None)
    bounded = run(**common, worker_rate=500)

    peak = bounded.due_per_second_peak
    assert peak == unbounded.due_per_second_peak
    # 32 slots at 5 ms would let one worker do 6,400 a second; at 500 a second each it takes many more
    assert unbounded.workers_needed == math.ceil(peak * 0.005 / 32)
    assert bounded.workers_needed == math.ceil(peak / 500)
    assert bounded.workers_needed > 2 * unbounded.workers_needed
    assert bounded.workers_formula.startswith(
        f"ceil(peak attempts/s / worker rate) = ceil({peak:,.2f} / 500) = {bounded.workers_needed}: "
        "the workers' own rate binds"
    )
    assert bounded.to_dict()["capacity"]["worker_rate_per_second"] == 500
    assert unbounded.to_dict()["capacity"]["worker_rate_per_second"] is None


def test_with_a_slow_provider_the_slots_decide_and_the_rate_is_named_as_the_lesser_bound():
    report = run(connections=1_000_000, sample=2000, duration=timedelta(hours=2), worker_rate=2000)

    assert report.workers_needed == math.ceil(report.due_per_second_peak * 0.2 / 32)
    assert report.workers_formula.startswith("ceil(peak attempts/s x latency / concurrency per worker)")
    lesser = "; the workers' own rate needs fewer: ceil(peak attempts/s / worker rate)"
    assert lesser in report.workers_formula


def test_a_fleet_slower_than_the_demand_lags_even_with_slots_to_spare():
    common: dict[str, Any] = {
        "connections": 2_000_000,
        "sample": 4000,
        "duration": timedelta(hours=3),
        "latency": timedelta(milliseconds=5),
        "workers": 2,  # 64 slots at 5 ms: 12,800 a second, far over the ~560 due
    }
    enough = run(**common, worker_rate=2000)
    starved = run(**common, worker_rate=100)  # 200 a second for the fleet

    assert enough.lag_p99_seconds < 15
    assert starved.lag_p99_seconds > 600
    assert starved.backlog_at_end > 60 * starved.due_per_second_peak
    assert starved.workers_needed == math.ceil(starved.due_per_second_peak / 100) > 2


def most_per_second(report: SimulationReport, limit: float) -> bool:
    """At most ``limit`` attempts a second in the busiest minute, give or take what straddles its end: the
    simulation starts a second's worth of attempts at once (or one simulated attempt, which counts ``scale``),
    and the report rounds to 0.01."""
    straddling = max(limit, report.scale) / 60
    return report.attempts_per_second_peak <= limit + straddling + 0.01


def test_a_providers_rate_limit_holds_every_worker_and_too_low_a_limit_lets_tokens_expire():
    common: dict[str, Any] = {"connections": 1_000_000, "sample": 5000, "duration": timedelta(hours=6)}
    ample = run(**common, provider_rate_limit=1000)
    tight = run(**common, provider_rate_limit=200)  # a million one-hour tokens need about 333 a second

    for report in (ample, tight):
        # the fleet is unlimited, but never sends more than the limit in any minute
        assert report.provider_rate_limit is not None
        assert most_per_second(report, report.provider_rate_limit)
        assert report.provider_capacity_per_second == report.provider_rate_limit
        assert report.due_per_second_steady == pytest.approx(333.3, rel=0.01)
    assert ample.provider_keeps_up is True
    assert ample.lag_p99_seconds < 15
    assert tight.provider_keeps_up is False
    assert tight.lag_p99_seconds > 600  # past the 10-minute lead: access tokens expire before their refresh
    provider = tight.to_dict()["capacity"]["provider"]
    assert provider == {
        "rate_limit_per_second": 200,
        "max_concurrency": None,
        "capacity_per_second": 200,
        "keeps_up": False,
    }
    assert dict(tight.rows())["provider limits"].endswith(
        "the limits do not keep up: the queue grows and tokens expire unrefreshed"
    )


def test_a_providers_concurrency_limit_caps_the_rate_at_the_latency():
    common: dict[str, Any] = {"sample": 3000, "duration": timedelta(hours=4), "provider_max_concurrency": 10}
    fits = run(connections=100_000, **common)  # about 33 a second against 10 / 0.2 s = 50
    over = run(connections=300_000, **common)  # about 100 a second

    assert fits.provider_capacity_per_second == over.provider_capacity_per_second == 50
    assert fits.provider_keeps_up is True
    assert fits.lag_p99_seconds < 15
    assert over.provider_keeps_up is False
    assert over.lag_p99_seconds > 600
    assert most_per_second(over, 50)


def test_the_lower_of_the_fleets_and_the_providers_bounds_applies():
    common: dict[str, Any] = {"connections": 1_000_000, "sample": 4000, "duration": timedelta(hours=3)}
    provider_bound = run(**common, workers=100, provider_rate_limit=150)
    fleet_bound = run(**common, workers=1, provider_rate_limit=5000)  # one worker: 32 / 0.2 s = 160 a second

    assert most_per_second(provider_bound, 150)
    assert most_per_second(fleet_bound, 160)
    assert provider_bound.lag_p99_seconds > 600
    assert fleet_bound.lag_p99_seconds > 600
    assert fleet_bound.provider_keeps_up is True  # the provider would allow it: add workers
    assert provider_bound.provider_keeps_up is False  # no number of workers helps


def test_without_provider_limits_the_report_says_so():
    report = run(connections=200)

    assert report.provider_keeps_up is None
    assert report.to_dict()["capacity"]["provider"]["capacity_per_second"] is None
    assert dict(report.rows())["provider limits"] == "no limits"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: FaultModel(rate_limit=-0.1), "429 rate must be between 0 and 1"),
        (lambda: FaultModel(rate_limit=0.6, server_error=0.5), "add up to 1.1"),
        (lambda: FaultModel(revocations_per_day=float("nan")), "revocations per day"),
        (lambda: SimulationConfig(connections=0), "connections must be at least 1"),
        (lambda: SimulationConfig(connections=10**7), r"simulate a sample and scale it up \(--sample"),
        (lambda: SimulationConfig(connections=10, sample=11), "sample must be between 1 and"),
        (lambda: SimulationConfig(workers=0), "workers must be at least 1"),
        (lambda: SimulationConfig(worker_rate=0.5), "worker rate must be at least 1 refresh a second"),
        (lambda: SimulationConfig(worker_rate=float("inf")), "worker rate must be at least 1"),
        (
            lambda: SimulationConfig(provider_rate_limit=0),
            "provider rate limit must be a finite number over 0",
        ),
        (lambda: SimulationConfig(provider_rate_limit=float("nan")), "provider rate limit must be a finite"),
        (lambda: SimulationConfig(provider_max_concurrency=0), "provider max concurrency must be at least 1"),
        (lambda: SimulationConfig(duration=timedelta(0)), "duration must be longer than zero"),
        (lambda: Outage(start=timedelta(hours=1), duration=timedelta(0)), "outage must last"),
        (
            lambda: SimulationConfig(
                duration=DAY, faults=FaultModel(outages=(Outage(timedelta(days=2), timedelta(hours=1)),))
            ),
            "after the simulation ends",
        ),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(make, words):
    with pytest.raises(InvalidInputError, match=words):
        make()


def test_a_fleet_of_one_is_named_in_the_singular_and_a_quiet_one_stays_inside_the_lead_window():
    report = run(connections=200, workers=1)

    assert report.kept_before_expiry
    assert report.lag_max_seconds <= 10  # a poll or two: the one worker is never busy
    row = dict(report.rows())["workers before expiry"]
    assert row.startswith("with 1 worker the longest wait was 0.")
    assert row.endswith("inside the 10 min a refresh is due before its token expires")


def test_a_recovery_wakes_at_most_its_limit_of_backed_off_connections_furthest_retry_first():
    """The simulator mirrors ``commits.retry_provider_now``: up to ``limit`` others, furthest retry first;
    the waker, connections already due and those that recovered meanwhile are not woken."""
    sim = simulation_engine.Simulation(SimulationConfig(connections=20, duration=timedelta(hours=1)))
    at, tick = 100.0, 20
    for index in range(10):  # retries 200 s, 300 s, ... 1,100 s ahead of the start
        sim._due_seconds[index] = 200.0 + 100 * index
        sim._back_off(index, sim._due_seconds[index], tick)
    sim._due_seconds[10] = 50.0  # due already
    sim._back_off(10, 50.0, tick)
    sim._backing_off.discard(8)  # recovered meanwhile

    sim._wake(9, tick, at, limit=3)  # connection 9 (furthest) is the one that recovered and wakes

    woken = {index for index in range(11) if sim._due_seconds[index] == at}
    assert woken == {7, 6, 5}
    sim._wake(0, tick, at, limit=100)  # the rest, but never the one due already
    assert {index for index in range(11) if sim._due_seconds[index] == at} == {1, 2, 3, 4, 5, 6, 7}
