"""A chain of deaths inside one rotation grace window (ADR 19). Worker A dies with its refresh at the provider
(the token rotated, the answer lost); the first rescuer dies after claiming the row but before starting it;
the second sends the stored token (a grace use, which rotates again) and dies too; the third must still be
inside the window that A's rotation opened, or its retry is a reuse and the grant is lost.

A rescuer's claim lasts only until its start (``RESCUE_QUEUE_MARGIN``), since the start gives the attempt
its own deadline. When it lasted a whole attempt budget more, this chain took 33 s and the Okta-like 30 s
window below was gone. Real store (both databases), real sandbox over HTTP; both clocks are moved by hand.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from grantkeeper.bootstrap import attempt_budget, longest_retry_after_death
from grantkeeper.config import Settings
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import ClaimedConnection
from grantkeeper.sandbox import Sandbox
from tests.e2e.harness import Rig
from tests.fixtures.sandbox import ManualClock, grace_window_sandbox

GRACE_SECONDS = 30.0  # Okta's default
ATTEMPT_TTL = timedelta(seconds=10)  # the rig's attempt budget, as in bench/scale_out
TICK = timedelta(milliseconds=1)


@pytest.fixture
def provider_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(provider_clock: ManualClock) -> Sandbox:
    """Overrides the shared fixture: the rig's client with a 30 s rotation grace window on a manual clock."""
    return grace_window_sandbox(provider_clock, GRACE_SECONDS)


def _advance(rig: Rig, provider_clock: ManualClock, delta: timedelta) -> None:
    rig.clock.advance(delta)
    provider_clock.advance(delta.total_seconds())


async def _send_and_die(rig: Rig, claim: ClaimedConnection, budget: timedelta = ATTEMPT_TTL) -> None:
    """What a worker killed mid-request leaves: the start recorded, the request at the provider, no commit."""
    starts = rig.store.start_attempts([claim], rig.clock.now(), budget)
    assert starts.started == {claim.connection_id}
    refresh_token = claim.refresh_token
    assert refresh_token is not None
    outcome = await rig.endpoint.refresh(claim.provider, refresh_token)
    assert outcome.tokens is not None  # the provider rotated; the answer dies with the worker


def _rescue(rig: Rig, owner: str) -> list[ClaimedConnection]:
    """A claim as the worker makes it: rows left in flight first, leased for the service's ``rescue_ttl``."""
    now = rig.clock.now()
    return rig.store.claim_due(now, 10, owner, rig.service.lease_ttl, rescue_ttl=rig.service.rescue_ttl)


async def test_a_rescuer_that_dies_before_starting_costs_seconds_so_the_chain_stays_in_the_window(
    rig: Rig, provider_clock: ManualClock
) -> None:
    connection_id, grant = rig.connect()
    rotated_at = provider_clock.now

    (a,) = rig.store.claim_due(rig.clock.now(), 10, "worker-a", rig.service.lease_ttl)
    await _send_and_die(rig, a)
    _advance(rig, provider_clock, ATTEMPT_TTL + TICK)  # A's deadline: its row may be rescued

    (r0,) = _rescue(rig, "rescuer-0")
    assert r0.state.in_flight_since is not None
    # rescuer 0 dies here, before its start; the row waits for its claim to run out
    _advance(rig, provider_clock, r0.lease_expires_at - rig.clock.now() + TICK)

    (r1,) = _rescue(rig, "rescuer-1")
    await _send_and_die(rig, r1)  # a grace use: the provider rotates once more
    _advance(rig, provider_clock, ATTEMPT_TTL + TICK)

    assert provider_clock.now - rotated_at < GRACE_SECONDS  # 23 s: one attempt budget less than before
    report = await rig.cycle()

    assert report.refreshed == 1
    stats = rig.sandbox.stats()
    assert stats.reuse_detected == 0
    assert stats.grace_uses == 2
    state = rig.state(connection_id)
    assert state.status is ConnectionStatus.CONNECTED
    assert state.in_flight_since is None
    tokens = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert tokens is not None
    assert tokens.refresh_token == rig.sandbox.current_refresh_token(grant.grant_id)


