"""The origin write-up's three timelines, end to end: real store, real HTTP to the sandbox, injected clock."""

from __future__ import annotations

from datetime import timedelta

from grantkeeper.core.model import ConnectionStatus, TokenSet
from grantkeeper.sandbox import Behaviour
from grantkeeper.service import admin

FIVE_MINUTES = timedelta(minutes=5)


async def test_auth_failures_at_0_05_10_give_silence_warning_then_disconnection(rig):
    connection_id, _ = rig.connect(behaviour=Behaviour.INVALID_GRANT, workflows=("daily-sync", "crm-export"))

    first = await rig.cycle()  # 0:00
    assert first.by_outcome["auth"] == 1
    assert rig.notification_types() == []
    assert rig.state(connection_id).consecutive_failures == 1
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED

    rig.clock.advance(FIVE_MINUTES)  # 0:05
    second = await rig.cycle()
    assert second.due == 1
    assert rig.notification_types() == ["integration_warning"]
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED

    rig.clock.advance(FIVE_MINUTES)  # 0:10
    third = await rig.cycle()
    assert third.newly_disconnected == 1
    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
    assert state.consecutive_failures == 3
    assert state.disconnect_reason is not None
    assert rig.notification_types() == ["integration_warning", "integration_disconnected"]
    workflows = {w.name: w.status for w in rig.store.list_workflows(rig.tenant_id)}
    assert workflows == {"daily-sync": "paused", "crm-export": "paused"}

    rig.clock.advance(FIVE_MINUTES)  # 0:15: a disconnected connection is never retried or re-notified
    fourth = await rig.cycle()
    assert fourth.due == 0
    assert len(rig.notification_types()) == 2


async def test_disconnection_notification_carries_provider_and_goes_to_email_outbox(rig):
    connection_id, _ = rig.connect(behaviour=Behaviour.CONSENT_REQUIRED)
    await rig.cycle()
    (notification,) = rig.store.list_notifications(rig.tenant_id, 10)
    assert notification.type.value == "integration_disconnected"
    assert notification.metadata["provider"] == "sandbox"
    assert notification.connection_id == connection_id
    assert notification.is_read is False
    assert [row.channel for row in rig.store.list_outbox(notification.notification_id)] == ["email"]


async def test_five_429s_give_one_rate_limit_notice_and_a_later_success_resets_both_counters(rig):
    connection_id, _ = rig.connect(script=[Behaviour.INVALID_GRANT] + [Behaviour.RATE_LIMIT] * 5)

    await rig.cycle()  # one auth failure first, so the reset of both counters is visible
    for minute in range(1, 6):
        rig.clock.advance(FIVE_MINUTES)
        report = await rig.cycle()
        assert report.by_outcome["transient"] == 1, f"cycle at 0:{minute * 5:02d}"
        state = rig.state(connection_id)
        assert state.status is ConnectionStatus.CONNECTED
        assert state.consecutive_transient_failures == minute
        assert state.consecutive_failures == 1

    assert rig.notification_types() == ["integration_rate_limit"]

    rig.clock.advance(FIVE_MINUTES)
    recovered = await rig.cycle()
    assert recovered.refreshed == 1
    state = rig.state(connection_id)
    assert (state.consecutive_failures, state.consecutive_transient_failures) == (0, 0)
    assert rig.notification_types() == ["integration_rate_limit", "integration_recovered"]
    assert rig.sandbox.stats().reuse_detected == 0


async def test_rate_limit_retry_after_is_honoured(rig):
    connection_id, _ = rig.connect(script=[Behaviour.RATE_LIMIT])
    await rig.cycle()
    state = rig.state(connection_id)
    assert state.next_attempt_at - rig.clock.now() >= timedelta(seconds=7)


async def test_reconnect_resets_counters_and_resumes_workflows(rig):
    connection_id, _ = rig.connect(behaviour=Behaviour.INVALID_GRANT)
    for _ in range(3):
        await rig.cycle()
        rig.clock.advance(FIVE_MINUTES)
    assert rig.state(connection_id).status is ConnectionStatus.NEEDS_REAUTHORIZATION

    fresh = rig.sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    tokens = TokenSet(
        access_token=fresh.access_token,
        refresh_token=fresh.refresh_token,
        expires_at=rig.clock.now() + timedelta(seconds=30),
    )
    assert admin.reconnect_connection(rig.store, rig.tenant_id, connection_id, tokens, rig.policy, rig.clock)

    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.CONNECTED
    assert (state.consecutive_failures, state.consecutive_transient_failures) == (0, 0)
    assert state.disconnect_reason is None
    assert {w.status for w in rig.store.list_workflows(rig.tenant_id)} == {"active"}

    rig.clock.advance(FIVE_MINUTES)
    report = await rig.cycle()  # the new grant refreshes normally
    assert report.refreshed == 1
