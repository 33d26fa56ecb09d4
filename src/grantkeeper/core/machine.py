"""The refresh state machine: the one place where counters meet thresholds (DESIGN section 2).

``step`` is pure: state, one classified outcome, the policy, ``now`` and a random source in; the new state and
the effects to carry out (notifications, workflow pauses, provider flags) out. The shell leases, calls the
provider, calls ``step`` and commits the result in one transaction.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime

from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    DisconnectReason,
    Effect,
    FlagProvider,
    NotificationType,
    Notify,
    Outcome,
    OutcomeClass,
    PauseWorkflows,
    ResumeWorkflows,
    RetryProviderNow,
    TokenSet,
    Transition,
)
from grantkeeper.core.policy import Policy, refresh_due_at, transient_backoff


def initial_state(expires_at: datetime | None, now: datetime, policy: Policy) -> ConnectionState:
    """A freshly imported or created connection: connected, clean counters, due by its expiry.

    With no known expiry (no access token, or none said when it ends) it is due at once: one refresh tells
    us whether the grant works and when the new token expires.
    """
    due_at = now if expires_at is None else refresh_due_at(expires_at, now, policy)
    return ConnectionState(expires_at=expires_at, next_attempt_at=due_at)


def is_stale(state: ConnectionState, policy: Policy, now: datetime) -> bool:
    """The access token expired over ``stale_after`` ago *while failing*: the streak itself is that old too.

    Both conditions matter: an imported connection whose token expired last month is not stale on its first
    failures (the user has heard nothing yet), and a long outage does not make a fresh token stale.
    """
    if state.failing_since is None or state.expires_at is None:
        return False
    return now - max(state.expires_at, state.failing_since) > policy.stale_after


def step(
    state: ConnectionState, outcome: Outcome, policy: Policy, now: datetime, rng: random.Random
) -> Transition:
    """Apply one refresh outcome. Total over every state and outcome; never raises."""
    if outcome.klass is OutcomeClass.SUCCESS:
        return _succeed(state, outcome.tokens, policy, now, rng)
    if outcome.klass is OutcomeClass.CONFIG:
        return _config_failure(state, outcome, policy, now)
    stale = is_stale(state, policy, now)
    failed = replace(
        state,
        last_failure_at=now,
        failing_since=state.failing_since or now,
        last_error=outcome.error,
    )
    if outcome.klass is OutcomeClass.TRANSIENT:
        return _transient_failure(failed, outcome, policy, now, rng, stale)
    if _is_lost_rotation(state, outcome, stale):
        return _lost_rotation(failed)
    return _auth_failure(replace(failed, in_flight_since=None), outcome, policy, now, rng, stale)


def reconnect(state: ConnectionState, tokens: TokenSet, policy: Policy, now: datetime) -> Transition:
    """The user authorized again: both counters reset, status connected, dependent workflows resume. A
    connection that was broken, or that the user was warned about, says so (``integration_recovered``, in
    app and as the ``connection.recovered`` event; no email: the user is the one who just fixed it)."""
    fresh = ConnectionState(
        last_refreshed_at=now,
        expires_at=tokens.expires_at,
        next_attempt_at=refresh_due_at(tokens.expires_at, now, policy, is_fresh=True),
    )
    effects: list[Effect] = [ResumeWorkflows()]
    if state.status is not ConnectionStatus.CONNECTED or state.warning_sent or state.rate_limit_notice_sent:
        effects.insert(0, Notify(NotificationType.RECOVERED, email=False))
    return Transition(fresh, tuple(effects))


def _succeed(
    state: ConnectionState, tokens: TokenSet | None, policy: Policy, now: datetime, rng: random.Random
) -> Transition:
    expires_at = tokens.expires_at if tokens is not None else state.expires_at
    effects: list[Effect] = []
    if state.warning_sent or state.rate_limit_notice_sent:
        effects.append(Notify(NotificationType.RECOVERED, email=False))
    if state.status is not ConnectionStatus.CONNECTED:
        effects.append(ResumeWorkflows())
    if state.consecutive_transient_failures >= policy.provider_recovery_threshold:
        effects.append(RetryProviderNow(policy.provider_wake_batch))
    new_state = ConnectionState(
        last_refreshed_at=now,
        last_failure_at=state.last_failure_at,
        expires_at=expires_at,
        next_attempt_at=refresh_due_at(expires_at, now, policy, is_fresh=True, rng=rng),
    )
    return Transition(new_state, tuple(effects))


def _config_failure(state: ConnectionState, outcome: Outcome, policy: Policy, now: datetime) -> Transition:
    """Our client credentials are wrong: flag the provider for the operator; the user's counters stay put."""
    new_state = replace(state, last_error=outcome.error, next_attempt_at=now + policy.config_retry_interval)
    flag = FlagProvider(outcome.error) if outcome.error is not None else None
    return Transition(new_state, (flag,) if flag else ())


