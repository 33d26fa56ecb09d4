"""The pure state machine: the origin write-up's timelines, then properties over any sequence of outcomes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grantkeeper.core.errors import InvalidSettingError
from grantkeeper.core.machine import initial_state, is_stale, reconnect, step
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    ErrorInfo,
    FlagProvider,
    NotificationType,
    Notify,
    Outcome,
    OutcomeClass,
    PauseWorkflows,
    ResumeWorkflows,
    TokenSet,
)
from grantkeeper.core.policy import Policy, refresh_due_at, transient_backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = Policy()
CYCLE = timedelta(minutes=5)


def outcome(klass: OutcomeClass, *, now: datetime = T0, retry_after: timedelta | None = None) -> Outcome:
    if klass is OutcomeClass.SUCCESS:
        return Outcome(klass, 200, tokens=TokenSet("at", "rt", expires_at=now + timedelta(hours=1)))
    return Outcome(klass, 400, ErrorInfo(klass.value), retry_after)


def run(klasses: list[OutcomeClass], state: ConnectionState | None = None, gap: timedelta = CYCLE):
    state = state or initial_state(T0 + timedelta(minutes=8), T0, POLICY)
    rng = random.Random(0)
    trail = []
    for i, klass in enumerate(klasses):
        now = T0 + gap * i
        transition = step(state, outcome(klass, now=now), POLICY, now, rng)
        trail.append(transition)
        state = transition.state
    return trail


def kinds(transition) -> list[NotificationType]:
    return [n.type for n in transition.notifications]


def test_auth_failures_give_silence_then_warning_then_disconnection():
    first, second, third = run([OutcomeClass.AUTH] * 3)
    assert kinds(first) == []
    assert first.state.status is ConnectionStatus.CONNECTED
    assert kinds(second) == [NotificationType.WARNING]
    assert second.notifications[0].email is True
    assert second.state.status is ConnectionStatus.CONNECTED
    assert kinds(third) == [NotificationType.DISCONNECTED]
    assert third.state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
    assert third.state.disconnect_reason is DisconnectReason.AUTH_FAILURES
    assert PauseWorkflows(DisconnectReason.AUTH_FAILURES) in third.effects
    assert third.state.next_attempt_at is None


def test_auth_failure_is_retried_at_the_next_cycle():
    (first,) = run([OutcomeClass.AUTH])
    assert T0 < first.state.next_attempt_at <= T0 + CYCLE


def test_five_transient_failures_give_one_rate_limit_notice_and_keep_status():
    trail = run([OutcomeClass.TRANSIENT] * 8)
    notices = [k for t in trail for k in kinds(t)]
    assert notices == [NotificationType.RATE_LIMIT]
    assert kinds(trail[4]) == [NotificationType.RATE_LIMIT]
    assert trail[4].notifications[0].email is False
    assert all(t.state.status is ConnectionStatus.CONNECTED for t in trail)
    assert trail[-1].state.consecutive_transient_failures == 8


def test_first_four_transient_retries_fall_before_the_next_cycle():
    for transition in run([OutcomeClass.TRANSIENT] * 4):
        assert transition.state.next_attempt_at - transition.state.last_failure_at < CYCLE


def test_success_after_rate_limit_notice_resets_counters_and_says_recovered():
    trail = run([OutcomeClass.TRANSIENT] * 5 + [OutcomeClass.SUCCESS])
    last = trail[-1]
    assert (last.state.consecutive_failures, last.state.consecutive_transient_failures) == (0, 0)
    assert kinds(last) == [NotificationType.RECOVERED]
    assert last.state.rate_limit_notice_sent is False


def test_success_without_prior_notice_is_silent():
    trail = run([OutcomeClass.AUTH, OutcomeClass.TRANSIENT, OutcomeClass.SUCCESS])
    assert kinds(trail[-1]) == []


def test_reauth_required_disconnects_at_once():
    (only,) = run([OutcomeClass.REAUTH_REQUIRED])
    assert only.state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
    assert only.state.disconnect_reason is DisconnectReason.REAUTH_REQUIRED
    assert kinds(only) == [NotificationType.DISCONNECTED]


def test_config_failure_flags_provider_and_leaves_counters():
    start = run([OutcomeClass.AUTH, OutcomeClass.TRANSIENT])[-1].state
    result = step(start, outcome(OutcomeClass.CONFIG), POLICY, T0 + CYCLE * 2, random.Random(0))
    assert result.state.consecutive_failures == 1
    assert result.state.consecutive_transient_failures == 1
    assert result.state.status is ConnectionStatus.CONNECTED
    assert [type(e) for e in result.effects] == [FlagProvider]


def test_reconnect_resets_counters_and_resumes_workflows():
    disconnected = run([OutcomeClass.AUTH] * 3)[-1].state
    now = T0 + timedelta(hours=1)
    tokens = TokenSet("new-at", "new-rt", expires_at=now + timedelta(hours=1))
    result = reconnect(disconnected, tokens, POLICY, now)
    assert result.state.status is ConnectionStatus.CONNECTED
    assert (result.state.consecutive_failures, result.state.consecutive_transient_failures) == (0, 0)
    assert result.state.disconnect_reason is None
    assert result.effects == (Notify(NotificationType.RECOVERED, email=False), ResumeWorkflows())


def test_reconnecting_a_healthy_connection_announces_no_recovery():
    healthy = initial_state(T0, T0, POLICY)
    tokens = TokenSet("new-at", "new-rt", expires_at=T0 + timedelta(hours=1))
    assert reconnect(healthy, tokens, POLICY, T0).effects == (ResumeWorkflows(),)
    warned = run([OutcomeClass.AUTH] * 2)[-1].state
    assert reconnect(warned, tokens, POLICY, T0).notifications == (
        Notify(NotificationType.RECOVERED, email=False),
    )


def test_retry_after_is_honoured_as_a_floor():
    result = step(
        initial_state(T0, T0, POLICY),
        outcome(OutcomeClass.TRANSIENT, retry_after=timedelta(minutes=20)),
        POLICY,
        T0,
        random.Random(0),
    )
    assert result.state.next_attempt_at == T0 + timedelta(minutes=20)


def test_hostile_retry_after_is_capped_at_max_backoff():
    delay = transient_backoff(1, timedelta(days=5000), POLICY, random.Random(0))
    assert delay == POLICY.max_backoff


def test_stale_connection_gets_no_notification_and_no_status_change():
    state = ConnectionState(
        consecutive_failures=2,
        warning_sent=True,
        failing_since=T0 - timedelta(days=3),
        expires_at=T0 - timedelta(days=2),
    )
    result = step(state, outcome(OutcomeClass.AUTH), POLICY, T0, random.Random(0))
    assert result.is_stale
    assert result.state.status is ConnectionStatus.CONNECTED
    assert result.effects == ()
    assert T0 < result.state.next_attempt_at <= T0 + POLICY.max_backoff


def test_imported_old_token_is_not_stale_on_its_first_failures():
    state = initial_state(T0 - timedelta(days=30), T0, POLICY)
    trail = run([OutcomeClass.AUTH] * 3, state=state)
    assert trail[-1].state.status is ConnectionStatus.NEEDS_REAUTHORIZATION


def test_refresh_due_at_is_the_lead_window_before_expiry_and_at_most_the_idle_limit():
    assert refresh_due_at(T0 + timedelta(hours=1), T0, POLICY) == T0 + timedelta(minutes=50)
    assert refresh_due_at(T0 + timedelta(minutes=4), T0, POLICY) <= T0
    assert refresh_due_at(None, T0, POLICY) == T0 + timedelta(days=7)
    assert refresh_due_at(T0 + timedelta(days=60), T0, POLICY) == T0 + timedelta(days=7)


def test_fresh_tokens_shorter_than_the_lead_window_are_refreshed_at_half_life():
    assert refresh_due_at(T0 + timedelta(minutes=4), T0, POLICY, is_fresh=True) == T0 + timedelta(minutes=2)
    assert refresh_due_at(T0 + timedelta(hours=1), T0, POLICY, is_fresh=True) == T0 + timedelta(minutes=50)
    assert refresh_due_at(T0 - timedelta(minutes=1), T0, POLICY, is_fresh=True) == T0


def test_policy_rejects_nonsense_settings():
    with pytest.raises(InvalidSettingError):
        Policy(disconnect_threshold=0)
    with pytest.raises(InvalidSettingError):
        Policy(cycle_interval=timedelta(0))


# Property tests against a plain reference model ---------------------------------------------------------


@dataclass
class ReferenceModel:
    """DESIGN section 2 written as plainly as possible, to check ``step`` against."""

    status: str = "connected"
    auth: int = 0
    transient: int = 0
    warned: bool = False
    noticed: bool = False
    failing_since: datetime | None = None
    expires_at: datetime | None = None
    sent: list[str] = field(default_factory=list)

    def apply(self, klass: OutcomeClass, now: datetime) -> None:
        if klass is OutcomeClass.SUCCESS:
            if self.warned or self.noticed:
                self.sent.append("recovered")
            self.status, self.auth, self.transient = "connected", 0, 0
            self.warned = self.noticed = False
            self.failing_since, self.expires_at = None, now + timedelta(hours=1)
            return
        if klass is OutcomeClass.CONFIG:
            return
        stale = (
            self.failing_since is not None
            and self.expires_at is not None
            and now - max(self.expires_at, self.failing_since) > timedelta(hours=24)
        )
        self.failing_since = self.failing_since or now
        loud = not stale and self.status == "connected"
        if klass is OutcomeClass.TRANSIENT:
            self.transient += 1
            if loud and self.transient >= 5 and not self.noticed:
                self.noticed = True
                self.sent.append("rate_limit")
            return
        self.auth += 1
        if loud and (klass is OutcomeClass.REAUTH_REQUIRED or self.auth >= 3):
            self.status = "needs_reauthorization"
            self.sent.append("disconnected")
        elif loud and self.auth >= 2 and not self.warned:
            self.warned = True
            self.sent.append("warning")


SHORT_NAMES = {
    NotificationType.WARNING: "warning",
    NotificationType.DISCONNECTED: "disconnected",
    NotificationType.RATE_LIMIT: "rate_limit",
    NotificationType.RECOVERED: "recovered",
}
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(list(OutcomeClass)),
        st.sampled_from([timedelta(minutes=5), timedelta(hours=2), timedelta(hours=30)]),
        st.one_of(st.none(), st.integers(0, 10**9).map(lambda s: timedelta(seconds=s))),
    ),
    max_size=40,
)
expiry_strategy = st.one_of(
    st.none(), st.integers(-60 * 24 * 40, 60 * 24 * 40).map(lambda m: T0 + timedelta(minutes=m))
)


@settings(max_examples=400, deadline=None)
@given(steps=steps_strategy, expires_at=expiry_strategy, seed=st.integers(0, 2**32))
def test_step_matches_reference_model_and_invariants(steps, expires_at, seed):
    rng = random.Random(seed)
    state = initial_state(expires_at, T0, POLICY)
    model = ReferenceModel(expires_at=expires_at)
    now = T0
    streak_sent: list[NotificationType] = []
    for klass, gap, retry_after in steps:
        now += gap
        before = state
        transition = step(state, outcome(klass, now=now, retry_after=retry_after), POLICY, now, rng)
        state = transition.state
        model.apply(klass, now)
        kinds_now = kinds(transition)
        assert [SHORT_NAMES[k] for k in kinds_now] == model.sent[len(model.sent) - len(kinds_now) :]
        # transient outcomes never change status
        if klass is OutcomeClass.TRANSIENT:
            assert state.status is before.status
        # counters reset only on success (reconnect is not an outcome)
        if klass is not OutcomeClass.SUCCESS:
            assert state.consecutive_failures >= before.consecutive_failures
            assert state.consecutive_transient_failures >= before.consecutive_transient_failures
        # a connected connection is always scheduled in the future after a failure
        if klass is not OutcomeClass.SUCCESS and state.status is ConnectionStatus.CONNECTED:
            assert state.next_attempt_at is not None
            assert state.next_attempt_at > now
            assert state.next_attempt_at <= now + POLICY.max_backoff + POLICY.config_retry_interval
        # each notification at most once per streak
        if klass is OutcomeClass.SUCCESS:
            streak_sent = []
        for kind in kinds_now:
            if kind is not NotificationType.RECOVERED:
                assert kind not in streak_sent
                streak_sent.append(kind)
        assert (state.status.value, state.consecutive_failures, state.consecutive_transient_failures) == (
            model.status,
            model.auth,
            model.transient,
        )


@given(
    failing_for=st.integers(0, 100).map(lambda h: timedelta(hours=h)),
    expired_for=st.integers(-100, 100).map(lambda h: timedelta(hours=h)),
)
def test_stale_means_expired_and_failing_for_over_a_day(failing_for, expired_for):
    state = ConnectionState(failing_since=T0 - failing_for, expires_at=T0 - expired_for)
    expected = failing_for > timedelta(hours=24) and expired_for > timedelta(hours=24)
    assert is_stale(state, POLICY, T0) is expected


def test_new_connection_without_known_expiry_is_due_at_once():
    assert initial_state(None, T0, POLICY).next_attempt_at == T0
    assert initial_state(T0 + timedelta(hours=1), T0, POLICY).next_attempt_at == T0 + timedelta(minutes=50)
