"""A worker dies with a refresh in flight (DESIGN section 3): the next attempt tells a lost rotation from a
harmless crash, recovers inside a provider's rotation grace window, and never blames the user.

Real store (both databases), real HTTP to the sandbox; the "dead worker" records its start like a real one,
sends the refresh (the sandbox rotates), and never commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from grantkeeper.core.model import ConnectionStatus, DisconnectReason
from tests.e2e.harness import CLIENT_ID, CLIENT_SECRET

ATTEMPT_TTL = timedelta(seconds=10)  # the rig's max_attempt_duration


async def die_in_flight(rig, *, send: bool) -> None:
    """What a worker killed mid-request leaves: its start recorded, perhaps the provider's rotation."""
    claims = rig.store.claim_due(rig.clock.now(), 10, "dead-worker", timedelta(minutes=2))
    rig.store.start_attempts(claims, rig.clock.now(), ATTEMPT_TTL)
    if send:
        for claim in claims:
            await rig.endpoint.refresh(claim.provider, claim.refresh_token)  # the answer dies with the worker
    rig.clock.advance(ATTEMPT_TTL + timedelta(seconds=1))  # the dead worker's attempt deadline passes


async def test_an_answer_lost_in_flight_at_a_strict_provider_is_a_lost_rotation_not_the_users_fault(
    rig, caplog
):
    connection_id, grant = rig.connect(workflows=("daily-sync",))
    await die_in_flight(rig, send=True)

    with caplog.at_level(logging.INFO, logger="grantkeeper"):
        report = await rig.cycle()

    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.NEEDS_REAUTHORIZATION
    assert state.disconnect_reason is DisconnectReason.LOST_ROTATION
    assert state.consecutive_failures == 0  # not counted in the user's auth failure streak
    assert state.in_flight_since is None
    assert report.lost_rotations == 1
    assert report.as_dict()["lost_rotations"] == 1
    assert rig.store.count_by_disconnect_reason(rig.tenant_id)["lost_rotation"] == 1  # `status` shows it
    assert rig.notification_types() == ["integration_disconnected"]  # the user must reconnect; told once
    assert {w.name: w.status for w in rig.store.list_workflows(rig.tenant_id)} == {"daily-sync": "paused"}
    (record,) = [r for r in caplog.records if getattr(r, "action", None) == "lost_rotation"]
    assert record.levelno == logging.ERROR  # the operator hears of it
    assert connection_id in record.getMessage()
    assert grant.refresh_token not in caplog.text
    # a later cycle does not touch it again
    rig.clock.advance(timedelta(minutes=10))
    assert (await rig.cycle()).due == 0


async def test_inside_a_rotation_grace_window_the_prompt_retry_recovers_and_loses_nothing(rig):
    rig.sandbox.add_client(CLIENT_ID, CLIENT_SECRET, rotate_refresh_tokens=True, rotation_grace_seconds=30)
    connection_id, grant = rig.connect()
    await die_in_flight(rig, send=True)

    report = await rig.cycle()

    assert report.refreshed == 1
    assert report.recovered_in_flight == 1
    assert report.lost_rotations == 0
    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.CONNECTED
    assert state.in_flight_since is None
    stats = rig.sandbox.stats()
    assert stats.grace_uses == 1
    assert stats.reuse_detected == 0
    stored = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert stored is not None
    assert stored.refresh_token == rig.sandbox.current_refresh_token(grant.grant_id)  # the grant lives on
    rig.clock.advance(timedelta(hours=1))
    assert (await rig.cycle()).refreshed == 1


async def test_a_worker_that_died_before_sending_loses_nothing(rig):
    connection_id, _ = rig.connect()
    await die_in_flight(rig, send=False)

    report = await rig.cycle()

    assert report.refreshed == 1
    assert report.recovered_in_flight == 1
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED
    assert rig.sandbox.stats().reuse_detected == 0


async def test_no_one_retries_before_the_dead_workers_attempt_deadline(rig):
    rig.connect()
    claims = rig.store.claim_due(rig.clock.now(), 10, "slow-worker", timedelta(minutes=2))
    rig.store.start_attempts(claims, rig.clock.now(), ATTEMPT_TTL)

    rig.clock.advance(ATTEMPT_TTL - timedelta(seconds=1))  # its answer may still arrive
    assert (await rig.cycle()).due == 0
    assert rig.sandbox.stats().requests == 0


async def test_a_genuine_revocation_without_a_lost_attempt_still_takes_three_strikes(rig):
    connection_id, grant = rig.connect()
    rig.sandbox.revoke(grant.grant_id)

    report = await rig.cycle()

    assert report.lost_rotations == 0
    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.CONNECTED
    assert state.consecutive_failures == 1
