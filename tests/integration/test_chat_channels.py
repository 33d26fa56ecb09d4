"""The Slack and Discord channels against a real HTTP receiver on 127.0.0.1: what arrives, what failures mean.

Needs the ``tests.fixtures.receivers`` plugin (registered in ``tests/conftest.py``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from grantkeeper.adapters.notify.chat import DiscordSender, SlackSender
from grantkeeper.core.links import derive_link_key, verify_reconnect
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import ChannelSender, DeliveryResult, OutboxItem
from grantkeeper.testing import FrozenClock
from tests.fixtures.receivers import HttpReceiver

LINK_KEY = derive_link_key(b"test encryption key material 32b")
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
PUBLIC_URL = "https://gk.test"
CONNECTION_ID = "conn-1"
# The incoming-webhook path is the credential: it must never show up in an error or a log line.
SECRET_PATH = "/services/T0001/B0002/xoxSecretWebhookPath42"
SECRET_MARK = "xoxSecretWebhookPath42"

ChatSender = SlackSender | DiscordSender


def make_item(channel: str, url: str, **changes: object) -> OutboxItem:
    item = OutboxItem(
        outbox_id="ob-1",
        notification_id="n-1",
        channel=channel,
        attempts=0,
        tenant_id="t-1",
        connection_id=CONNECTION_ID,
        user_id="u-42",
        email=None,
        provider="Xero",
        type=NotificationType.DISCONNECTED,
        title="Xero disconnected",
        message="Xero no longer accepts our access. Workflows that use it are paused.",
        metadata={},
        created_at=NOW,
        destination_id="d-1",
        destination_url=url,
        destination_user_id="u-42",
    )
    return replace(item, **changes)  # type: ignore[arg-type]


def make_sender(kind: type[ChatSender], **changes: object) -> ChatSender:
    settings: dict[str, object] = {
        "public_url": PUBLIC_URL,
        "link_key": LINK_KEY,
        "clock": FrozenClock(NOW),
        "connect_timeout": timedelta(seconds=2),
        "total_timeout": timedelta(seconds=2),
    }
    settings.update(changes)
    return kind(**settings)  # type: ignore[arg-type]


@pytest.fixture(params=[SlackSender, DiscordSender], ids=["slack", "discord"])
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[ChatSender]:
    chat = make_sender(request.param, total_timeout=timedelta(seconds=0.5))
    yield chat
    await chat.close()


@pytest.fixture
async def slack() -> AsyncIterator[SlackSender]:
    chat = make_sender(SlackSender)
    assert isinstance(chat, SlackSender)
    yield chat
    await chat.close()


@pytest.fixture
async def discord() -> AsyncIterator[DiscordSender]:
    chat = make_sender(DiscordSender)
    assert isinstance(chat, DiscordSender)
    yield chat
    await chat.close()


def assert_link_is_signed_for_the_connection(url: str) -> None:
    parsed = urlsplit(url)
    assert f"{parsed.scheme}://{parsed.netloc}" == PUBLIC_URL
    assert parsed.path == f"/connect/{CONNECTION_ID}"
    [token] = parse_qs(parsed.query)["token"]
    assert verify_reconnect(token, CONNECTION_ID, NOW, LINK_KEY)
    assert not verify_reconnect(token, "conn-2", NOW, LINK_KEY)
    assert not verify_reconnect(token, CONNECTION_ID, NOW + timedelta(days=7), LINK_KEY)


def test_senders_are_channel_senders():
    senders: list[ChannelSender] = [make_sender(SlackSender), make_sender(DiscordSender)]
    assert [s.channel for s in senders] == ["slack", "discord"]


async def test_slack_per_user_message_arrives_with_a_signed_reconnect_button(
    http_receiver: HttpReceiver, slack: SlackSender
):
    result = await slack.send(make_item("slack", http_receiver.url(SECRET_PATH)))

    assert result == DeliveryResult(True)
    [received] = http_receiver.requests
    assert (received.method, received.path) == ("POST", SECRET_PATH)
    assert received.headers["content-type"] == "application/json"
    message = received.json()
    assert message["text"] == "Xero disconnected"
    assert message["blocks"][0]["type"] == "header"
    assert "Workflows that use it are paused." in message["blocks"][1]["text"]["text"]
    [actions] = [block for block in message["blocks"] if block["type"] == "actions"]
    [button] = actions["elements"]
    assert button["text"]["text"] == "Reconnect now"
    assert_link_is_signed_for_the_connection(button["url"])


async def test_slack_tenant_wide_message_names_the_user_without_a_link(
    http_receiver: HttpReceiver, slack: SlackSender
):
    item = make_item("slack", http_receiver.url(SECRET_PATH), destination_user_id=None)
    result = await slack.send(item)

    assert result.is_delivered
    [received] = http_receiver.requests
    assert b"/connect/" not in received.body
    assert b"token=" not in received.body
    message = received.json()
    assert all(block["type"] != "actions" for block in message["blocks"])
    assert "User u-42 must reconnect Xero" in message["blocks"][1]["text"]["text"]


async def test_discord_per_user_message_arrives_with_a_signed_link_and_red_embed(
    http_receiver: HttpReceiver, discord: DiscordSender
):
    http_receiver.respond_with(204)  # what Discord answers without ?wait=true
    result = await discord.send(make_item("discord", http_receiver.url(SECRET_PATH)))

    assert result.is_delivered, result.error
    message = http_receiver.requests[0].json()
    assert message["content"] == ""
    assert message["allowed_mentions"] == {"parse": []}
    [embed] = message["embeds"]
    assert embed["title"] == "Xero disconnected"
    assert embed["color"] == 0xD93F0B
    assert_link_is_signed_for_the_connection(embed["url"])
    assert f"[Reconnect now]({embed['url']})" in embed["description"]


async def test_discord_tenant_wide_message_names_the_user_without_a_link(
    http_receiver: HttpReceiver, discord: DiscordSender
):
    item = make_item("discord", http_receiver.url(SECRET_PATH), destination_user_id=None)
    result = await discord.send(item)

    assert result.is_delivered
    body = http_receiver.requests[0].body
    assert b"/connect/" not in body
    [embed] = http_receiver.requests[0].json()["embeds"]
    assert "url" not in embed
    assert "User u-42 must reconnect Xero" in embed["description"]


async def test_recovered_message_carries_no_link_even_per_user(
    http_receiver: HttpReceiver, slack: SlackSender
):
    item = make_item("slack", http_receiver.url(SECRET_PATH), type=NotificationType.RECOVERED)
    assert (await slack.send(item)).is_delivered
    assert b"/connect/" not in http_receiver.requests[0].body


@pytest.mark.parametrize(
    ("status", "is_permanent"),
    [
        (500, False),
        (503, False),
        (408, False),
        (429, False),
        (400, True),
        (403, True),
        (404, True),
        (410, True),
    ],
)
async def test_http_status_classification(
    http_receiver: HttpReceiver, sender: ChatSender, status: int, is_permanent: bool
):
    http_receiver.respond_with(status, "channel_is_archived", headers={"Retry-After": "2"})
    result = await sender.send(make_item(sender.channel, http_receiver.url(SECRET_PATH)))

    retry_after = None if is_permanent else timedelta(seconds=2)  # honoured only when a retry follows
    assert result == DeliveryResult(
        False, f"HTTP {status}", is_permanent=is_permanent, retry_after=retry_after
    )
    assert len(http_receiver.requests) == 1


async def test_redirect_is_not_followed_and_is_permanent(http_receiver: HttpReceiver, sender: ChatSender):
    http_receiver.respond_with(302, headers={"Location": http_receiver.url("/elsewhere")}, times=1)
    result = await sender.send(make_item(sender.channel, http_receiver.url(SECRET_PATH)))

    assert result == DeliveryResult(False, "HTTP 302", is_permanent=True)
    assert [r.path for r in http_receiver.requests] == [SECRET_PATH]


async def test_refused_connection_is_retryable(refused_url: str, sender: ChatSender):
    result = await sender.send(make_item(sender.channel, refused_url))
    assert result == DeliveryResult(False, "ClientConnectorError", is_permanent=False)


async def test_receiver_hanging_past_the_timeout_is_retryable(
    http_receiver: HttpReceiver, sender: ChatSender
):
    http_receiver.respond_with(200, delay=5)
    result = await sender.send(make_item(sender.channel, http_receiver.url(SECRET_PATH)))
    assert result == DeliveryResult(False, "timeout", is_permanent=False)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/hook", "file:///etc/passwd", "not a url", "https:///x"])
async def test_non_http_destination_is_refused_without_connecting(sender: ChatSender, url: str):
    result = await sender.send(make_item(sender.channel, url))
    assert result == DeliveryResult(False, "unsupported destination URL", is_permanent=True)


async def test_row_without_destination_is_a_permanent_failure(sender: ChatSender):
    result = await sender.send(make_item(sender.channel, "", destination_url=None))
    assert result == DeliveryResult(False, "missing destination", is_permanent=True)


async def test_sender_recovers_after_close(http_receiver: HttpReceiver, sender: ChatSender):
    item = make_item(sender.channel, http_receiver.url(SECRET_PATH))
    assert (await sender.send(item)).is_delivered
    await sender.close()
    assert (await sender.send(item)).is_delivered
    assert len(http_receiver.requests) == 2


async def test_webhook_url_never_appears_in_errors_or_logs(
    http_receiver: HttpReceiver, refused_url: str, sender: ChatSender, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    http_receiver.respond_with(500, f"echo {SECRET_PATH}", times=1)
    http_receiver.respond_with(404, "no_service", times=1)
    http_receiver.respond_with(200, delay=5, times=1)
    urls = [http_receiver.url(SECRET_PATH)] * 4 + [refused_url, "ftp://127.0.0.1" + SECRET_PATH]
    results = [await sender.send(make_item(sender.channel, url)) for url in urls]

    assert [r.is_delivered for r in results] == [False, False, False, True, False, False]
    refused_path = urlsplit(refused_url).path
    for result in results:
        assert SECRET_MARK not in str(result.error)
        assert refused_path not in str(result.error)
        assert len(str(result.error)) <= 40
    assert caplog.records, "deliveries are logged"
    assert SECRET_MARK not in caplog.text
    assert refused_path not in caplog.text
    assert "/connect/" not in caplog.text
    assert SECRET_MARK not in repr(sender)
