"""Notification delivery (issue 4): the outbox items channels send, what a send came to, and the
channel ports. ``ChannelSender`` and ``DigestSender`` are Protocols that the email, Slack, Discord and webhook
adapters in ``adapters.notify`` implement; ``OutboxItem``, ``DeliveryResult``, ``DestinationRecord``,
``UserPreferences`` and ``DeliveryAttemptRecord`` are the values that pass between those channels, the
dispatcher in the service layer and the store's outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from grantkeeper.core.model import NotificationType
from grantkeeper.core.routing import DestinationKind, Preferences


@dataclass(frozen=True)
class OutboxItem:
    """One outbox row leased for delivery, with everything a channel needs to render and send it.

    A row is one notification (or one webhook event) for one destination. ``idempotency_key`` is the row's id,
    so it is stable across retries: a resend after a crash carries the same key, and a receiver that dedupes
    (Standard Webhooks' ``webhook-id``, an email's ``Message-ID``) sees the event once.

    ``notification_id`` and ``type`` are None for webhook events that no user notification stands behind
    (``workflow.paused``, ``workflow.resumed``, ``provider.config_error``). ``event`` and ``payload`` are set
    for webhook rows: the payload was rendered when the event happened, so every resend has the same body.
    ``destination_url`` and ``destination_secret`` are decrypted for this delivery only and never logged;
    ``destination_user_id`` is None for a tenant-wide destination.
    """

    outbox_id: str
    notification_id: str | None
    channel: str
    attempts: int
    tenant_id: str
    connection_id: str | None
    user_id: str | None
    email: str | None
    provider: str
    type: NotificationType | None
    title: str
    message: str
    metadata: dict[str, Any]
    created_at: datetime
    lease_owner: str = ""
    destination_id: str | None = None
    destination_url: str | None = field(default=None, repr=False)
    destination_secret: str | None = field(default=None, repr=False)
    destination_user_id: str | None = None
    event: str | None = None
    payload: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        return self.outbox_id


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt did. ``is_permanent`` failures are not retried (a bad address, a 4xx);
    ``retry_after`` is the receiver's own ``Retry-After``, which the retry schedule waits for at least."""

    is_delivered: bool
    error: str | None = None
    is_permanent: bool = False
    retry_after: timedelta | None = None


class ChannelSender(Protocol):
    """Delivers outbox items of one channel (``email``, ``slack``, ``discord``, ``webhook``)."""

    channel: str

    async def send(self, item: OutboxItem) -> DeliveryResult: ...


class DigestSender(Protocol):
    """Delivers one recipient's daily digest: several outbox rows, one message."""

    channel: str

    async def send_digest(self, items: Sequence[OutboxItem]) -> DeliveryResult: ...


@dataclass(frozen=True)
class DestinationRecord:
    """A Slack or Discord incoming webhook or an app webhook endpoint, as listings show it.

    No URL path (a chat webhook's path is its credential), no secret. ``status`` turns ``disabled`` after too
    many failures in a row; ``last_error`` says the latest.
    """

    destination_id: str
    tenant_id: str
    kind: DestinationKind
    user_id: str | None
    url_hint: str
    status: str
    consecutive_failures: int
    last_error: str | None
    disabled_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class UserPreferences:
    """A user's notification preferences and fallback address; ``updated_at`` None means never set."""

    user_id: str
    email_address: str | None = None
    preferences: Preferences = field(default_factory=Preferences)
    updated_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryAttemptRecord:
    """One attempt to deliver an outbox row; ``error`` is a short reason, never a message body or a token."""

    outbox_id: str
    channel: str
    attempted_at: datetime
    is_delivered: bool
    error: str | None
    duration: timedelta
    destination_id: str | None = None
    notification_id: str | None = None
    event: str | None = None
