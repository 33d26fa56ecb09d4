"""What each notification says. Pure text from values, so every channel shows the same words.

Messages name the provider and what happens next; they never carry a token or an error body, only the short
code the classifier kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from grantkeeper.core.model import ErrorInfo, NotificationType


@dataclass(frozen=True)
class NoticeText:
    title: str
    message: str


def render_notice(
    kind: NotificationType,
    provider: str,
    *,
    error: ErrorInfo | None = None,
    reconnect_url: str | None = None,
) -> NoticeText:
    """Title and message for one notification (DESIGN section 2's table; wording from the origin write-up)."""
    reason = f" (last error: {error.code})" if error is not None else ""
    reconnect = f" Reconnect: {reconnect_url}" if reconnect_url else " Reconnect it to resume them."
    if kind is NotificationType.WARNING:
        return NoticeText(
            f"Trouble connecting to {provider}",
            f"We're having trouble refreshing your {provider} connection{reason}. "
            "We'll keep trying; if it keeps failing you will need to reconnect.",
        )
    if kind is NotificationType.DISCONNECTED:
        return NoticeText(
            f"{provider} disconnected",
            f"{provider} no longer accepts our access{reason}. Workflows that use it are paused.{reconnect}",
        )
    if kind is NotificationType.RATE_LIMIT:
        return NoticeText(
            f"{provider} is temporarily unavailable",
            f"{provider} is rate limiting or failing our requests{reason}. "
            "Nothing to do on your side: we retry automatically.",
        )
    return NoticeText(
        f"{provider} connection recovered",
        f"Your {provider} connection is working again. No action needed.",
    )
