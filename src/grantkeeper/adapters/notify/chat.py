"""The Slack and Discord channels: a notification rendered as an incoming-webhook message and POSTed.

A destination is either one user's (``destination_user_id`` set) or tenant-wide: a team channel the operator
connected, which every user's notifications reach. The signed reconnect link goes only to a per-user
destination. The link lets whoever holds it reconnect the account without logging in, so in a shared channel
any teammate could bind their own account to the user's connection (and the user's workflows would then act
as them). A tenant-wide message names the user and says they must reconnect; the user gets the link through
their own channels (email, in-app, a per-user chat destination).

The incoming-webhook URL is the credential for the channel: it never appears in an error string or a log line
(``http_post`` reports status codes and exception class names only).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from grantkeeper.adapters.notify.email import DEFAULT_LINK_TTL
from grantkeeper.adapters.notify.email_message import LINKED_TYPES, ReconnectLink
from grantkeeper.adapters.notify.http_post import DEFAULT_CONNECT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT, HttpPoster
from grantkeeper.core.links import reconnect_url, sign_reconnect
from grantkeeper.core.model import NotificationType
from grantkeeper.ports import Clock, DeliveryResult, OutboxItem

logger = logging.getLogger(__name__)

USER_AGENT = "grantkeeper-notify"
RECONNECT_LABEL = "Reconnect now"
# Slack: header text up to 150 characters, section text up to 3,000 (Block Kit reference).
_SLACK_HEADER_MAX = 150
_SLACK_SECTION_MAX = 3000
# Discord: embed title up to 256 characters, description up to 4,096 (Discord API, "Embed Limits").
_DISCORD_TITLE_MAX = 256
_DISCORD_DESCRIPTION_MAX = 4096
DISCORD_COLORS = {
    NotificationType.DISCONNECTED: 0xD93F0B,  # red
    NotificationType.WARNING: 0xF2A900,  # amber
    NotificationType.RATE_LIMIT: 0x95A5A6,  # grey
    NotificationType.RECOVERED: 0x2EB67D,  # green
}
_DEFAULT_COLOR = 0x95A5A6


def shown_link(item: OutboxItem, link: ReconnectLink | None) -> ReconnectLink | None:
    """``link`` for a linked type at a per-user destination, else None (see the module docstring)."""
    is_shown = item.destination_user_id is not None and item.type in LINKED_TYPES
    return link if is_shown else None


def team_note(item: OutboxItem) -> str | None:
    """For a tenant-wide channel: whose connection it is and, when they must act, that they must reconnect."""
    if item.destination_user_id is not None:
        return None
    user = item.user_id or "unknown user"
    only_theirs = "Reconnect links go only to the user, never to a shared channel."
    if item.type is NotificationType.DISCONNECTED:
        return f"User {user} must reconnect {item.provider}. {only_theirs}"
    if item.type is NotificationType.WARNING:
        return f"User {user} may soon need to reconnect {item.provider}. {only_theirs}"
    return f"User: {user}"


def slack_message(item: OutboxItem, link: ReconnectLink | None) -> dict[str, Any]:
    """A Slack incoming-webhook payload: a header, the message, and a "Reconnect now" button when linked.

    ``text`` is the notification fallback (mobile pushes, screen readers). Text that passes through mrkdwn
    has ``&``, ``<`` and ``>`` escaped, so a provider name cannot smuggle in a link or a mention.
    """
    body = item.message
    note = team_note(item)
    if note is not None:
        body = f"{body}\n\n{note}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(item.title, _SLACK_HEADER_MAX)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut_escaped(body, _SLACK_SECTION_MAX)}},
    ]
    link = shown_link(item, link)
    if link is not None:
        button = {
            "type": "button",
            "action_id": "reconnect",
            "text": {"type": "plain_text", "text": RECONNECT_LABEL},
            "url": link.url,
            "style": "danger" if item.type is NotificationType.DISCONNECTED else "primary",
        }
        blocks.append({"type": "actions", "elements": [button]})
    return {"text": slack_escape(item.title), "blocks": blocks}


def discord_message(item: OutboxItem, link: ReconnectLink | None) -> dict[str, Any]:
    """A Discord webhook payload: one embed coloured by type; the title links to the reconnect page if any.

    ``allowed_mentions`` with an empty ``parse`` list keeps an ``@everyone`` in a provider name from pinging.
    """
    link = shown_link(item, link)
    note = team_note(item)
    suffix = ""
    if link is not None:
        suffix = f"\n\n[{RECONNECT_LABEL}]({link.url})"
    elif note is not None:
        suffix = f"\n\n{note}"
    description = _cut(item.message, _DISCORD_DESCRIPTION_MAX - len(suffix)) + suffix
    embed: dict[str, Any] = {
        "title": _cut(item.title, _DISCORD_TITLE_MAX),
        "description": description,
        "color": _DEFAULT_COLOR if item.type is None else DISCORD_COLORS[item.type],
    }
    if link is not None:
        embed["url"] = link.url
    return {"content": "", "embeds": [embed], "allowed_mentions": {"parse": []}}


def slack_escape(text: str) -> str:
    """Slack's three control characters, escaped as its "Formatting text" reference asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _cut_escaped(text: str, limit: int) -> str:
    """Escape, then cut to ``limit`` without leaving half an entity (``&am``) at the end."""
    escaped = slack_escape(text)
    if len(escaped) <= limit:
        return escaped
    kept = escaped[: limit - 1]
    amp = kept.rfind("&")
    if amp != -1 and ";" not in kept[amp:]:
        kept = kept[:amp]
    return kept + "…"


