"""Lost rotations and refresh spreading in the pure core: what an attempt whose answer died with its worker
means for the next one, and how refresh times drift apart instead of coming due together forever."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.errors import InvalidSettingError
from grantkeeper.core.machine import initial_state, step
from grantkeeper.core.model import (
    ConnectionStatus,
    DisconnectReason,
    ErrorInfo,
    NotificationType,
    Outcome,
    OutcomeClass,
    PauseWorkflows,
    TokenSet,
)
from grantkeeper.core.policy import Policy, refresh_due_at

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy()
IN_FLIGHT = replace(
    initial_state(T0 + timedelta(minutes=8), T0, POLICY), in_flight_since=T0 - timedelta(minutes=1)
)
INVALID_GRANT = Outcome(OutcomeClass.AUTH, 400, ErrorInfo("invalid_grant"))
UNAVAILABLE = Outcome(OutcomeClass.TRANSIENT, 503, ErrorInfo("http_503"))


def success(now: datetime) -> Outcome:
    return Outcome(
        OutcomeClass.SUCCESS, 200, tokens=TokenSet("at", "rt", expires_at=now + timedelta(hours=1))
    )


def test_auth_failure_after_an_attempt_lost_in_flight_is_a_lost_rotation_not_the_users_failure():
    transition = step(IN_FLIGHT, INVALID_GRANT, POLICY, T0, random.Random(0))
    state = transition.state
    assert state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
    assert state.disconnect_reason is DisconnectReason.LOST_ROTATION
    assert state.consecutive_failures == 0  # not counted in the user's streak
    assert state.in_flight_since is None
    assert [n.type for n in transition.notifications] == [NotificationType.DISCONNECTED]
    assert PauseWorkflows(DisconnectReason.LOST_ROTATION) in transition.effects


def test_success_after_an_attempt_lost_in_flight_recovers_and_clears_the_mark():
    transition = step(IN_FLIGHT, success(T0), POLICY, T0, random.Random(0))
    assert transition.state.status is ConnectionStatus.CONNECTED
    assert transition.state.in_flight_since is None
    assert transition.notifications == ()


def test_a_transient_failure_keeps_the_suspicion_for_the_next_definite_answer():
    after_503 = step(IN_FLIGHT, UNAVAILABLE, POLICY, T0, random.Random(0)).state
    assert after_503.in_flight_since == IN_FLIGHT.in_flight_since
    later = after_503.next_attempt_at or T0
    final = step(after_503, INVALID_GRANT, POLICY, later, random.Random(0)).state
    assert final.disconnect_reason is DisconnectReason.LOST_ROTATION


def test_without_an_attempt_in_flight_an_auth_failure_counts_as_usual():
    state = replace(IN_FLIGHT, in_flight_since=None)
    transition = step(state, INVALID_GRANT, POLICY, T0, random.Random(0))
    assert transition.state.status is ConnectionStatus.CONNECTED
    assert transition.state.consecutive_failures == 1


def test_a_connection_already_disconnected_is_not_relabelled():
    state = replace(
        IN_FLIGHT,
        status=ConnectionStatus.NEEDS_REAUTHORIZATION,
        disconnect_reason=DisconnectReason.AUTH_FAILURES,
    )
    transition = step(state, INVALID_GRANT, POLICY, T0, random.Random(0))
    assert transition.state.disconnect_reason is DisconnectReason.AUTH_FAILURES
    assert transition.state.in_flight_since is None
    assert transition.effects == ()


@given(
    klass=st.sampled_from([OutcomeClass.SUCCESS, OutcomeClass.AUTH, OutcomeClass.REAUTH_REQUIRED]),
    failures=st.integers(0, 5),
    seed=st.integers(0, 2**32),
)
def test_a_definite_answer_always_clears_the_in_flight_mark(klass: OutcomeClass, failures: int, seed: int):
    state = replace(IN_FLIGHT, consecutive_failures=failures)
    outcome = success(T0) if klass is OutcomeClass.SUCCESS else Outcome(klass, 400, ErrorInfo("x"))
    assert step(state, outcome, POLICY, T0, random.Random(seed)).state.in_flight_since is None


def test_refresh_times_spread_over_the_spread_window_before_the_lead():
    expires_at = T0 + timedelta(hours=1)
    rng = random.Random(7)
    due = [refresh_due_at(expires_at, T0, POLICY, is_fresh=True, rng=rng) for _ in range(2000)]
    latest = expires_at - POLICY.refresh_lead
    assert all(latest - POLICY.refresh_spread <= d <= latest for d in due)
    # spread evenly: each minute of the five-minute window gets a fair share
    minutes = [int((latest - d).total_seconds() // 60) for d in due]
    assert all(300 < minutes.count(m) < 500 for m in range(5))


def test_connections_refreshed_together_drift_apart():
    rng = random.Random(1)
    due = []
    for _ in range(500):
        now = T0
        for _ in range(24):  # a day of one-hour tokens
            transition = step(
                initial_state(now + timedelta(hours=1), now, POLICY), success(now), POLICY, now, rng
            )
            now = transition.state.next_attempt_at or now
        due.append(now)
    assert max(due) - min(due) > timedelta(minutes=20)


def test_short_tokens_are_spread_by_at_most_a_tenth_of_their_life():
    expires_at = T0 + timedelta(minutes=10)
    due = refresh_due_at(expires_at, T0, POLICY, is_fresh=True, rng=random.Random(3))
    assert due >= T0 + timedelta(minutes=5)  # never earlier than half-life


def test_without_rng_the_schedule_is_exact():
    expires_at = T0 + timedelta(hours=1)
    assert refresh_due_at(expires_at, T0, POLICY, is_fresh=True) == expires_at - POLICY.refresh_lead


def test_negative_spread_is_refused():
    with pytest.raises(InvalidSettingError, match="refresh_spread"):
        Policy(refresh_spread=timedelta(seconds=-1))


def test_only_a_refused_refresh_token_is_read_as_a_lost_rotation():
    consent = Outcome(OutcomeClass.REAUTH_REQUIRED, 400, ErrorInfo("consent_required"))
    gone = step(IN_FLIGHT, consent, POLICY, T0, random.Random(0)).state
    assert gone.disconnect_reason is DisconnectReason.REAUTH_REQUIRED  # the user's, as always
    bare_401 = Outcome(OutcomeClass.AUTH, 401, ErrorInfo("unauthorized"))
    counted = step(IN_FLIGHT, bare_401, POLICY, T0, random.Random(0)).state
    assert counted.status is ConnectionStatus.CONNECTED
    assert counted.consecutive_failures == 1
    assert counted.in_flight_since is None
    for code in ("invalid_grant", "invalid_refresh_token", "bad_refresh_token"):
        refused = Outcome(OutcomeClass.AUTH, 400, ErrorInfo(code))
        lost = step(IN_FLIGHT, refused, POLICY, T0, random.Random(0)).state
        assert lost.disconnect_reason is DisconnectReason.LOST_ROTATION
