"""A provider's return: the success that ends a transient streak wakes the provider's other backed-off
connections, and probes keep someone asking once per cycle while all of them back off."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from grantkeeper.core.machine import initial_state, step
from grantkeeper.core.model import ErrorInfo, Outcome, OutcomeClass, RetryProviderNow, TokenSet
from grantkeeper.core.policy import Policy, probe_horizon

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy()
UNAVAILABLE = Outcome(OutcomeClass.TRANSIENT, 503, ErrorInfo("http_503"))
SUCCESS = Outcome(OutcomeClass.SUCCESS, 200, tokens=TokenSet("at", "rt", expires_at=T0 + timedelta(hours=2)))


def after_failures(count: int):
    state = initial_state(T0, T0, POLICY)
    for _ in range(count):
        state = step(state, UNAVAILABLE, POLICY, T0, random.Random(0)).state
    return state


def test_a_success_after_a_transient_streak_wakes_the_providers_other_connections():
    assert (
        RetryProviderNow(POLICY.provider_wake_batch)
        in step(after_failures(2), SUCCESS, POLICY, T0, random.Random(0)).effects
    )


def test_a_single_blip_or_a_healthy_refresh_wakes_no_one():
    for count in (0, 1):
        effects = step(after_failures(count), SUCCESS, POLICY, T0, random.Random(0)).effects
        assert not any(isinstance(effect, RetryProviderNow) for effect in effects)


def test_the_probe_horizon_is_the_next_cycle():
    assert probe_horizon(T0, POLICY) == T0 + POLICY.cycle_interval - POLICY.schedule_tolerance
