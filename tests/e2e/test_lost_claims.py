"""A claim the database lost in a crash (ADR 18). On PostgreSQL a claim commits without waiting for its WAL
flush, so a server crash can undo it; the row's ``version`` then goes back, and the same worker may claim it
again with the same version and owner. Both claims would pass the start's fence, so the worker itself must
never run two attempts for one connection. Real store (both databases), real sandbox over HTTP."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import ClaimedConnection
from tests.e2e.harness import Rig


def _lose(rig: Rig, claim: ClaimedConnection) -> None:
    """What a crash before the claim's WAL reached the disk leaves: the row as it was before the claim."""
    with rig.engine.begin() as connection:
        connection.execute(
            update(connections)
            .where(connections.c.id == claim.connection_id)
            .values(version=claim.version - 1, lease_owner=None, lease_expires_at=None)
        )


async def test_a_lost_claim_taken_again_by_the_same_worker_sends_one_request_not_two(rig: Rig) -> None:
    connection_id, grant = rig.connect()
    service = rig.service
    (first,) = rig.store.claim_due(rig.clock.now(), 10, service.owner, service.lease_ttl)
    _lose(rig, first)
    (second,) = rig.store.claim_due(rig.clock.now(), 10, service.owner, service.lease_ttl)
    # the hazard: nothing in the row tells the two claims apart
    assert (second.connection_id, second.version, second.lease_owner) == (
        first.connection_id,
        first.version,
        first.lease_owner,
    )
    rig.sandbox.set_latency(0.2)  # both would be at the provider at once

    results = await asyncio.gather(service.runner.run(first), service.runner.run(second))

    assert sum(result is not None for result in results) == 1
    stats = rig.sandbox.stats()
    assert stats.by_grant.get(grant.grant_id) == 1
    assert stats.reuse_detected == 0
    assert rig.state(connection_id).status is ConnectionStatus.CONNECTED
    assert rig.sandbox.current_refresh_token(grant.grant_id) == _stored_refresh_token(rig, connection_id)


async def test_after_the_attempt_the_connection_can_be_claimed_and_refreshed_again(rig: Rig) -> None:
    """The guard holds a connection only while its attempt runs: the next claim of it is served."""
    connection_id, grant = rig.connect()
    service = rig.service
    (first,) = rig.store.claim_due(rig.clock.now(), 10, service.owner, service.lease_ttl)
    assert await service.runner.run(first) is not None
    due_at = rig.state(connection_id).next_attempt_at
    assert due_at is not None
    rig.clock.advance(due_at - rig.clock.now() + timedelta(seconds=1))

    (again,) = rig.store.claim_due(rig.clock.now(), 10, service.owner, service.lease_ttl)
    assert await service.runner.run(again) is not None

    assert rig.sandbox.stats().by_grant.get(grant.grant_id) == 2
    assert rig.sandbox.stats().reuse_detected == 0


def _stored_refresh_token(rig: Rig, connection_id: str) -> str | None:
    tokens = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert tokens is not None
    return tokens.refresh_token