class _ChatSender:
    """POSTs one rendered message to the destination's incoming-webhook URL; subclasses choose the format."""

    channel = ""

    def __init__(
        self,
        *,
        public_url: str,
        link_key: bytes,
        clock: Clock,
        link_ttl: timedelta = DEFAULT_LINK_TTL,
        connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT,
        total_timeout: timedelta = DEFAULT_TOTAL_TIMEOUT,
    ) -> None:
        if not link_key:
            raise ValueError("link key must not be empty")
        self._public_url = public_url
        self._link_key = link_key
        self._clock = clock
        self._link_ttl = link_ttl
        self._poster = HttpPoster(
            user_agent=USER_AGENT, connect_timeout=connect_timeout, total_timeout=total_timeout
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public_url={self._public_url!r})"

    async def close(self) -> None:
        await self._poster.close()

    def render(self, item: OutboxItem, link: ReconnectLink | None) -> dict[str, Any]:
        raise NotImplementedError

    async def send(self, item: OutboxItem) -> DeliveryResult:
        """Render and POST ``item``; never raises for anything the receiver or the network does."""
        if not item.destination_url:
            return DeliveryResult(False, "missing destination", is_permanent=True)
        body = json.dumps(self.render(item, self._link(item)), ensure_ascii=False).encode("utf-8")
        headers = {"content-type": "application/json"}
        result = await self._poster.post(item.destination_url, body, headers)
        extra = {"action": f"notify.{self.channel}.sent", "outbox_id": item.outbox_id}
        if result.is_delivered:
            logger.info("%s message delivered", self.channel, extra=extra)
        else:
            extra["action"] = f"notify.{self.channel}.failed"
            logger.warning("%s delivery failed: %s", self.channel, result.error, extra=extra)
        return result

    def _link(self, item: OutboxItem) -> ReconnectLink | None:
        """A fresh signed link, only for linked types sent to the user's own destination."""
        if item.type not in LINKED_TYPES or item.connection_id is None or item.destination_user_id is None:
            return None
        expires_at = self._clock.now() + self._link_ttl
        token = sign_reconnect(item.connection_id, expires_at, self._link_key)
        return ReconnectLink(reconnect_url(self._public_url, item.connection_id, token), expires_at)


class SlackSender(_ChatSender):
    """``ChannelSender`` for ``slack``: Slack incoming webhooks with Block Kit messages."""

    channel = "slack"

    def render(self, item: OutboxItem, link: ReconnectLink | None) -> dict[str, Any]:
        return slack_message(item, link)


class DiscordSender(_ChatSender):
    """``ChannelSender`` for ``discord``: Discord webhooks with one embed.

    Discord answers 429 with ``Retry-After`` when a webhook is rate limited; that is retryable, and the
    outbox's own backoff (half a minute and up) already outlasts Discord's windows (seconds).
    """

    channel = "discord"

    def render(self, item: OutboxItem, link: ReconnectLink | None) -> dict[str, Any]:
        return discord_message(item, link)
