"""The email channel is built from settings: off without SMTP configuration, and when configured it sends
through the relay with links verifiable by the key derived from the first encryption key."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from pydantic import SecretStr

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.bootstrap import build_email_sender
from grantkeeper.config import Settings
from grantkeeper.core.links import derive_link_key, verify_reconnect
from grantkeeper.core.model import NotificationType
from grantkeeper.testing import FrozenClock
from tests.integration.test_email_channel import make_item


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_no_smtp_host_or_sender_means_no_email_channel():
    keys = SecretStr(generate_key_line("k1"))
    assert build_email_sender(settings(encryption_keys=keys), FrozenClock()) is None
    assert build_email_sender(settings(encryption_keys=keys, smtp_host="127.0.0.1"), FrozenClock()) is None


async def test_configured_channel_delivers_with_links_signed_by_the_derived_key(smtp_server):
    key_line = generate_key_line("k1")
    configured = settings(
        encryption_keys=SecretStr(f"{key_line},{generate_key_line('k0')}"),
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        email_from="grantkeeper@example.test",
        public_url="https://app.example.test",
    )
    clock = FrozenClock()
    sender = build_email_sender(configured, clock)
    assert sender is not None
    result = await sender.send(make_item(NotificationType.DISCONNECTED))
    assert result.is_delivered, result.error
    (message,) = smtp_server.mailbox.messages
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = next(word for word in text.split() if word.startswith("https://app.example.test/connect/"))
    parts = urlsplit(link)
    connection_id = parts.path.rsplit("/", 1)[-1]
    token = parse_qs(parts.query)["token"][0]
    assert verify_reconnect(token, connection_id, clock.now(), derive_link_key(key_line.encode()))
