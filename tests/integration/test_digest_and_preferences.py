"""Per-user preferences decide what is emailed, and digest mode gathers a day's warnings into one email.

Real aiosmtpd server, real store on SQLite and PostgreSQL, frozen clock. Each received message is parsed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest

from grantkeeper.adapters.db import SqlStore
from grantkeeper.adapters.notify import DigestEmailSender, SmtpEmailSender
from grantkeeper.core.links import derive_link_key, verify_reconnect
from grantkeeper.core.model import NotificationType as Kind
from grantkeeper.core.routing import Preferences, WarningEmail
from grantkeeper.ports import ProviderConfig, UserPreferences
from grantkeeper.service.dispatch import Dispatcher, DispatchReport
from grantkeeper.testing import FrozenClock
from tests.fixtures.db import new_provider
from tests.fixtures.smtp import SmtpServer
from tests.integration.notify_support import notify

LINK_KEY = derive_link_key(b"digest-test")
DAY = datetime(2025, 3, 1, tzinfo=UTC)  # digests go out at 09:00 UTC (the store's default)
DIGEST_TIME = DAY + timedelta(days=1, hours=9)


@pytest.fixture
async def relay(store: SqlStore, smtp_server: SmtpServer) -> AsyncIterator[tuple[Dispatcher, FrozenClock]]:
    clock = FrozenClock(DAY + timedelta(hours=10))
    email = SmtpEmailSender(
        host=smtp_server.host,
        port=smtp_server.port,
        security="none",
        email_from="grantkeeper <alerts@grantkeeper.test>",
        public_url="https://gk.example.test",
        link_key=LINK_KEY,
        clock=clock,
    )
    dispatcher = Dispatcher(
        store, {"email": email}, clock, owner="digest", digest_sender=DigestEmailSender(email)
    )
    yield dispatcher, clock
    await dispatcher.close()


def _prefs(store: SqlStore, tenant_id: str, user_id: str, **changes: object) -> None:
    preferences = Preferences(**changes)  # type: ignore[arg-type]
    store.set_preferences(tenant_id, UserPreferences(user_id, preferences=preferences), DAY)


def _text(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]


def _html(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]


async def test_digest_mode_gathers_a_days_warnings_into_one_email_per_person(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    smtp_server: SmtpServer,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    dispatcher, clock = relay
    _prefs(store, tenant_id, "ann", warning_email=WarningEmail.DIGEST)
    _prefs(store, tenant_id, "bob", warning_email=WarningEmail.DIGEST)
    store.add_provider(tenant_id, new_provider("xero"))
    store.add_provider(tenant_id, new_provider("hubspot"))
    warned = {
        notify(store, tenant_id, "ann", DAY + timedelta(hours=10), provider="google"): "google",
        notify(store, tenant_id, "ann", DAY + timedelta(hours=14), provider="xero"): "xero",
        notify(store, tenant_id, "ann", DAY + timedelta(hours=20), provider="hubspot"): "hubspot",
    }
    notify(store, tenant_id, "bob", DAY + timedelta(hours=11))
    urgent = notify(store, tenant_id, "ann", DAY + timedelta(hours=12), Kind.DISCONNECTED, provider="xero")
    late = notify(store, tenant_id, "ann", DIGEST_TIME + timedelta(minutes=1))  # the next day's digest

    clock.advance(timedelta(hours=11))  # 21:00: the disconnection went at once, the warnings wait
    assert await dispatcher.deliver_due() == DispatchReport(delivered=1)
    [first] = smtp_server.mailbox.messages
    assert "disconnected" in str(first["Subject"]).lower()
    assert urgent in _text(first)

    clock.set(DIGEST_TIME - timedelta(seconds=1))
    assert await dispatcher.deliver_due() == DispatchReport()

    clock.set(DIGEST_TIME)
    report = await dispatcher.deliver_due()
    assert report == DispatchReport(delivered=4)  # ann's three rows and bob's one, as two emails
    digests = smtp_server.mailbox.messages[1:]
    assert sorted(str(m["To"]) for m in digests) == ["ann@example.test", "bob@example.test"]
    [ann] = [m for m in digests if str(m["To"]) == "ann@example.test"]
    assert str(ann["Subject"]) == "Daily summary: 3 connections need attention"
    text, html = _text(ann), _html(ann)
    assert [p for p in ("google", "xero", "hubspot") if p in text] == ["google", "xero", "hubspot"]
    assert text.index("google") < text.index("xero") < text.index("hubspot")  # oldest first
    for connection_id, name in warned.items():
        token = _token(text, connection_id)
        assert verify_reconnect(token, connection_id, clock.now(), LINK_KEY), name
        assert f"/connect/{connection_id}?token=" in html
    assert late not in text

    assert await dispatcher.deliver_due() == DispatchReport()  # once
    clock.set(DIGEST_TIME + timedelta(days=1))
    assert await dispatcher.deliver_due() == DispatchReport(delivered=1)
    [next_day] = smtp_server.mailbox.messages[3:]
    assert str(next_day["Subject"]) == "Daily summary: 1 connection needs attention"
    assert late in _text(next_day)


async def test_preferences_decide_which_emails_go(
    store: SqlStore,
    tenant_id: str,
    provider: ProviderConfig,
    smtp_server: SmtpServer,
    relay: tuple[Dispatcher, FrozenClock],
) -> None:
    dispatcher, clock = relay
    _prefs(store, tenant_id, "quiet", email=False)
    _prefs(store, tenant_id, "nowarn", warning_email=WarningEmail.NEVER)
    store.set_preferences(tenant_id, UserPreferences("noaddr", email_address="fallback@example.test"), DAY)
    at = clock.now()
    for kind in (Kind.WARNING, Kind.DISCONNECTED):
        notify(store, tenant_id, "quiet", at, kind)  # email off: nothing, not even the disconnection
        notify(store, tenant_id, "nowarn", at, kind)  # warnings never: only the disconnection
        notify(store, tenant_id, "noaddr", at, kind, email=None)  # the user record's address
        notify(store, tenant_id, "nobody", at, kind, email=None)  # no address at all: in-app only
    notify(store, tenant_id, "default", at)  # no preferences: the warning goes at once
    clock.advance(timedelta(seconds=1))

    assert await dispatcher.deliver_due() == DispatchReport(delivered=4)

    received = sorted((str(m["To"]), _kind(m)) for m in smtp_server.mailbox.messages)
    assert received == [
        ("default@example.test", "warning"),
        ("fallback@example.test", "disconnected"),
        ("fallback@example.test", "warning"),
        ("nowarn@example.test", "disconnected"),
    ]
    assert len(store.list_notifications(tenant_id, 100)) == 9  # in-app is never affected


def _kind(message: EmailMessage) -> str:
    return "disconnected" if "disconnected" in str(message["Subject"]).lower() else "warning"


def _token(text: str, connection_id: str) -> str:
    for line in text.splitlines():
        if f"/connect/{connection_id}?" in line:
            url = line[line.index("https://") :].split()[0]
            return parse_qs(urlsplit(url).query)["token"][0]
    raise AssertionError(f"no link for {connection_id}")
