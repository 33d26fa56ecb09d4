"""The webhook channel against a real HTTP receiver on 127.0.0.1 that checks signatures with the Standard
Webhooks reference library, as an application would.

Needs the ``tests.fixtures.receivers`` plugin (registered in ``tests/conftest.py``).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from grantkeeper.adapters.notify.webhook import StandardWebhookSender, webhook_body
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import ChannelSender, DeliveryResult, OutboxItem
from grantkeeper.testing import FrozenClock
from tests.fixtures.receivers import HttpReceiver, ReceivedRequest

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode("ascii")
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret of thirty-two b!!").decode("ascii")
SECRET_PATH = "/hooks/grantkeeper-in-3f9a"
PAYLOAD: dict[str, Any] = {
    "type": "connection.disconnected",
    "timestamp": "2026-03-01T09:30:00+00:00",
    "data": {
        "connection_id": "conn-1",
        "user_id": "u-42",
        "provider": "Zoho Bücher",
        "reason": "auth_failures",
    },
}


def make_item(url: str | None, **changes: object) -> OutboxItem:
    item = OutboxItem(
        outbox_id="ob-7f3c",
        notification_id="n-1",
        channel="webhook",
        attempts=0,
        tenant_id="t-1",
        connection_id="conn-1",
        user_id="u-42",
        email=None,
        provider="Zoho Bücher",
        type=NotificationType.DISCONNECTED,
        title="Zoho Bücher disconnected",
        message="message",
        metadata={},
        created_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        destination_id="wh-1",
        destination_url=url,
        destination_secret=SECRET,
        event="connection.disconnected",
        payload=PAYLOAD,
    )
    return replace(item, **changes)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FrozenClock:
    # Receivers refuse timestamps more than five minutes from their own clock, so start at the real now.
    return FrozenClock(datetime.now(UTC))


@pytest.fixture
async def sender(clock: FrozenClock) -> AsyncIterator[StandardWebhookSender]:
    webhook = StandardWebhookSender(
        clock=clock, connect_timeout=timedelta(seconds=2), total_timeout=timedelta(seconds=0.5)
    )
    yield webhook
    await webhook.close()


def plain_headers(received: ReceivedRequest) -> dict[str, str]:
    return {key.lower(): value for key, value in received.headers.items()}


def test_sender_is_a_channel_sender(clock: FrozenClock):
    webhook: ChannelSender = StandardWebhookSender(clock=clock)
    assert webhook.channel == "webhook"


async def test_receiver_verifies_the_signature_with_the_reference_library(
    http_receiver: HttpReceiver, sender: StandardWebhookSender, clock: FrozenClock
):
    result = await sender.send(make_item(http_receiver.url(SECRET_PATH)))

    assert result == DeliveryResult(True)
    [received] = http_receiver.requests
    assert (received.method, received.path) == ("POST", SECRET_PATH)
    headers = plain_headers(received)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == "grantkeeper-webhooks"
    assert headers["webhook-id"] == "ob-7f3c"
    assert headers["webhook-timestamp"] == str(int(clock.now().timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(received.body, headers) == PAYLOAD


async def test_body_is_the_deterministic_utf8_serialization(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    await sender.send(make_item(http_receiver.url(SECRET_PATH)))

    body = http_receiver.requests[0].body
    assert body == webhook_body(PAYLOAD)
    assert body == json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert "Zoho Bücher".encode() in body


async def test_tampered_body_is_rejected_by_the_verifier(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    received = http_receiver.requests[0]
    headers = plain_headers(received)
    tampered = bytearray(received.body)
    index = tampered.index(b"auth_failures")
    tampered[index] = ord("A")

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(bytes(tampered), headers)


@pytest.mark.parametrize(
    ("header", "value"),
    [("webhook-id", "ob-other"), ("webhook-timestamp", "SHIFT"), ("webhook-signature", "v1,AAAA")],
)
async def test_tampered_headers_are_rejected_by_the_verifier(
    http_receiver: HttpReceiver, sender: StandardWebhookSender, header: str, value: str
):
    await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    received = http_receiver.requests[0]
    headers = plain_headers(received)
    headers[header] = str(int(headers[header]) - 1) if value == "SHIFT" else value

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(received.body, headers)


async def test_wrong_secret_is_rejected_by_the_verifier(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    received = http_receiver.requests[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(received.body, plain_headers(received))


async def test_resend_carries_the_same_id_and_body_and_a_fresh_signature(
    http_receiver: HttpReceiver, sender: StandardWebhookSender, clock: FrozenClock
):
    item = make_item(http_receiver.url(SECRET_PATH))
    await sender.send(item)
    clock.advance(timedelta(seconds=90))
    await sender.send(replace(item, attempts=1, lease_owner="other-worker"))

    first, resend = http_receiver.requests
    assert first.body == resend.body
    assert first.headers["webhook-id"] == resend.headers["webhook-id"] == "ob-7f3c"
    assert int(resend.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 90
    assert first.headers["webhook-signature"] != resend.headers["webhook-signature"]
    for received in (first, resend):
        assert Webhook(SECRET).verify(received.body, plain_headers(received)) == PAYLOAD


async def test_key_order_of_the_payload_does_not_change_the_bytes(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    reordered = dict(reversed(list(PAYLOAD.items())))
    await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    await sender.send(make_item(http_receiver.url(SECRET_PATH), payload=reordered))
    first, second = http_receiver.requests
    assert first.body == second.body


async def test_unpadded_secret_signs_like_the_library(http_receiver: HttpReceiver, clock: FrozenClock):
    secret = SECRET.rstrip("=")
    webhook = StandardWebhookSender(clock=clock)
    try:
        assert (await webhook.send(make_item(http_receiver.url(), destination_secret=secret))).is_delivered
    finally:
        await webhook.close()
    received = http_receiver.requests[0]
    Webhook(secret).verify(received.body, plain_headers(received))


@pytest.mark.parametrize("missing", ["destination_url", "destination_secret", "payload"])
async def test_row_without_destination_secret_or_payload_is_permanent(
    http_receiver: HttpReceiver, sender: StandardWebhookSender, missing: str
):
    item = make_item(http_receiver.url(SECRET_PATH), **{missing: None})
    result = await sender.send(item)
    assert result == DeliveryResult(False, "missing destination", is_permanent=True)
    assert http_receiver.requests == []


async def test_unusable_secret_is_permanent_and_not_echoed(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    bad = "whsec_!!!"
    result = await sender.send(make_item(http_receiver.url(SECRET_PATH), destination_secret=bad))
    assert result == DeliveryResult(False, "invalid webhook secret", is_permanent=True)
    assert http_receiver.requests == []


async def test_unserializable_payload_is_permanent(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    result = await sender.send(make_item(http_receiver.url(), payload={"ratio": float("nan")}))
    assert result == DeliveryResult(False, "payload is not serializable", is_permanent=True)
    assert http_receiver.requests == []


@pytest.mark.parametrize(
    ("status", "is_permanent"),
    [(500, False), (502, False), (429, False), (400, True), (404, True), (301, True)],
)
async def test_http_status_classification(
    http_receiver: HttpReceiver, sender: StandardWebhookSender, status: int, is_permanent: bool
):
    http_receiver.respond_with(status, "nope", headers={"Location": http_receiver.url("/moved")})
    result = await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    assert result == DeliveryResult(False, f"HTTP {status}", is_permanent=is_permanent)
    assert len(http_receiver.requests) == 1


async def test_refused_connection_is_retryable(refused_url: str, sender: StandardWebhookSender):
    result = await sender.send(make_item(refused_url))
    assert result == DeliveryResult(False, "ClientConnectorError", is_permanent=False)


async def test_receiver_hanging_past_the_timeout_is_retryable(
    http_receiver: HttpReceiver, sender: StandardWebhookSender
):
    http_receiver.respond_with(200, delay=5)
    result = await sender.send(make_item(http_receiver.url(SECRET_PATH)))
    assert result == DeliveryResult(False, "timeout", is_permanent=False)


async def test_secret_and_url_never_appear_in_errors_or_logs(
    http_receiver: HttpReceiver,
    refused_url: str,
    sender: StandardWebhookSender,
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    http_receiver.respond_with(500, f"echo {SECRET}", times=1)
    http_receiver.respond_with(403, "forbidden", times=1)
    http_receiver.respond_with(200, delay=5, times=1)
    items = [make_item(http_receiver.url(SECRET_PATH)) for _ in range(4)]
    items += [
        make_item(refused_url),
        make_item(http_receiver.url(SECRET_PATH), destination_secret="whsec_!!!"),
    ]
    results = [await sender.send(item) for item in items]

    assert [r.is_delivered for r in results] == [False, False, False, True, False, False]
    secret_key = SECRET.removeprefix("whsec_")
    for result in results:
        for leaked in (SECRET_PATH, secret_key, "refused-secret-path"):
            assert leaked not in str(result.error)
    assert caplog.records, "deliveries are logged"
    for leaked in (SECRET_PATH, secret_key, "refused-secret-path"):
        assert leaked not in caplog.text
    assert secret_key not in repr(sender)
    assert secret_key not in repr(items[0])
