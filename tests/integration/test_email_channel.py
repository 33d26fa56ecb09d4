"""The email channel against a real SMTP server on 127.0.0.1 (aiosmtpd): what arrives, and what failures mean.

Needs the ``tests.fixtures.smtp`` plugin (registered in ``tests/conftest.py``, or ``-p tests.fixtures.smtp``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from grantkeeper.adapters.notify import SmtpEmailSender
from grantkeeper.adapters.notify.email import classify_smtp_failure
from grantkeeper.core.links import derive_link_key, verify_reconnect
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import ChannelSender, OutboxItem
from grantkeeper.testing import FrozenClock
from tests.fixtures.smtp import SMTP_PASSWORD, SMTP_USERNAME, SmtpServer

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

LINK_KEY = derive_link_key(b"test encryption key material 32b")
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
PUBLIC_URL = "https://gk.test"
CONNECTION_ID = "conn-1"
LINKED = (NotificationType.WARNING, NotificationType.DISCONNECTED)
URL_PATTERN = re.compile(r"https://gk\.test/connect/[^\s\"<>]+")

# What each email must say: what happened and what the user must (or need not) do.
EXPECTED_WORDS = {
    NotificationType.WARNING: ("trouble", "keep trying", "reconnect"),
    NotificationType.DISCONNECTED: ("disconnected", "paused", "Reconnect now"),
    NotificationType.RECOVERED: ("working again", "nothing"),
    NotificationType.RATE_LIMIT: ("rate limiting", "nothing", "retry automatically"),
}


def make_item(kind: NotificationType, **changes: object) -> OutboxItem:
    item = OutboxItem(
        outbox_id="ob-1",
        notification_id="n-1",
        channel="email",
        attempts=0,
        tenant_id="t-1",
        connection_id=CONNECTION_ID,
        user_id="u-1",
        email="user@example.com",
        provider="Xero",
        type=kind,
        title="title",
        message="message",
        metadata={},
        created_at=NOW,
    )
    return replace(item, **changes)  # type: ignore[arg-type]


def make_sender(server: SmtpServer | None = None, *, port: int = 0, **changes: object) -> SmtpEmailSender:
    settings: dict[str, object] = {
        "host": "127.0.0.1",
        "port": server.port if server else port,
        "security": "none",
        "email_from": "Grantkeeper <alerts@grantkeeper.test>",
        "public_url": PUBLIC_URL,
        "link_key": LINK_KEY,
        "clock": FrozenClock(NOW),
        "connect_timeout": timedelta(seconds=5),
        "command_timeout": timedelta(seconds=5),
    }
    settings.update(changes)
    return SmtpEmailSender(**settings)  # type: ignore[arg-type]


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


def test_sender_is_a_channel_sender():
    sender: ChannelSender = make_sender(port=25)
    assert sender.channel == "email"


@pytest.mark.parametrize("kind", list(NotificationType))
async def test_each_type_arrives_with_subject_both_parts_and_provider(
    smtp_server: SmtpServer, kind: NotificationType
):
    result = await make_sender(smtp_server).send(make_item(kind))

    assert result.is_delivered, result.error
    [message] = smtp_server.mailbox.messages
    [envelope] = smtp_server.mailbox.envelopes
    assert envelope.rcpt_tos == ["user@example.com"]
    assert message["To"] == "user@example.com"
    assert "Xero" in message["Subject"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    for body in (text, html):
        assert "Xero" in body
        for words in EXPECTED_WORDS[kind]:
            assert words.lower() in body.lower(), (kind, words)
    assert parsedate_to_datetime(message["Date"]) == NOW


@pytest.mark.parametrize("kind", LINKED)
async def test_warning_and_disconnected_carry_a_signed_link_for_that_connection(
    smtp_server: SmtpServer, kind: NotificationType
):
    await make_sender(smtp_server).send(make_item(kind))

    text, html = parts(smtp_server.mailbox.messages[0])
    [url] = set(URL_PATTERN.findall(text))
    assert url in html
    parsed = urlsplit(url)
    assert parsed.path == f"/connect/{CONNECTION_ID}"
    [token] = parse_qs(parsed.query)["token"]
    assert verify_reconnect(token, CONNECTION_ID, NOW, LINK_KEY)
    assert not verify_reconnect(token, "conn-2", NOW, LINK_KEY)
    assert verify_reconnect(token, CONNECTION_ID, NOW + timedelta(days=7) - timedelta(seconds=1), LINK_KEY)
    assert not verify_reconnect(token, CONNECTION_ID, NOW + timedelta(days=7), LINK_KEY)


@pytest.mark.parametrize("kind", [NotificationType.RECOVERED, NotificationType.RATE_LIMIT])
async def test_informational_emails_carry_no_link(smtp_server: SmtpServer, kind: NotificationType):
    await make_sender(smtp_server).send(make_item(kind))

    text, html = parts(smtp_server.mailbox.messages[0])
    assert "/connect/" not in text
    assert "/connect/" not in html


async def test_message_id_is_stable_across_resends_of_one_item(smtp_server: SmtpServer):
    sender = make_sender(smtp_server)
    item = make_item(NotificationType.DISCONNECTED)
    await sender.send(item)
    await sender.send(replace(item, attempts=1, lease_owner="other-worker"))
    await sender.send(make_item(NotificationType.DISCONNECTED, outbox_id="ob-2", notification_id="n-2"))

    first, resend, other = (m["Message-ID"] for m in smtp_server.mailbox.messages)
    assert first == resend
    assert first != other
    assert re.fullmatch(r"<[\w.]+@grantkeeper\.test>", first)


async def test_provider_name_is_escaped_in_html_and_kept_on_one_subject_line(smtp_server: SmtpServer):
    provider = "<b>Acme & Co</b>\r\nBcc: victim@example.com"
    await make_sender(smtp_server).send(make_item(NotificationType.WARNING, provider=provider))

    [message] = smtp_server.mailbox.messages
    text, html = parts(message)
    assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in html
    assert "<b>Acme" not in html
    assert "<b>Acme & Co</b>" in text
    assert message["Bcc"] is None
    assert "\n" not in str(message["Subject"])


async def test_item_without_email_is_a_permanent_failure_without_connecting(closed_port: int):
    result = await make_sender(port=closed_port).send(make_item(NotificationType.WARNING, email=None))
    assert (result.is_delivered, result.error, result.is_permanent) == (False, "no email address", True)


async def test_unusable_address_is_a_permanent_failure(closed_port: int):
    item = make_item(NotificationType.WARNING, email="user@example.com\r\nBcc: x@example.com")
    result = await make_sender(port=closed_port).send(item)
    assert not result.is_delivered
    assert result.is_permanent


async def test_server_down_is_retryable(closed_port: int, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    result = await make_sender(port=closed_port).send(make_item(NotificationType.DISCONNECTED))

    assert not result.is_delivered
    assert not result.is_permanent
    assert result.error is not None
    assert "token" not in result.error
    assert "/connect/" not in caplog.text


async def test_recipient_refused_with_5xx_is_permanent(smtp_server: SmtpServer):
    result = await make_sender(smtp_server).send(make_item(NotificationType.WARNING, email="reject@x.test"))
    assert (result.is_delivered, result.is_permanent) == (False, True)
    assert result.error == "recipient refused (550)"
    assert smtp_server.mailbox.envelopes == []


async def test_recipient_refused_with_4xx_is_retryable(smtp_server: SmtpServer):
    result = await make_sender(smtp_server).send(make_item(NotificationType.WARNING, email="later@x.test"))
    assert (result.is_delivered, result.is_permanent) == (False, False)
    assert result.error == "recipient refused (451)"


async def test_auth_with_username_and_password_over_loopback(smtp_auth_server: SmtpServer):
    sender = make_sender(smtp_auth_server, username=SMTP_USERNAME, password=SMTP_PASSWORD)
    result = await sender.send(make_item(NotificationType.RECOVERED))
    assert result.is_delivered, result.error
    assert len(smtp_auth_server.mailbox.messages) == 1


async def test_wrong_password_is_retryable_and_never_echoed(
    smtp_auth_server: SmtpServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-password-123"
    sender = make_sender(smtp_auth_server, username=SMTP_USERNAME, password=wrong)
    result = await sender.send(make_item(NotificationType.DISCONNECTED))

    assert (result.is_delivered, result.is_permanent) == (False, False)
    assert result.error is not None
    assert result.error.startswith("SMTP authentication failed")
    assert wrong not in result.error
    assert wrong not in caplog.text
    assert wrong not in repr(sender)
    assert smtp_auth_server.mailbox.envelopes == []


async def test_no_auth_against_a_server_that_requires_it_is_retryable(smtp_auth_server: SmtpServer):
    result = await make_sender(smtp_auth_server).send(make_item(NotificationType.WARNING))
    assert (result.is_delivered, result.is_permanent) == (False, False)


async def test_starttls_with_a_self_signed_certificate(smtp_starttls_server: SmtpServer):
    sender = make_sender(
        smtp_starttls_server, security="starttls", tls_context=smtp_starttls_server.client_tls_context
    )
    result = await sender.send(make_item(NotificationType.DISCONNECTED))
    assert result.is_delivered, result.error
    assert len(smtp_starttls_server.mailbox.messages) == 1


async def test_starttls_refuses_an_untrusted_certificate_as_retryable(smtp_starttls_server: SmtpServer):
    result = await make_sender(smtp_starttls_server, security="starttls").send(
        make_item(NotificationType.WARNING)
    )
    assert (result.is_delivered, result.is_permanent) == (False, False)
    assert smtp_starttls_server.mailbox.envelopes == []


async def test_plain_session_against_a_starttls_only_server_is_retryable(smtp_starttls_server: SmtpServer):
    result = await make_sender(smtp_starttls_server).send(make_item(NotificationType.WARNING))
    assert (result.is_delivered, result.is_permanent) == (False, False)
    assert smtp_starttls_server.mailbox.envelopes == []


async def test_implicit_tls_with_a_self_signed_certificate(smtp_tls_server: SmtpServer):
    sender = make_sender(smtp_tls_server, security="tls", tls_context=smtp_tls_server.client_tls_context)
    result = await sender.send(make_item(NotificationType.WARNING))
    assert result.is_delivered, result.error
    assert len(smtp_tls_server.mailbox.messages) == 1


def test_timeouts_map_to_retryable():
    import aiosmtplib

    for exc in (aiosmtplib.SMTPReadTimeoutError("slow"), TimeoutError(), ConnectionResetError()):
        result = classify_smtp_failure(exc)
        assert (result.is_delivered, result.is_permanent) == (False, False)


def test_message_refused_with_5xx_is_permanent_and_4xx_retryable():
    import aiosmtplib

    assert classify_smtp_failure(aiosmtplib.SMTPDataError(554, "spam")).is_permanent
    assert not classify_smtp_failure(aiosmtplib.SMTPDataError(452, "full")).is_permanent
    assert not classify_smtp_failure(aiosmtplib.SMTPSenderRefused(550, "no", "a@b")).is_permanent


def test_constructor_refuses_half_credentials_and_unknown_security():
    with pytest.raises(ValueError, match="together"):
        make_sender(port=25, username="u")
    with pytest.raises(ValueError, match="security"):
        make_sender(port=25, security="ssl")
