"""The origin write-up's three timelines, delivered: the right emails, webhooks and Slack messages, once.

Everything is real except the clock: the store (SQLite and PostgreSQL), the sandbox provider over HTTP, an
aiosmtpd server, and HTTP receivers for a per-user Slack webhook and the app's Standard Webhooks endpoint.
After every step the dispatcher runs, and the test compares everything received so far with what DESIGN
section 2's notification table and issue 4 say should have arrived by then.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from standardwebhooks.webhooks import Webhook

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.notify import SlackSender, SmtpEmailSender, StandardWebhookSender
from grantkeeper.core.links import derive_link_key, verify_reconnect
from grantkeeper.core.model import TokenSet
from grantkeeper.core.routing import DestinationKind
from grantkeeper.sandbox import Behaviour
from grantkeeper.service import admin
from grantkeeper.service.dispatch import Dispatcher
from tests.e2e.harness import Rig
from tests.fixtures.receivers import HttpReceiver
from tests.fixtures.smtp import SmtpServer

FIVE_MINUTES = timedelta(minutes=5)
LINK_KEY = derive_link_key(b"timeline-link-key")
PUBLIC_URL = "https://gk.example.test"
SECRET = "whsec_dGltZWxpbmUtd2ViaG9vay1zZWNyZXQtMDAwMQ=="
USER = "user-1"


class Deliveries:
    """A rig plus a dispatcher wired to real receivers, and views of what each receiver got."""

    def __init__(self, rig: Rig, smtp: SmtpServer, receiver: HttpReceiver) -> None:
        self.rig = rig
        self.smtp = smtp
        self.receiver = receiver
        store, tenant_id = rig.store, rig.tenant_id
        store.add_destination(
            tenant_id, DestinationKind.SLACK, receiver.url("/slack/T0/B0/x"), rig.clock.now(), user_id=USER
        )
        store.add_destination(
            tenant_id, DestinationKind.WEBHOOK, receiver.url("/app-hooks"), rig.clock.now(), secret=SECRET
        )
        email = SmtpEmailSender(
            host=smtp.host,
            port=smtp.port,
            security="none",
            email_from="grantkeeper <alerts@grantkeeper.test>",
            public_url=PUBLIC_URL,
            link_key=LINK_KEY,
            clock=rig.clock,
        )
        slack = SlackSender(public_url=PUBLIC_URL, link_key=LINK_KEY, clock=rig.clock)
        webhooks = StandardWebhookSender(clock=SystemClock())  # the receiver checks the signing time
        self.dispatcher = Dispatcher(
            store,
            {sender.channel: sender for sender in (email, slack, webhooks)},
            rig.clock,
            owner="timeline",
        )

    async def deliver(self) -> None:
        # Rows are stamped when their attempt finished: the frozen clock plus the real HTTP round trip.
        self.rig.clock.advance(timedelta(seconds=1))
        report = await self.dispatcher.deliver_due()
        assert (report.retrying, report.failed, report.lost) == (0, 0, 0)

    def email_subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.smtp.mailbox.messages]

    def slack_texts(self) -> list[str]:
        return [r.json()["text"] for r in self.receiver.requests if r.path.startswith("/slack/")]

    def webhook_events(self) -> list[str]:
        """Each webhook verified with the package's own verifier; the event types in arrival order."""
        events = []
        for request in self.receiver.requests:
            if request.path == "/app-hooks":
                payload = Webhook(SECRET).verify(request.body, dict(request.headers))
                events.append(payload["type"])
        return events

    def webhook_ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.receiver.requests if r.path == "/app-hooks"]


@pytest.fixture
async def delivered(
    rig: Rig, smtp_server: SmtpServer, http_receiver: HttpReceiver
) -> AsyncIterator[Deliveries]:
    deliveries = Deliveries(rig, smtp_server, http_receiver)
    yield deliveries
    await deliveries.dispatcher.close()


def _reconnect_link(text: str, connection_id: str) -> str:
    [line] = [line for line in text.splitlines() if "/connect/" in line]
    url = line[line.index("https://") :].split()[0]
    parts = urlsplit(url)
    assert parts.path == f"/connect/{connection_id}"
    return parse_qs(parts.query)["token"][0]


