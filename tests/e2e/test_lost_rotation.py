"""A worker dies with a refresh in flight (DESIGN section 3): the next attempt tells a lost rotation from a
harmless crash, recovers inside a provider's rotation grace window, and never blames the user.

Real store (both databases), real HTTP to the sandbox; the "dead worker" records its start like a real one,
sends the refresh (the sandbox rotates), and never commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from grantkeeper.core.model import ConnectionStatus, DisconnectReason
from grantkeeper.ports import NewProvider
from grantkeeper.service import admin
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


def use_introspection(rig, path: str = "/oauth/introspect") -> None:
    """Connections from now on belong to a provider with an RFC 7662 introspection endpoint (ADR 12)."""
    admin.add_provider(
        rig.store,
        rig.tenant_id,
        NewProvider(
            name="sandbox-introspecting",
            token_url=rig.token_url,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            introspection_url=rig.token_url.replace("/oauth/token", path),
        ),
    )
    rig.provider = "sandbox-introspecting"


async def test_with_introspection_a_lost_rotation_is_named_without_sending_the_dead_token(rig, caplog):
    use_introspection(rig)
    connection_id, grant = rig.connect()
    await die_in_flight(rig, send=True)
    requests_before = rig.sandbox.stats().requests

    with caplog.at_level(logging.DEBUG, logger="grantkeeper"):
        report = await rig.cycle()

    assert report.lost_rotations == 1
    state = rig.state(connection_id)
    assert state.disconnect_reason is DisconnectReason.LOST_ROTATION
    assert state.consecutive_failures == 0
    stats = rig.sandbox.stats()
    assert stats.requests == requests_before  # the dead token never went to the token endpoint
    assert stats.reuse_detected == 0  # so the strict provider saw no reuse
    assert stats.introspections == 1
    assert grant.refresh_token not in caplog.text
    assert CLIENT_SECRET not in caplog.text


async def test_with_introspection_a_token_still_live_is_refreshed(rig):
    use_introspection(rig)
    connection_id, grant = rig.connect()
    await die_in_flight(rig, send=False)  # died before sending: the stored token still works

    report = await rig.cycle()

    assert report.refreshed == 1
    assert report.recovered_in_flight == 1
    assert rig.sandbox.stats().introspections == 1
    assert rig.sandbox.stats().reuse_detected == 0
    stored = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert stored is not None
    assert stored.refresh_token == rig.sandbox.current_refresh_token(grant.grant_id)


async def test_with_introspection_inside_a_grace_window_the_old_token_is_live_and_the_retry_recovers(rig):
    rig.sandbox.add_client(CLIENT_ID, CLIENT_SECRET, rotate_refresh_tokens=True, rotation_grace_seconds=30)
    use_introspection(rig)
    rig.connect()
    await die_in_flight(rig, send=True)

    report = await rig.cycle()

    assert report.refreshed == 1
    assert report.lost_rotations == 0
    stats = rig.sandbox.stats()
    assert (stats.introspections, stats.grace_uses, stats.reuse_detected) == (1, 1, 0)


async def test_a_connection_never_in_doubt_is_not_introspected(rig):
    use_introspection(rig)
    rig.connect()

    assert (await rig.cycle()).refreshed == 1
    assert rig.sandbox.stats().introspections == 0  # one request per refresh, as without introspection


async def test_an_introspection_endpoint_that_gives_no_answer_falls_back_to_the_refresh(rig, caplog):
    use_introspection(rig, path="/no-such-introspection")  # a 404: the answer is unknown
    connection_id, _ = rig.connect()
    await die_in_flight(rig, send=False)

    with caplog.at_level(logging.WARNING, logger="grantkeeper"):
        report = await rig.cycle()

    assert report.refreshed == 1
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED
    (record,) = [r for r in caplog.records if getattr(r, "action", None) == "token_introspection"]
    assert record.http_status == 404
    assert record.status == "unknown"
