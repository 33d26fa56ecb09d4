"""The webhook channel: events POSTed to the application, signed per the Standard Webhooks specification.

The row's payload was rendered when the event happened; it is serialized here deterministically (sorted keys,
compact separators, UTF-8), so every resend of one row carries the same bytes and the same ``webhook-id``
(the outbox id) and a receiver that dedupes on ``webhook-id`` sees the event once. Only ``webhook-timestamp``
and ``webhook-signature`` change between resends: the signature covers ``id.timestamp.body`` and receivers
refuse timestamps older than a few minutes, so a resend must be signed afresh.

The signing secret never reaches an error string or a log line; neither does the destination URL.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, timedelta
from typing import Any

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from grantkeeper.adapters.notify.http_post import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, HttpPoster
from grantkeeper.ports import Clock, DeliveryResult, OutboxItem

logger = logging.getLogger(__name__)

USER_AGENT = "grantkeeper-webhooks"


def webhook_body(payload: dict[str, Any]) -> bytes:
    """The one serialization of ``payload`` that every resend uses."""
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


class StandardWebhookSender:
    """``ChannelSender`` for ``webhook``: one signed POST per outbox row.

    ``clock`` stamps ``webhook-timestamp``; pass the system clock in production, since receivers compare it
    with their own time.
    """

    channel = "webhook"

    def __init__(
        self,
        *,
        clock: Clock,
        connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT,
        total_timeout: timedelta = DEFAULT_TOTAL_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._poster = HttpPoster(
            user_agent=USER_AGENT, connect_timeout=connect_timeout, total_timeout=total_timeout
        )

    def __repr__(self) -> str:
        return "StandardWebhookSender()"

    async def close(self) -> None:
        await self._poster.close()

    async def send(self, item: OutboxItem) -> DeliveryResult:
        """Sign and POST the row's payload; never raises for anything the receiver or the network does."""
        if not (item.destination_url and item.destination_secret and item.payload is not None):
            return DeliveryResult(False, "missing destination", is_permanent=True)
        try:
            body = webhook_body(item.payload)
        except (TypeError, ValueError):
            return DeliveryResult(False, "payload is not serializable", is_permanent=True)
        headers = self._signed_headers(item.idempotency_key, item.destination_secret, body)
        if headers is None:
            return DeliveryResult(False, "invalid webhook secret", is_permanent=True)
        result = await self._poster.post(item.destination_url, body, headers)
        self._log(item, result)
        return result

    def _signed_headers(self, msg_id: str, secret: str, body: bytes) -> dict[str, str] | None:
        """The Standard Webhooks headers for ``body`` sent now, or None when the secret is unusable."""
        sent_at = self._clock.now().astimezone(UTC)  # the library reads the instant as UTC
        try:
            signer = Webhook(secret)
        except (EmptyWebhookSecretError, ValueError):  # ValueError: the base64 does not decode
            return None
        signature = signer.sign(msg_id, sent_at, body.decode("utf-8"))
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(math.floor(sent_at.timestamp())),
            "webhook-signature": signature,
        }

    @staticmethod
    def _log(item: OutboxItem, result: DeliveryResult) -> None:
        extra = {"action": "notify.webhook.sent", "outbox_id": item.outbox_id, "event": item.event}
        if result.is_delivered:
            logger.info("webhook delivered", extra=extra)
        else:
            extra["action"] = "notify.webhook.failed"
            logger.warning("webhook delivery failed: %s", result.error, extra=extra)
