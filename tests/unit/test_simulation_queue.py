"""The fluid queue behind "workers before expiry": waits worked out by hand, and the fewest workers found."""

from __future__ import annotations

import pytest

from grantkeeper.service.simulation_queue import Demand, Fleet, longest_wait_minutes, workers_before_expiry

SLOTS_ONLY = Fleet(concurrency=10, worker_rate=None, provider_capacity=None)


def demand(attempts: list[float], latency: float = 1.0) -> Demand:
    return Demand(attempts_by_minute=attempts, busy_by_minute=[count * latency for count in attempts])


def test_a_burst_waits_as_many_minutes_as_its_backlog_takes_to_serve():
    # one worker, 10 slots of 1 s: 600 attempts a minute. A burst of 3,000 leaves 2,400 after its minute,
    # then the quiet minutes (100 each) drain 500 a minute: 4, then 3.2... so the longest wait is 4 minutes
    burst = demand([100, 3000, 100, 100, 100, 100, 100, 100])

    assert longest_wait_minutes(burst, SLOTS_ONLY, workers=1) == pytest.approx(4.0)
    assert longest_wait_minutes(burst, SLOTS_ONLY, workers=2) == pytest.approx(1.5)  # (3000 - 1200) / 1200
    assert longest_wait_minutes(burst, SLOTS_ONLY, workers=5) == 0.0  # 3,000 a minute: no queue


def test_the_wait_is_the_longer_of_the_slots_queue_and_the_rate_queue():
    burst = Demand(attempts_by_minute=[1200, 0, 0], busy_by_minute=[120, 0, 0])  # 0.1 s each
    rate_bound = Fleet(concurrency=10, worker_rate=5, provider_capacity=None)  # 300 a minute a worker

    # slots: 600 slot-seconds a minute serve 120 at once; rate: 1,200 against 300 leaves 900, three minutes
    assert longest_wait_minutes(burst, rate_bound, workers=1) == pytest.approx(3.0)
    provider_bound = Fleet(concurrency=10, worker_rate=None, provider_capacity=2)  # 120 a minute, any fleet
    assert longest_wait_minutes(burst, provider_bound, workers=1000) == pytest.approx(9.0)


def test_the_fewest_workers_whose_longest_wait_fits_the_slack():
    burst = demand([100, 3000, 100, 100, 100, 100, 100, 100])
    waits = {workers: longest_wait_minutes(burst, SLOTS_ONLY, workers) for workers in range(1, 6)}
    assert all(waits[n] >= waits[n + 1] for n in range(1, 5))  # more workers never wait longer

    assert workers_before_expiry(burst, SLOTS_ONLY, slack_minutes=4.0, most=5) == 1
    assert workers_before_expiry(burst, SLOTS_ONLY, slack_minutes=1.5, most=5) == 2
    assert workers_before_expiry(burst, SLOTS_ONLY, slack_minutes=1.0, most=5) == min(
        n for n, wait in waits.items() if wait <= 1.0
    )
    assert workers_before_expiry(burst, SLOTS_ONLY, slack_minutes=0.0, most=5) == 5


def test_no_fleet_fits_when_the_providers_limits_keep_the_wait_too_long():
    burst = demand([3000, 0, 0, 0, 0])
    provider_bound = Fleet(concurrency=10, worker_rate=None, provider_capacity=10)  # 600 a minute

    # one worker's 600 slot-seconds a minute match the provider: 2,400 left after the burst, four minutes
    assert longest_wait_minutes(burst, provider_bound, workers=1) == pytest.approx(4.0)
    assert longest_wait_minutes(burst, provider_bound, workers=50) == pytest.approx(4.0)
    assert workers_before_expiry(burst, provider_bound, slack_minutes=3.0, most=50) is None
    assert workers_before_expiry(burst, provider_bound, slack_minutes=4.0, most=50) == 1