def _transient_failure(
    state: ConnectionState,
    outcome: Outcome,
    policy: Policy,
    now: datetime,
    rng: random.Random,
    stale: bool,
) -> Transition:
    """Transient trouble never changes status; it may tell the user once per streak that we keep retrying."""
    count = state.consecutive_transient_failures + 1
    delay = transient_backoff(count, outcome.retry_after, policy, rng)
    new_state = replace(state, consecutive_transient_failures=count, next_attempt_at=now + delay)
    should_notice = (
        not stale
        and state.status is ConnectionStatus.CONNECTED
        and count >= policy.rate_limit_notice_threshold
        and not state.rate_limit_notice_sent
    )
    if not should_notice:
        return Transition(new_state, (), is_stale=stale)
    noticed = replace(new_state, rate_limit_notice_sent=True)
    return Transition(noticed, (Notify(NotificationType.RATE_LIMIT, email=False),))


def _auth_failure(
    state: ConnectionState,
    outcome: Outcome,
    policy: Policy,
    now: datetime,
    rng: random.Random,
    stale: bool,
) -> Transition:
    """Auth failures warn at the warning threshold and disconnect at the disconnect threshold.

    ``reauth_required`` disconnects at once. A stale connection only backs off: no status change, no notice.
    """
    count = state.consecutive_failures + 1
    counted = replace(state, consecutive_failures=count, next_attempt_at=now + policy.auth_retry_interval)
    if stale:
        total = count + state.consecutive_transient_failures
        retry_at = now + transient_backoff(total, None, policy, rng)
        return Transition(replace(counted, next_attempt_at=retry_at), (), is_stale=True)
    if state.status is not ConnectionStatus.CONNECTED:
        return Transition(replace(counted, next_attempt_at=None))
    if outcome.klass is OutcomeClass.REAUTH_REQUIRED:
        return _disconnect(counted, DisconnectReason.REAUTH_REQUIRED)
    if count >= policy.disconnect_threshold:
        return _disconnect(counted, DisconnectReason.AUTH_FAILURES)
    if count >= policy.warning_threshold and not state.warning_sent:
        warned = replace(counted, warning_sent=True)
        return Transition(warned, (Notify(NotificationType.WARNING, email=True),))
    return Transition(counted)


#: Error codes meaning "this refresh token is not (or no longer) valid": what a token rotated away answers.
#: Slack and GitHub name it their own way (DESIGN section 2's provider codes for a bad refresh token).
REJECTED_REFRESH_TOKEN_CODES = frozenset({"invalid_grant", "invalid_refresh_token", "bad_refresh_token"})


def _is_lost_rotation(state: ConnectionState, outcome: Outcome, stale: bool) -> bool:
    """The stored refresh token is refused right after an attempt whose answer we never stored.

    Only that refusal: consent required or an app uninstalled is the user's ``reauth_required``, and a bare
    401 or an unknown 4xx counts as the user's failure as always.
    """
    return (
        state.in_flight_since is not None
        and not stale
        and state.status is ConnectionStatus.CONNECTED
        and outcome.klass is OutcomeClass.AUTH
        and outcome.error is not None
        and outcome.error.code in REJECTED_REFRESH_TOKEN_CODES
    )


def _lost_rotation(state: ConnectionState) -> Transition:
    """An auth failure right after an attempt whose answer was never recorded: the provider most likely
    rotated the refresh token and the new one died with the worker, so the stored token is dead.

    That is our failure, not the user's: the counters stay as they were, the reason says so (the operator is
    told), and the user still has to reconnect, because no retry can bring the grant back. A provider with a
    rotation grace window answers the prompt retry with fresh tokens instead, and nothing is lost.
    """
    return _disconnect(replace(state, in_flight_since=None), DisconnectReason.LOST_ROTATION)


def _disconnect(state: ConnectionState, reason: DisconnectReason) -> Transition:
    disconnected = replace(
        state,
        status=ConnectionStatus.NEEDS_REAUTHORIZATION,
        disconnect_reason=reason,
        next_attempt_at=None,
    )
    effects: tuple[Effect, ...] = (Notify(NotificationType.DISCONNECTED, email=True), PauseWorkflows(reason))
    return Transition(disconnected, effects)
