"""Two live dispatchers never send one row at once, even when one of them is slowed down.

A dispatcher whose sends are slow must not go on sending rows whose lease ran out and that another dispatcher
has leased since: both would send them. Real HTTP to a slow loopback receiver, real store, real clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.notify import StandardWebhookSender
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ProviderConfig
from grantkeeper.service.dispatch import Dispatcher
from tests.fixtures.receivers import HttpReceiver
from tests.integration.notify_support import notify

SECRET = "whsec_bGVhc2UtdGVzdC1zZWNyZXQtMDAwMDAwMDA="
ROWS = 10


def _dispatcher(store: SqlStore, owner: str) -> Dispatcher:
    clock = SystemClock()
    return Dispatcher(
        store,
        {"webhook": StandardWebhookSender(clock=clock)},
        clock,
        owner=owner,
        # margins wide enough for a loaded CI machine: a 0.3 s send against a 0.4 s timeout was cut off there
        # now and then, and the row's retry waited out its backoff past the end of the test
        lease_ttl=timedelta(seconds=2),
        send_timeout=timedelta(milliseconds=900),
        concurrency=1,
    )


async def test_a_slow_dispatcher_does_not_send_rows_another_one_has_leased_since(
    store: SqlStore, tenant_id: str, provider: ProviderConfig, http_receiver: HttpReceiver
) -> None:
    http_receiver.respond_with(200, delay=0.3)
    now = SystemClock().now()
    store.add_destination(tenant_id, DestinationKind.WEBHOOK, http_receiver.url("/h"), now, secret=SECRET)
    for user in range(ROWS):  # each also asks for an email, which waits: no email sender here
        notify(store, tenant_id, f"u{user}", now - timedelta(seconds=5))
    slow, other = _dispatcher(store, "slow"), _dispatcher(store, "other")
    try:
        first = asyncio.create_task(slow.deliver_due())  # leases all ten, sends one at a time
        await asyncio.sleep(2.4)  # its lease has run out with most rows unsent
        second = await other.deliver_due()
        first_report = await first
        for _ in range(100):  # the deferred rows go out once their lease has run out
            if len({r.headers["webhook-id"] for r in http_receiver.requests}) == ROWS:
                break
            await other.deliver_due()
            await asyncio.sleep(0.1)
    finally:
        await slow.close()
        await other.close()

    ids = Counter(request.headers["webhook-id"] for request in http_receiver.requests)
    assert len(ids) == ROWS
    assert set(ids.values()) == {1}, f"sent twice: {[i for i, n in ids.items() if n > 1]}"
    assert first_report.deferred > 0
    assert first_report.lost == 0
    assert first_report.delivered + second.delivered <= ROWS
