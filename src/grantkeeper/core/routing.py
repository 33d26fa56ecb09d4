"""Who hears about what: the outbox rows a notification or a webhook event fans out to (issue 4).

Pure: the store looks up the tenant's destinations and the user's preferences in the state change's own
transaction, asks this module where each event goes, and writes one outbox row per answer. Keeping the rules
here makes them checkable without a database and keeps every channel consistent.

The rules:
- Email follows DESIGN section 2's table (``Notify.email``) and the user's preferences: nothing when the user
  turned email off; a warning goes out immediately, into the daily digest, or not at all; the disconnection
  email always goes (unless email is off), because it is the one message that asks the user to act.
- Slack and Discord mirror the in-app feed. A per-user destination gets that user's notifications, unless the
  user turned that channel off; a tenant-wide destination (a team channel the operator set up) gets every
  user's, and only the operator can turn it off.
- Webhooks to the application get every event; they are the app's own integration, not a person's inbox.
- A disabled destination gets nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum

from grantkeeper.core.model import NotificationType


class ChannelKind(StrEnum):
    """The outbox ``channel`` column: which sender delivers the row."""

    EMAIL = "email"
    EMAIL_DIGEST = "email_digest"
    SLACK = "slack"
    DISCORD = "discord"
    WEBHOOK = "webhook"


class DestinationKind(StrEnum):
    SLACK = "slack"
    DISCORD = "discord"
    WEBHOOK = "webhook"


class WarningEmail(StrEnum):
    IMMEDIATE = "immediate"
    DIGEST = "digest"
    NEVER = "never"


class EventType(StrEnum):
    """Webhook event types (issue 4), named ``noun.past_participle`` as Svix and Stripe name theirs."""

    CONNECTION_WARNING = "connection.warning"
    CONNECTION_DISCONNECTED = "connection.disconnected"
    CONNECTION_RATE_LIMITED = "connection.rate_limited"
    CONNECTION_RECOVERED = "connection.recovered"
    WORKFLOW_PAUSED = "workflow.paused"
    WORKFLOW_RESUMED = "workflow.resumed"
    PROVIDER_CONFIG_ERROR = "provider.config_error"


EVENT_FOR_NOTIFICATION = {
    NotificationType.WARNING: EventType.CONNECTION_WARNING,
    NotificationType.DISCONNECTED: EventType.CONNECTION_DISCONNECTED,
    NotificationType.RATE_LIMIT: EventType.CONNECTION_RATE_LIMITED,
    NotificationType.RECOVERED: EventType.CONNECTION_RECOVERED,
}


@dataclass(frozen=True)
class Preferences:
    """One user's choices; the defaults are what a user who never chose gets."""

    email: bool = True
    slack: bool = True
    discord: bool = True
    warning_email: WarningEmail = WarningEmail.IMMEDIATE

    def allows(self, kind: DestinationKind) -> bool:
        if kind is DestinationKind.SLACK:
            return self.slack
        if kind is DestinationKind.DISCORD:
            return self.discord
        return True


@dataclass(frozen=True)
class Destination:
    """A Slack or Discord incoming webhook or an app webhook endpoint; ``user_id`` None means tenant-wide."""

    destination_id: str
    kind: DestinationKind
    user_id: str | None = None
    is_enabled: bool = True


@dataclass(frozen=True)
class Route:
    """One outbox row to write: the channel, and the destination for Slack, Discord and webhooks."""

    channel: ChannelKind
    destination_id: str | None = None


def route_notification(
    kind: NotificationType,
    *,
    wants_email: bool,
    has_address: bool,
    user_id: str | None,
    preferences: Preferences,
    destinations: tuple[Destination, ...],
) -> tuple[Route, ...]:
    """The rows one user notification fans out to (in-app is the notification row itself, not a route).

    ``wants_email`` is the policy's ``Notify.email`` (DESIGN section 2's email column).
    """
    routes: list[Route] = []
    email = _email_route(kind, wants_email=wants_email, has_address=has_address, preferences=preferences)
    if email is not None:
        routes.append(email)
    for destination in destinations:
        if not destination.is_enabled:
            continue
        if destination.kind is DestinationKind.WEBHOOK:
            routes.append(Route(ChannelKind.WEBHOOK, destination.destination_id))
        elif destination.user_id is None or (
            destination.user_id == user_id and preferences.allows(destination.kind)
        ):
            routes.append(Route(ChannelKind(destination.kind.value), destination.destination_id))
    return tuple(routes)


def _email_route(
    kind: NotificationType, *, wants_email: bool, has_address: bool, preferences: Preferences
) -> Route | None:
    if not (wants_email and has_address and preferences.email):
        return None
    if kind is not NotificationType.WARNING:
        return Route(ChannelKind.EMAIL)
    if preferences.warning_email is WarningEmail.IMMEDIATE:
        return Route(ChannelKind.EMAIL)
    if preferences.warning_email is WarningEmail.DIGEST:
        return Route(ChannelKind.EMAIL_DIGEST)
    return None


def route_event(destinations: tuple[Destination, ...]) -> tuple[Route, ...]:
    """The rows an event with no user behind it (workflow, provider) fans out to: every enabled webhook."""
    return tuple(
        Route(ChannelKind.WEBHOOK, d.destination_id)
        for d in destinations
        if d.is_enabled and d.kind is DestinationKind.WEBHOOK
    )


def digest_due_at(created_at: datetime, digest_hour: int) -> datetime:
    """The first ``digest_hour``:00 UTC after ``created_at``: every warning of one day waits for one email.

    All warnings made between two digest times share this value, which is what lets the dispatcher gather
    them into a single message per recipient.
    """
    if not 0 <= digest_hour <= 23:
        raise ValueError("digest_hour must be between 0 and 23")
    moment = created_at.astimezone(UTC)
    candidate = datetime.combine(moment.date(), time(digest_hour), tzinfo=UTC)
    return candidate if candidate > moment else candidate + timedelta(days=1)


def event_payload(event: EventType, occurred_at: datetime, data: dict[str, object]) -> dict[str, object]:
    """The webhook body, in the envelope the Standard Webhooks spec recommends (type, timestamp, data)."""
    return {"type": event.value, "timestamp": occurred_at.astimezone(UTC).isoformat(), "data": data}
