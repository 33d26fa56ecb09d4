"""``refresh --due`` honours the lead window and backoff; ``--all`` and IDs refresh now; neither touches a
connection that needs reauthorization. Also: what a success, a rotation and a malformed 200 store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import NewProvider, UnknownConnectionError
from grantkeeper.sandbox import Behaviour
from grantkeeper.service import admin


async def test_due_cycle_takes_only_tokens_inside_the_lead_window(rig):
    inside, _ = rig.connect("inside", expires_in=timedelta(minutes=9))
    outside, _ = rig.connect("outside", expires_in=timedelta(minutes=11))
    report = await rig.cycle()
    assert [row.connection_id for row in report.rows] == [inside]
    assert rig.state(outside).last_refreshed_at is None

    rig.clock.advance(timedelta(minutes=1, seconds=1))
    report = await rig.cycle()
    assert [row.connection_id for row in report.rows] == [outside]


async def test_due_cycle_waits_out_the_backoff(rig):
    connection_id, _ = rig.connect(script=[Behaviour.RATE_LIMIT])
    await rig.cycle()
    retry_at = rig.state(connection_id).next_attempt_at
    rig.clock.set(retry_at - timedelta(seconds=1))
    assert (await rig.cycle()).due == 0
    rig.clock.set(retry_at)
    assert (await rig.cycle()).refreshed == 1


async def test_refresh_all_ignores_lead_window_and_backoff_but_skips_disconnected(rig):
    fresh, _ = rig.connect("fresh", expires_in=timedelta(hours=1))
    backing_off, _ = rig.connect("backing-off", script=[Behaviour.RATE_LIMIT])
    revoked, _ = rig.connect("revoked", behaviour=Behaviour.CONSENT_REQUIRED)
    await rig.cycle()
    assert rig.state(revoked).status is ConnectionStatus.NEEDS_REAUTHORIZATION
    requests_before = rig.sandbox.stats().requests

    report = await rig.service.refresh_now(rig.tenant_id, None)
    assert sorted(row.connection_id for row in report.rows) == sorted([fresh, backing_off])
    assert report.refreshed == 2
    assert rig.sandbox.stats().requests == requests_before + 2
    assert rig.state(revoked).status is ConnectionStatus.NEEDS_REAUTHORIZATION


async def test_refresh_ids_refreshes_only_the_named_connections(rig):
    first, _ = rig.connect("first", expires_in=timedelta(hours=1))
    second, _ = rig.connect("second", expires_in=timedelta(hours=1))
    report = await rig.service.refresh_now(rig.tenant_id, [second])
    assert [row.connection_id for row in report.rows] == [second]
    assert rig.state(first).last_refreshed_at is None


async def test_refresh_ids_never_touches_a_connection_needing_reauthorization(rig):
    revoked, _ = rig.connect(behaviour=Behaviour.CONSENT_REQUIRED)
    await rig.cycle()
    requests = rig.sandbox.stats().requests
    report = await rig.service.refresh_now(rig.tenant_id, [revoked])
    assert report.due == 0
    assert rig.sandbox.stats().requests == requests


async def test_refresh_unknown_id_is_an_error_and_refreshes_nothing(rig):
    known, _ = rig.connect(expires_in=timedelta(hours=1))
    with pytest.raises(UnknownConnectionError):
        await rig.service.refresh_now(rig.tenant_id, [known, "con_doesnotexist"])
    assert rig.sandbox.stats().requests == 0


async def test_rotated_refresh_token_is_stored_and_used_next_time(rig):
    connection_id, grant = rig.connect()
    await rig.cycle()
    claim = _peek_tokens(rig, connection_id)
    assert claim == rig.sandbox.current_refresh_token(grant.grant_id)
    assert claim != grant.refresh_token
    rig.clock.advance(timedelta(hours=1))
    assert (await rig.cycle()).refreshed == 1
    assert rig.sandbox.stats().reuse_detected == 0


async def test_no_rotation_keeps_the_stored_refresh_token(rig):
    connection_id, grant = rig.connect(script=[Behaviour.OK_NO_ROTATION])
    await rig.cycle()
    assert _peek_tokens(rig, connection_id) == grant.refresh_token


@pytest.mark.parametrize("behaviour", [Behaviour.NOT_JSON, Behaviour.NO_ACCESS_TOKEN])
async def test_malformed_200_never_overwrites_stored_tokens(rig, behaviour):
    connection_id, grant = rig.connect(script=[behaviour])
    report = await rig.cycle()
    assert report.by_outcome["transient"] == 1
    assert _peek_tokens(rig, connection_id) == grant.refresh_token
    assert _peek_access(rig, connection_id) == grant.access_token


def _peek_tokens(rig, connection_id: str) -> str | None:
    return rig.store.read_tokens(rig.tenant_id, connection_id).refresh_token


def _peek_access(rig, connection_id: str) -> str | None:
    return rig.store.read_tokens(rig.tenant_id, connection_id).access_token


async def test_config_failure_flags_the_provider_and_never_touches_the_users_counters(rig):
    connection_id, _ = rig.connect(script=[Behaviour.INVALID_GRANT, Behaviour.INVALID_CLIENT])
    await rig.cycle()
    rig.clock.advance(timedelta(minutes=5))
    report = await rig.cycle()
    assert report.by_outcome["config"] == 1
    state = rig.state(connection_id)
    assert (state.consecutive_failures, state.consecutive_transient_failures) == (1, 0)
    assert state.status is ConnectionStatus.CONNECTED
    assert state.last_error.code == "invalid_client"
    (provider,) = rig.store.list_providers(rig.tenant_id)
    assert provider.flagged_at is not None
    assert "invalid_client" in (provider.flag_reason or "")
    assert rig.notification_types() == []


async def test_wrong_client_secret_is_config_not_the_users_fault(rig):
    wrong = NewProvider("wrong-secret", rig.token_url, "app", "not-the-secret")
    admin.add_provider(rig.store, rig.tenant_id, wrong)
    rig.provider = "wrong-secret"
    victim, _ = rig.connect("victim")
    report = await rig.cycle()
    assert report.by_outcome["config"] == 1
    assert rig.state(victim).consecutive_failures == 0
    assert rig.state(victim).status is ConnectionStatus.CONNECTED


async def test_provider_failing_for_most_connections_gets_an_operator_alert(rig, caplog):
    for index in range(12):
        rig.connect(f"user-{index}", behaviour=Behaviour.UNAVAILABLE if index < 11 else None)
    report = await rig.cycle()
    assert report.provider_alerts == ["sandbox"]
    assert any(getattr(r, "action", None) == "provider_alert" for r in caplog.records)


async def test_a_few_failures_raise_no_operator_alert(rig):
    for index in range(12):
        rig.connect(f"user-{index}", behaviour=Behaviour.UNAVAILABLE if index < 3 else None)
    assert (await rig.cycle()).provider_alerts == []


async def test_a_refresh_token_no_key_opens_is_set_aside_and_the_others_refresh(rig, caplog):
    """The claim leaves refresh tokens sealed; the attempt that cannot open its own parks the row without a
    request, without counting a failure, and with the error logged by id (never the stored value)."""
    readable, _ = rig.connect("readable")
    unreadable, _ = rig.connect("unreadable")
    with rig.engine.begin() as connection:
        connection.execute(
            update(connections)
            .where(connections.c.id == unreadable)
            .values(refresh_token_enc="gk1:gone:AAAA")
        )
    requests_before = rig.sandbox.stats().requests

    report = await rig.cycle()

    assert [row.connection_id for row in report.rows] == [readable]
    assert rig.sandbox.stats().requests == requests_before + 1
    parked = rig.state(unreadable)
    assert parked.status is ConnectionStatus.CONNECTED
    assert parked.consecutive_failures == 0
    assert parked.in_flight_since is None
    assert parked.last_error is not None
    assert parked.last_error.code == "decryption_failed"
    assert parked.next_attempt_at == rig.clock.now() + timedelta(hours=1)
    logged = [r for r in caplog.records if getattr(r, "action", None) == "decryption_failed"]
    assert [unreadable in r.getMessage() for r in logged] == [True]
    assert "gk1:gone" not in caplog.text
    assert (await rig.cycle()).due == 0  # not retried before the hour is up