async def test_auth_failures_at_0_05_10_deliver_one_warning_then_one_disconnection(delivered: Deliveries):
    rig = delivered.rig
    connection_id, _ = rig.connect(USER, behaviour=Behaviour.INVALID_GRANT, workflows=("sync", "export"))

    await rig.cycle()  # 0:00: silence everywhere
    await delivered.deliver()
    assert (delivered.email_subjects(), delivered.slack_texts(), delivered.webhook_events()) == ([], [], [])

    rig.clock.advance(FIVE_MINUTES)  # 0:05: the warning, once per channel
    await rig.cycle()
    await delivered.deliver()
    assert delivered.email_subjects() == ["Action recommended: trouble connecting to sandbox"]
    assert delivered.slack_texts() == ["Trouble connecting to sandbox"]
    assert delivered.webhook_events() == ["connection.warning"]

    rig.clock.advance(FIVE_MINUTES)  # 0:10: the urgent disconnection, and both workflows paused
    await rig.cycle()
    await delivered.deliver()
    subjects = delivered.email_subjects()
    assert len(subjects) == 2
    assert "disconnected" in subjects[1].lower()
    assert delivered.slack_texts() == ["Trouble connecting to sandbox", "sandbox disconnected"]
    events = delivered.webhook_events()
    assert events[0] == "connection.warning"
    assert sorted(events[1:]) == ["connection.disconnected", "workflow.paused", "workflow.paused"]

    urgent = delivered.smtp.mailbox.messages[1]
    text = urgent.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    token = _reconnect_link(text, connection_id)
    assert verify_reconnect(token, connection_id, rig.clock.now(), LINK_KEY)
    assert str(urgent["To"]) == f"{USER}@example.test"
    slack_disconnected = [r.json() for r in delivered.receiver.requests if r.path.startswith("/slack/")][1]
    assert f"/connect/{connection_id}?token=" in str(slack_disconnected["blocks"])  # per-user: the link

    rig.clock.advance(FIVE_MINUTES)  # 0:15 and later: nothing new, nothing twice
    await rig.cycle()
    await delivered.deliver()
    await delivered.deliver()
    assert len(delivered.email_subjects()) == 2
    assert len(delivered.slack_texts()) == 2
    assert len(delivered.webhook_events()) == 4
    assert len(set(delivered.webhook_ids())) == 4


async def test_five_429s_deliver_one_rate_limit_notice_and_one_recovery_but_no_email(delivered: Deliveries):
    rig = delivered.rig
    rig.connect(USER, script=[Behaviour.INVALID_GRANT] + [Behaviour.RATE_LIMIT] * 5)

    await rig.cycle()  # one auth failure first: no notification
    for _ in range(5):
        rig.clock.advance(FIVE_MINUTES)
        await rig.cycle()
        await delivered.deliver()
    assert delivered.slack_texts() == ["sandbox is temporarily unavailable"]
    assert delivered.webhook_events() == ["connection.rate_limited"]

    rig.clock.advance(FIVE_MINUTES)  # success: the recovery, in app, chat and webhook
    await rig.cycle()
    await delivered.deliver()
    await delivered.deliver()
    assert delivered.slack_texts() == [
        "sandbox is temporarily unavailable",
        "sandbox connection recovered",
    ]
    assert delivered.webhook_events() == ["connection.rate_limited", "connection.recovered"]
    assert delivered.email_subjects() == []  # DESIGN section 2: neither is emailed


async def test_reconnect_delivers_recovered_and_workflow_resumed_events_and_no_email(delivered: Deliveries):
    """A reconnect (issue 6) says the connection recovered (in app, chat and webhook, never by email: the user
    just fixed it) and resumes the paused workflows."""
    rig = delivered.rig
    connection_id, _ = rig.connect(USER, behaviour=Behaviour.INVALID_GRANT, workflows=("sync", "export"))
    for _ in range(3):
        await rig.cycle()
        rig.clock.advance(FIVE_MINUTES)
    await delivered.deliver()
    before = (len(delivered.email_subjects()), len(delivered.slack_texts()), len(delivered.webhook_events()))
    assert before == (2, 2, 4)

    fresh = rig.sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    tokens = TokenSet(fresh.access_token, fresh.refresh_token, rig.clock.now() + timedelta(hours=1))
    assert admin.reconnect_connection(rig.store, rig.tenant_id, connection_id, tokens, rig.policy, rig.clock)
    await delivered.deliver()
    await delivered.deliver()

    # one transaction's events: delivered in no particular order
    after = sorted(delivered.webhook_events()[4:])
    assert after == ["connection.recovered", "workflow.resumed", "workflow.resumed"]
    resumed = [
        r.json()["data"]["name"]
        for r in delivered.receiver.requests
        if r.json().get("type") == "workflow.resumed"
    ]
    assert sorted(resumed) == ["export", "sync"]
    assert len(delivered.email_subjects()) == 2
    assert delivered.slack_texts()[2:] == ["sandbox connection recovered"]
