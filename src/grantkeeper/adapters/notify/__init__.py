"""Notification channels (DESIGN section 2, issue 4); each one is a ``ports.ChannelSender``."""

from __future__ import annotations

from grantkeeper.adapters.notify.chat import DiscordSender, SlackSender
from grantkeeper.adapters.notify.email import DigestEmailSender, SmtpEmailSender
from grantkeeper.adapters.notify.webhook import StandardWebhookSender

__all__ = [
    "DigestEmailSender",
    "DiscordSender",
    "SlackSender",
    "SmtpEmailSender",
    "StandardWebhookSender",
]