async def test_a_claim_whose_lease_ran_out_in_line_is_not_started(
    rig: Rig, provider_clock: ManualClock
) -> None:
    """The runner starts a claim while its lease is live, however little is left (the start's fence decides),
    and never once it has run out: by then another worker may hold the row."""
    connection_id, grant = rig.connect()
    (claim,) = rig.store.claim_due(rig.clock.now(), 10, rig.service.owner, timedelta(seconds=3))
    _advance(rig, provider_clock, timedelta(seconds=3) + TICK)

    assert await rig.service.runner.run(claim) is None

    assert rig.sandbox.stats().by_grant.get(grant.grant_id) is None  # nothing was sent
    (retaken,) = rig.store.claim_due(rig.clock.now(), 10, "other", rig.service.lease_ttl)
    assert retaken.connection_id == connection_id


async def test_a_claim_with_a_second_of_lease_left_starts_and_gets_the_attempts_deadline(
    rig: Rig, provider_clock: ManualClock
) -> None:
    connection_id, grant = rig.connect()
    (claim,) = rig.store.claim_due(rig.clock.now(), 10, rig.service.owner, timedelta(seconds=3))
    _advance(rig, provider_clock, timedelta(seconds=2))

    result = await rig.service.runner.run(claim)

    assert result is not None
    assert result.is_committed
    assert rig.sandbox.stats().by_grant.get(grant.grant_id) == 1
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED


async def test_a_claim_taken_by_another_worker_between_the_check_and_the_start_is_not_sent(
    rig: Rig, provider_clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's check of the lease and the start are two moments; between them the lease may run out and
    another worker claim the row. The start's fence on version and owner is what decides (ADR 19): this
    worker's start fails, the other's refresh is the only request. The refusal is logged (``start_refused``,
    a warning): it is also how a claim undone by a crash of the database shows (ADR 18)."""
    connection_id, grant = rig.connect()
    (claim,) = rig.store.claim_due(rig.clock.now(), 10, rig.service.owner, timedelta(seconds=3))
    real = rig.store.commit_and_start
    taken: list[ClaimedConnection] = []

    def another_worker_claims_first(batch, claims, now, attempt_ttl):  # type: ignore[no-untyped-def]
        if not taken:  # the lease runs out while this start waits in line, and worker B takes the row
            _advance(rig, provider_clock, claim.lease_expires_at - rig.clock.now() + TICK)
            taken.extend(rig.store.claim_due(rig.clock.now(), 10, "worker-b", rig.service.lease_ttl))
        return real(batch, claims, rig.clock.now(), attempt_ttl)

    rig.store.commit_and_start = another_worker_claims_first  # type: ignore[method-assign]

    with caplog.at_level("WARNING", logger="grantkeeper.refresh"):
        assert await rig.service.runner.run(claim) is None

    refused = [r for r in caplog.records if getattr(r, "action", None) == "start_refused"]
    assert [(r.levelname, getattr(r, "connection_id", None)) for r in refused] == [("WARNING", connection_id)]
    assert [other.connection_id for other in taken] == [connection_id]
    assert rig.sandbox.stats().by_grant.get(grant.grant_id) is None  # this worker sent nothing
    rig.store.commit_and_start = real  # type: ignore[method-assign]
    starts = rig.store.start_attempts(taken, rig.clock.now(), ATTEMPT_TTL)
    assert starts.started == {connection_id}  # worker B's lease is intact


async def test_with_the_default_settings_one_death_mid_request_is_retried_inside_oktas_window(
    rig: Rig, provider_clock: ManualClock
) -> None:
    """On the default timeouts (connect 5 s, read 10 s) and poll (5 s), the row of a worker killed right after
    its request left waits at most its attempt's budget (20 s) and one poll: 25 s, inside Okta's default
    30 s window with 5 s to spare. With the former 15 s read timeout it was 30 s: the retry was a reuse."""
    defaults = Settings.model_construct()  # the defaults themselves, whatever the environment says
    wait = longest_retry_after_death(defaults)
    assert wait <= timedelta(seconds=GRACE_SECONDS - 5)
    connection_id, grant = rig.connect()
    rotated_at = provider_clock.now

    (a,) = rig.store.claim_due(rig.clock.now(), 10, "worker-a", rig.service.lease_ttl)
    await _send_and_die(rig, a, attempt_budget(defaults))
    _advance(rig, provider_clock, wait)  # the latest another worker's poll finds the row

    assert provider_clock.now - rotated_at == wait.total_seconds()
    report = await rig.cycle()

    assert report.refreshed == 1
    stats = rig.sandbox.stats()
    assert stats.reuse_detected == 0
    assert stats.grace_uses == 1
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED
    tokens = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert tokens is not None
    assert tokens.refresh_token == rig.sandbox.current_refresh_token(grant.grant_id)
