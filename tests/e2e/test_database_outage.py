"""PostgreSQL becomes unreachable while a refresh is in flight (issue 5): the rotated token waits in memory,
no new refresh starts until the database answers, and nothing is lost when it comes back.

The database sits behind a loopback TCP proxy the test cuts and restores, so the outage is real for the
worker (connections reset, new ones refused) without stopping the server other tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import make_url

from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.ports import StoreUnavailableError
from grantkeeper.service.cycle import RefreshService
from tests.e2e.harness import Rig
from tests.fixtures.tcp_proxy import TcpProxy, tcp_proxy

LATENCY = 0.5  # seconds the sandbox takes to answer: the window in which the test cuts the database


@pytest.fixture
def proxy(postgres_server) -> Iterator[tuple[TcpProxy, str]]:
    name = postgres_server.create(template=postgres_server.template)
    url = make_url(postgres_server.url_for(name))
    with tcp_proxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    postgres_server.drop(name)


async def wait_for(condition, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def one_worker(url: str, keyring, sandbox, sandbox_server) -> tuple[Rig, RefreshService]:
    """The rig on the proxied database and one worker refreshing one connection at a time."""
    engine = make_engine(url)
    rig = Rig(engine, SqlStore(engine, keyring), sandbox, sandbox_server.token_url)
    return rig, worker(rig)


def worker(rig: Rig, concurrency: int = 1) -> RefreshService:
    """Another worker process on the same database (its own owner id, its own view of outages)."""
    return RefreshService(
        rig.store, rig.endpoint, rig.clock, rig.policy, concurrency=concurrency,
        max_attempt_duration=timedelta(seconds=10), rng=random.Random(0),
    )  # fmt: skip


async def test_a_refreshed_token_survives_a_database_outage_and_nothing_new_starts_meanwhile(
    proxy, keyring, sandbox, sandbox_server, caplog
):
    cut, url = proxy
    rig, service = one_worker(url, keyring, sandbox, sandbox_server)
    grants = [rig.connect(f"user-{i}")[1] for i in range(3)]
    sandbox.set_latency(LATENCY)

    with caplog.at_level(logging.INFO, logger="grantkeeper"):
        cycle = asyncio.create_task(service.run_cycle())
        await wait_for(lambda: sandbox.stats().requests == 1)
        cut.cut()  # the first answer is on its way; the database is gone
        await wait_for(lambda: any(getattr(r, "action", "") == "commit_failed" for r in caplog.records))
        sent = sandbox.stats().requests
        # the one in flight, and with one slot at most one more: started ahead of its slot, so recorded in
        # flight before the cut, it left when the first answer freed the slot (ADR 21)
        assert sent <= 2
        await asyncio.sleep(2.5)
        assert sandbox.stats().requests == sent  # nothing new left while the answer waited in memory
        assert not service.runner.gate.is_open
        cut.restore()
        report = await asyncio.wait_for(cycle, timeout=30)

    assert report.refreshed == 3
    assert report.lease_conflicts == 0
    assert sandbox.stats().reuse_detected == 0
    stored = {
        rig.store.read_tokens(rig.tenant_id, record.connection_id).refresh_token  # type: ignore[union-attr]
        for record in rig.store.list_connections(rig.tenant_id)
    }
    assert stored == {sandbox.current_refresh_token(grant.grant_id) for grant in grants}  # none lost
    assert any(getattr(r, "action", "") == "commit_recovered" for r in caplog.records)
    for grant in grants:
        assert grant.refresh_token not in caplog.text
    await rig.close()


async def test_a_worker_stopped_during_the_outage_frees_its_gate_and_the_lost_answer_is_named(
    proxy, keyring, sandbox, sandbox_server, caplog
):
    cut, url = proxy
    rig, service = one_worker(url, keyring, sandbox, sandbox_server)
    connection_id, _ = rig.connect("user-0")
    sandbox.set_latency(LATENCY)

    with caplog.at_level(logging.INFO, logger="grantkeeper"):
        cycle = asyncio.create_task(service.run_cycle())
        await wait_for(lambda: sandbox.stats().requests == 1)
        cut.cut()
        await wait_for(lambda: any(getattr(r, "action", "") == "commit_failed" for r in caplog.records))
        assert not service.runner.gate.is_open
        cycle.cancel()  # the worker is told to stop while its answer waits for the database
        with contextlib.suppress(asyncio.CancelledError):
            await cycle

    assert service.runner.gate.is_open  # a held gate would have stopped this worker for good
    assert any(getattr(r, "action", "") == "commit_abandoned" for r in caplog.records)
    cut.restore()
    sandbox.set_latency(0)
    rig.clock.advance(timedelta(seconds=11))  # the abandoned attempt's deadline
    report = await worker(rig).run_cycle()  # the worker's next process, which saw no outage
    assert report.lost_rotations == 1  # the answer died with the stopped worker, and it says so
    assert rig.state(connection_id).disconnect_reason is not None
    await rig.close()


async def test_after_the_outage_the_worker_holding_the_answer_commits_before_others_retake_the_row(
    proxy, keyring, sandbox, sandbox_server, caplog
):
    """The outage outlasts the attempt's deadline, so the row's lease has run out when the database is back.
    A second worker, which saw the outage too, leaves the row to its owner for a while; the owner's retry
    stores the rotated token, and nobody sends the consumed one (the strict sandbox would count a reuse)."""
    cut, url = proxy
    rig, owner = one_worker(url, keyring, sandbox, sandbox_server)
    connection_id, grant = rig.connect("user-0")
    other = worker(rig, concurrency=4)
    sandbox.set_latency(LATENCY)

    with caplog.at_level(logging.INFO, logger="grantkeeper"):
        cycle = asyncio.create_task(owner.run_cycle())
        await wait_for(lambda: sandbox.stats().requests == 1)
        cut.cut()
        await wait_for(lambda: any(getattr(r, "action", "") == "commit_failed" for r in caplog.records))
        with pytest.raises(StoreUnavailableError):
            await other.run_cycle()  # the other worker finds the database away too
        rig.clock.advance(timedelta(seconds=30))  # well past the attempt's deadline
        cut.restore()
        taken = await other.run_cycle()  # at once, racing the owner's next commit retry
        report = await asyncio.wait_for(cycle, timeout=30)

    assert taken.due == 0  # the row in flight was left to its owner
    assert report.refreshed == 1
    assert sandbox.stats().requests == 1
    assert sandbox.stats().reuse_detected == 0
    tokens = rig.store.read_tokens(rig.tenant_id, connection_id)
    assert tokens is not None
    assert tokens.refresh_token == sandbox.current_refresh_token(grant.grant_id)
    assert rig.state(connection_id).in_flight_since is None
    await rig.close()
