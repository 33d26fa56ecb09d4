"""Writing the outbox rows of a state change: one per event and destination, in the change's transaction.

The pure router (``core.routing``) decides where each notification and event goes; this module only reads what
it needs (the tenant's destinations, the user's preferences) and writes the rows. Being in the same
transaction as the state change is what makes delivery reliable: the change and the promise to tell people
about it commit together or not at all (the transactional outbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from grantkeeper.adapters.db import destinations as destination_rows
from grantkeeper.adapters.db.tables import new_id, outbox
from grantkeeper.core.model import NotificationType
from grantkeeper.core.routing import (
    EVENT_FOR_NOTIFICATION,
    ChannelKind,
    Destination,
    EventType,
    Preferences,
    Route,
    digest_due_at,
    event_payload,
    route_event,
    route_notification,
)
from grantkeeper.ports import UserPreferences

DEFAULT_DIGEST_HOUR = 9


@dataclass(frozen=True)
class NotificationFanout:
    """One user notification just written, and what the policy asked for it."""

    notification_id: str
    type: NotificationType
    wants_email: bool
    data: dict[str, Any]  # the webhook event's data: ids, provider, title, message (never a token)


@dataclass
class Fanout:
    """Collects the rows of one transaction and writes them in one INSERT; ``flush`` is called last."""

    connection: Connection
    tenant_id: str
    at: datetime
    digest_hour: int = DEFAULT_DIGEST_HOUR
    #: destinations already read in this transaction, by tenant (shared by a batch of commits)
    known: dict[str, tuple[Destination, ...]] = field(default_factory=dict)
    #: users' preferences already read in this transaction, by (tenant, user)
    preferences: dict[tuple[str, str], UserPreferences] = field(default_factory=dict)
    _rows: list[dict[str, Any]] = field(default_factory=list)

    def destinations(self) -> tuple[Destination, ...]:
        found = self.known.get(self.tenant_id)
        if found is None:
            found = destination_rows.routing_destinations(self.connection, self.tenant_id)
            self.known[self.tenant_id] = found
        return found

    def notification(self, notice: NotificationFanout, *, user_id: str | None, email: str | None) -> None:
        """Rows for one notification: email per preferences, chat mirrors, and the webhook event."""
        prefs = self._preferences_of(user_id) if user_id else None
        preferences = prefs.preferences if prefs is not None else Preferences()
        address = email or (prefs.email_address if prefs is not None else None)
        routes = route_notification(
            notice.type,
            wants_email=notice.wants_email,
            has_address=bool(address),
            user_id=user_id,
            preferences=preferences,
            destinations=self.destinations(),
        )
        payload = event_payload(EVENT_FOR_NOTIFICATION[notice.type], self.at, notice.data)
        for route in routes:
            self._add(route, notification_id=notice.notification_id, recipient=address, payload=payload)

    def _preferences_of(self, user_id: str) -> UserPreferences:
        key = (self.tenant_id, user_id)
        found = self.preferences.get(key)
        if found is None:
            found = destination_rows.get_preferences(self.connection, self.tenant_id, user_id)
            self.preferences[key] = found
        return found

    def event(self, event: EventType, data: dict[str, Any]) -> None:
        """Rows for an event no user notification stands behind: one per enabled webhook endpoint."""
        routes = route_event(self.destinations())
        if routes:
            payload = event_payload(event, self.at, data)
            for route in routes:
                self._add(route, notification_id=None, recipient=None, payload=payload)

    def _add(
        self,
        route: Route,
        *,
        notification_id: str | None,
        recipient: str | None,
        payload: dict[str, Any],
    ) -> None:
        is_webhook = route.channel is ChannelKind.WEBHOOK
        is_email = route.channel in (ChannelKind.EMAIL, ChannelKind.EMAIL_DIGEST)
        due = (
            digest_due_at(self.at, self.digest_hour) if route.channel is ChannelKind.EMAIL_DIGEST else self.at
        )
        self._rows.append(
            {
                "id": new_id("obx"),
                "tenant_id": self.tenant_id,
                "notification_id": notification_id,
                "channel": route.channel.value,
                "destination_id": route.destination_id,
                "recipient": recipient if is_email else None,
                "event": payload["type"] if is_webhook else None,
                "payload": payload if is_webhook else None,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": due,
                "last_error": None,
                "created_at": self.at,
                "delivered_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
            }
        )

    def flush(self) -> int:
        rows = self.take_rows()
        if rows:
            self.connection.execute(insert(outbox), rows)
        return len(rows)

    def take_rows(self) -> list[dict[str, Any]]:
        """The rows collected so far, for a caller that writes several fan-outs' rows in one INSERT."""
        rows, self._rows = self._rows, []
        return rows
