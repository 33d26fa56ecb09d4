"""Notification channels (DESIGN section 2, issue 4); each one is a ``ports.ChannelSender``."""

from __future__ import annotations

from grantkeeper.adapters.notify.email import SmtpEmailSender

__all__ = ["SmtpEmailSender"]
