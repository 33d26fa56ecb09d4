"""The outage watch: after the database comes back, rows in flight wait a while for their owners' commits."""

from __future__ import annotations

from datetime import timedelta

from grantkeeper.service.outage import OutageWatch


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_worker_that_saw_no_outage_never_settles() -> None:
    watch = OutageWatch(timedelta(seconds=10), FakeMonotonic())
    watch.succeeded()
    assert not watch.is_settling


def test_it_settles_while_the_database_is_away_and_for_a_while_after_it_is_back() -> None:
    clock = FakeMonotonic()
    watch = OutageWatch(timedelta(seconds=10), clock)
    watch.failed()
    clock.now += 60  # however long the outage lasts
    assert watch.is_settling
    watch.succeeded()
    clock.now += 9.9
    assert watch.is_settling
    watch.succeeded()  # later successes do not restart the wait
    clock.now += 0.2
    assert not watch.is_settling


def test_a_second_outage_starts_the_wait_again() -> None:
    clock = FakeMonotonic()
    watch = OutageWatch(timedelta(seconds=10), clock)
    watch.failed()
    watch.succeeded()
    clock.now += 30
    assert not watch.is_settling
    watch.failed()
    watch.succeeded()
    assert watch.is_settling
