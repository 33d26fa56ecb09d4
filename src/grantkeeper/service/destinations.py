"""Slack, Discord and webhook destinations and users' notification preferences: the use cases the CLI and the
HTTP API share (issue 4).

Each validates its input completely before touching the store, so bad input changes nothing, and says what is
wrong in an ``InvalidInputError`` that never shows a destination URL's path: a Slack or Discord incoming
webhook's path is its credential. A destination of another kind than the caller manages (a Slack channel
named under ``webhooks``) is an ``UnknownDestinationError``, as if it did not exist.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum, StrEnum
from typing import Literal

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.routing import DestinationKind, Preferences, WarningEmail
from grantkeeper.core.urls import validate_destination_url
from grantkeeper.ports import (
    ConnectionStore,
    DeliveryAttemptRecord,
    DestinationRecord,
    UnknownDestinationError,
    UserPreferences,
)

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
MAX_URL_LENGTH = 2000
MAX_USER_ID_LENGTH = 255
MAX_EMAIL_LENGTH = 320
#: One "@" between two non-empty parts, no whitespace or control characters: enough to catch a typo, without
#: refusing addresses a stricter grammar would (the SMTP server is the judge).
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"
_EMAIL = re.compile(EMAIL_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ChatKind(StrEnum):
    """The destinations ``channels`` manages: chat incoming webhooks."""

    SLACK = "slack"
    DISCORD = "discord"


WEBHOOK_KINDS = frozenset({DestinationKind.WEBHOOK})
CHAT_KINDS = frozenset({DestinationKind.SLACK, DestinationKind.DISCORD})


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and the base64 of 24 random bytes (192 bits)."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def check_user_id(user_id: str) -> None:
    if not user_id.strip() or len(user_id) > MAX_USER_ID_LENGTH or _CONTROL.search(user_id):
        raise InvalidInputError(
            f"user id must be 1 to {MAX_USER_ID_LENGTH} characters, not blank, without control characters"
        )


def check_destination_url(url: str, kind: DestinationKind) -> None:
    """HTTPS only, except plain http to loopback; the message shows scheme and host, never the path."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInputError(f"{kind.value} URL must be at most {MAX_URL_LENGTH} characters")
    try:
        validate_destination_url(url, field=f"{kind.value} URL")
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def add_webhook(
    store: ConnectionStore, tenant_id: str, url: str, now: datetime
) -> tuple[DestinationRecord, str]:
    """Register an application endpoint; returns it with its signing secret, which is never shown again."""
    check_destination_url(url, DestinationKind.WEBHOOK)
    secret = new_webhook_secret()
    record = store.add_destination(tenant_id, DestinationKind.WEBHOOK, url, now, secret=secret)
    return record, secret


def add_chat_channel(
    store: ConnectionStore,
    tenant_id: str,
    kind: ChatKind | DestinationKind | str,
    url: str,
    user_id: str | None,
    now: datetime,
) -> DestinationRecord:
    """Register a Slack or Discord incoming webhook: one user's, or tenant-wide when ``user_id`` is None."""
    if str(kind) not in {k.value for k in CHAT_KINDS}:
        raise InvalidInputError("channel kind must be slack or discord")
    destination_kind = DestinationKind(str(kind))
    check_destination_url(url, destination_kind)
    if user_id is not None:
        check_user_id(user_id)
    return store.add_destination(tenant_id, destination_kind, url, now, user_id=user_id)


def list_destinations(
    store: ConnectionStore, tenant_id: str, kinds: frozenset[DestinationKind]
) -> list[DestinationRecord]:
    return [d for d in store.list_destinations(tenant_id) if d.kind in kinds]


def find_destination(
    store: ConnectionStore, tenant_id: str, destination_id: str, kinds: frozenset[DestinationKind]
) -> DestinationRecord:
    """The tenant's destination of one of ``kinds``; any other id is unknown, as if it did not exist."""
    for destination in list_destinations(store, tenant_id, kinds):
        if destination.destination_id == destination_id:
            return destination
    raise UnknownDestinationError(destination_id)


def remove_destination(
    store: ConnectionStore, tenant_id: str, destination_id: str, kinds: frozenset[DestinationKind]
) -> None:
    """Delete it with its pending deliveries and their attempt log."""
    find_destination(store, tenant_id, destination_id, kinds)
    if not store.remove_destination(tenant_id, destination_id):
        raise UnknownDestinationError(destination_id)


def enable_destination(
    store: ConnectionStore, tenant_id: str, destination_id: str, kinds: frozenset[DestinationKind]
) -> DestinationRecord:
    """Turn a destination disabled by failures back on, with a clean failure count."""
    find_destination(store, tenant_id, destination_id, kinds)
    return store.enable_destination(tenant_id, destination_id)


def list_deliveries(
    store: ConnectionStore,
    tenant_id: str,
    limit: int,
    *,
    destination_id: str | None = None,
    channel: str | None = None,
) -> list[DeliveryAttemptRecord]:
    """Delivery attempts, newest first; a ``destination_id`` the tenant does not have is an error, not []."""
    if destination_id is not None:
        find_destination(store, tenant_id, destination_id, WEBHOOK_KINDS | CHAT_KINDS)
    return store.list_deliveries(tenant_id, limit, destination_id=destination_id, channel=channel)


class Keep(Enum):
    """Leave the stored value as it is (``None`` means: clear it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class PreferenceChange:
    """A partial update: None (or ``KEEP`` for the address) leaves the stored value alone."""

    email: bool | None = None
    slack: bool | None = None
    discord: bool | None = None
    warning_email: WarningEmail | None = None
    email_address: str | Literal[Keep.KEEP] | None = KEEP

    @property
    def is_empty(self) -> bool:
        switches = (self.email, self.slack, self.discord, self.warning_email)
        return all(value is None for value in switches) and self.email_address is KEEP


def check_email_address(address: str) -> None:
    if len(address) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(address):
        raise InvalidInputError(
            f"email address must look like name@example.com (at most {MAX_EMAIL_LENGTH} characters)"
        )


def get_preferences(store: ConnectionStore, tenant_id: str, user_id: str) -> UserPreferences:
    check_user_id(user_id)
    return store.get_preferences(tenant_id, user_id)


def update_preferences(
    store: ConnectionStore, tenant_id: str, user_id: str, change: PreferenceChange, now: datetime
) -> UserPreferences:
    """Merge ``change`` into what is stored (or the defaults), so setting one switch keeps the others."""
    check_user_id(user_id)
    if isinstance(change.email_address, str):
        check_email_address(change.email_address)
    current = store.get_preferences(tenant_id, user_id)
    if change.is_empty:
        return current
    old = current.preferences
    preferences = Preferences(
        email=old.email if change.email is None else change.email,
        slack=old.slack if change.slack is None else change.slack,
        discord=old.discord if change.discord is None else change.discord,
        warning_email=change.warning_email or old.warning_email,
    )
    address = current.email_address if change.email_address is KEEP else change.email_address
    merged = replace(current, email_address=address, preferences=preferences)
    return store.set_preferences(tenant_id, merged, now)
