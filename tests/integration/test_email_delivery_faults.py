"""SMTP down for a while, then back: every email arrives, in order, once (issue 4's first fault test).

The store is the real one (SQLite and PostgreSQL), the relay a real aiosmtpd server on loopback that is not
listening at first, and the clock frozen so the retry schedule is stepped through rather than waited out.
"""

from __future__ import annotations

import random
from datetime import timedelta

from aiosmtpd.controller import Controller

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.notify import SmtpEmailSender
from grantkeeper.ports import ProviderConfig
from grantkeeper.service.dispatch import Dispatcher, DispatchReport
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import T0
from tests.fixtures.smtp import Mailbox, free_port
from tests.integration.test_outbox_store import emit

USERS = ("ana", "ben", "cho", "dee")


async def test_smtp_down_then_back_every_email_arrives_in_order_once(
    store: SqlStore, tenant_id: str, provider: ProviderConfig
) -> None:
    for minute, user in enumerate(USERS):
        emit(store, tenant_id, user, T0 + timedelta(minutes=minute), "email")
    clock = FrozenClock(T0 + timedelta(minutes=10))
    port = free_port()  # nothing listens here yet: the relay is down
    sender = SmtpEmailSender(
        host="127.0.0.1",
        port=port,
        security="none",
        email_from="grantkeeper@example.test",
        public_url="https://app.example.test",
        link_key=b"k" * 32,
        clock=clock,
        connect_timeout=timedelta(seconds=2),
    )
    dispatcher = Dispatcher(store, {"email": sender}, clock, owner="d1", concurrency=1, rng=random.Random(7))

    down = DispatchReport()
    for _ in range(3):  # three rounds of failures while the relay stays down
        down += await dispatcher.deliver_due()
        clock.advance(timedelta(hours=2))
    assert down == DispatchReport(retrying=len(USERS) * 3)
    assert store.outbox_counts(tenant_id)["pending"] == len(USERS)

    mailbox = Mailbox()
    relay = Controller(mailbox, hostname="127.0.0.1", port=port)
    relay.start()
    try:
        back = await dispatcher.deliver_due()
        again = await dispatcher.deliver_due()
    finally:
        relay.stop()

    assert back == DispatchReport(delivered=len(USERS))
    assert again == DispatchReport()
    assert [message["To"] for message in mailbox.messages] == [f"{user}@example.test" for user in USERS]
    assert len({message["Message-ID"] for message in mailbox.messages}) == len(USERS)
    attempts = store.list_deliveries(tenant_id, limit=100)
    assert sum(a.is_delivered for a in attempts) == len(USERS)
    assert all(a.error and "password" not in a.error for a in attempts if not a.is_delivered)
