"""A receiver that keeps answering 500: retried on the exponential schedule, then disabled after the limit.

Real HTTP to a loopback receiver, the real store on SQLite and PostgreSQL, and a frozen clock that the test
moves to each scheduled retry, so the schedule itself is what is checked.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.db.destinations import DISABLED_ERROR
from grantkeeper.adapters.db.tables import outbox
from grantkeeper.adapters.notify import SlackSender, StandardWebhookSender
from grantkeeper.core.links import derive_link_key
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import ProviderConfig
from grantkeeper.service.dispatch import Dispatcher, DispatchReport
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import T0
from tests.fixtures.receivers import HttpReceiver
from tests.integration.notify_support import notify

BASE = timedelta(seconds=30)
CAP = timedelta(minutes=20)
LIMIT = 5
SECRET = "whsec_ZmF1bHQtdGVzdC13ZWJob29rLXNlY3JldA=="


@pytest.fixture
async def relay(store: SqlStore) -> AsyncIterator[tuple[Dispatcher, FrozenClock]]:
    clock = FrozenClock(T0)
    webhooks = StandardWebhookSender(clock=SystemClock())
    slack = SlackSender(public_url="https://gk.example.test", link_key=derive_link_key(b"k"), clock=clock)
    dispatcher = Dispatcher(
        store,
        {"webhook": webhooks, "slack": slack},
        clock,
        owner="faults",
        max_attempts=8,
        base_delay=BASE,
        max_delay=CAP,
        failure_limit=LIMIT,
        rng=random.Random(4),
    )
    yield dispatcher, clock
    await dispatcher.close()


def _pending_row(store: SqlStore, tenant_id: str):
    [notification] = store.list_notifications(tenant_id, 1)
    [row] = [r for r in store.list_outbox(notification.notification_id) if r.channel == "webhook"]
    return row


async def test_a_receiver_answering_500_is_retried_on_schedule_then_disabled(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    http_receiver: HttpReceiver,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    dispatcher, clock = relay
    http_receiver.respond_with(500, "boom")
    hook = store.add_destination(
        tenant_id, DestinationKind.WEBHOOK, http_receiver.url("/hooks"), T0, secret=SECRET
    )
    notify(store, tenant_id, "u1", T0)
    clock.advance(timedelta(seconds=1))

    for attempt in range(1, LIMIT):
        assert await dispatcher.deliver_due() == DispatchReport(retrying=1)
        row = _pending_row(store, tenant_id)
        ceiling = min(BASE * 2 ** (attempt - 1), CAP)
        wait = row.next_attempt_at - clock.now()
        assert ceiling / 2 <= wait <= ceiling, f"attempt {attempt}: retry in {wait}"
        assert await dispatcher.deliver_due() == DispatchReport()  # nothing before its time
        clock.advance(wait)

    assert await dispatcher.deliver_due() == DispatchReport(retrying=1)  # the limit-th failure in a row

    [listed] = store.list_destinations(tenant_id, DestinationKind.WEBHOOK)
    assert (listed.destination_id, listed.status) == (hook.destination_id, "disabled")
    assert (listed.consecutive_failures, listed.last_error) == (LIMIT, "HTTP 500")
    assert listed.disabled_at == clock.now()
    row = _pending_row(store, tenant_id)
    assert row.status == "failed"
    assert len(http_receiver.requests) == LIMIT
    deliveries = store.list_deliveries(tenant_id, destination_id=hook.destination_id)
    assert [(d.is_delivered, d.error) for d in deliveries] == [(False, "HTTP 500")] * LIMIT
    assert store.outbox_counts(tenant_id)["failed"] == 1
    with store.engine.connect() as connection:
        last_error = connection.scalar(select(outbox.c.last_error).where(outbox.c.id == row.outbox_id))
    assert last_error == DISABLED_ERROR

    # Disabled: nothing more is sent, and new events are not even queued for it.
    clock.advance(timedelta(days=1))
    notify(store, tenant_id, "u2", clock.now())
    clock.advance(timedelta(seconds=1))
    assert await dispatcher.deliver_due() == DispatchReport()
    assert len(http_receiver.requests) == LIMIT

    # The operator re-enables it once the app is fixed; the next event goes out.
    http_receiver.respond_with(204)
    enabled = store.enable_destination(tenant_id, hook.destination_id)
    assert (enabled.status, enabled.consecutive_failures) == ("enabled", 0)
    notify(store, tenant_id, "u3", clock.now())
    clock.advance(timedelta(seconds=1))
    assert await dispatcher.deliver_due() == DispatchReport(delivered=1)
    assert http_receiver.requests[-1].json()["type"] == "connection.warning"


async def test_a_success_resets_the_failure_count(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    http_receiver: HttpReceiver,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    dispatcher, clock = relay
    http_receiver.respond_with(503, times=LIMIT - 1)
    http_receiver.respond_with(200)
    store.add_destination(tenant_id, DestinationKind.WEBHOOK, http_receiver.url("/h"), T0, secret=SECRET)
    notify(store, tenant_id, "u1", T0)
    clock.advance(timedelta(seconds=1))

    for _ in range(LIMIT - 1):
        assert await dispatcher.deliver_due() == DispatchReport(retrying=1)
        clock.advance(CAP)
    assert await dispatcher.deliver_due() == DispatchReport(delivered=1)

    [listed] = store.list_destinations(tenant_id)
    assert (listed.status, listed.consecutive_failures) == ("enabled", 0)


async def test_a_dead_slack_webhook_is_disabled_too_and_other_destinations_keep_going(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    http_receiver: HttpReceiver,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    """Slack answers 404 ``no_service`` for a deleted webhook: permanent, one failure per event."""
    dispatcher, clock = relay
    http_receiver.respond_with(404, "no_service")
    slack = store.add_destination(tenant_id, DestinationKind.SLACK, http_receiver.url("/slack/T/B/x"), T0)
    for user in range(LIMIT):
        notify(store, tenant_id, f"u{user}", T0)
    clock.advance(timedelta(seconds=1))

    report = await dispatcher.deliver_due()

    assert report.failed == LIMIT
    [listed] = store.list_destinations(tenant_id)
    assert (listed.destination_id, listed.status) == (slack.destination_id, "disabled")
    assert "/slack/T/B/x" not in listed.url_hint


async def test_a_429_with_retry_after_waits_at_least_that_long(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    http_receiver: HttpReceiver,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    """Discord and Slack rate limits say when to come back; the schedule alone would retry within 30 s."""
    dispatcher, clock = relay
    http_receiver.respond_with(429, headers={"Retry-After": "600"}, times=1)
    store.add_destination(tenant_id, DestinationKind.WEBHOOK, http_receiver.url("/h"), T0, secret=SECRET)
    notify(store, tenant_id, "u1", T0)
    clock.advance(timedelta(seconds=1))

    assert await dispatcher.deliver_due() == DispatchReport(retrying=1)
    wait = _pending_row(store, tenant_id).next_attempt_at - clock.now()
    assert timedelta(seconds=600) <= wait <= CAP
    [attempt] = store.list_deliveries(tenant_id)
    assert attempt.error == "HTTP 429"

    clock.advance(timedelta(seconds=599))
    assert await dispatcher.deliver_due() == DispatchReport()
    clock.advance(timedelta(seconds=1))
    assert await dispatcher.deliver_due() == DispatchReport(delivered=1)
