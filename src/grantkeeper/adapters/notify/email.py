"""The email channel: renders a notification and hands it to an SMTP relay (RFC 5321) with aiosmtplib.

Failures come back as ``DeliveryResult`` values so the outbox decides about retries: anything that may heal
by itself or by an operator fixing the relay settings (refused connection, timeout, 4xx replies, a refused
login) is retryable; a 5xx refusal of the recipient or of the message is permanent, since resending the same
message to the same address will not change the answer (RFC 5321 section 4.2.1). Error strings and log lines
carry reply codes and exception class names only, never the reconnect link, a token or the password.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import timedelta
from email.message import EmailMessage
from typing import Literal

import aiosmtplib

from grantkeeper.adapters.notify.email_message import (
    LINKED_TYPES,
    DigestEntry,
    ReconnectLink,
    build_digest_message,
    build_message,
)
from grantkeeper.core.links import reconnect_url, sign_reconnect
from grantkeeper.ports import Clock, DeliveryResult, OutboxItem

logger = logging.getLogger(__name__)

SmtpSecurity = Literal["none", "starttls", "tls"]
DEFAULT_LINK_TTL = timedelta(days=7)


class SmtpEmailSender:
    """``ChannelSender`` for ``email``: one SMTP session per message, which suits a low-volume outbox."""

    channel = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: SmtpSecurity,
        email_from: str,
        public_url: str,
        link_key: bytes,
        clock: Clock,
        username: str | None = None,
        password: str | None = None,
        link_ttl: timedelta = DEFAULT_LINK_TTL,
        connect_timeout: timedelta = timedelta(seconds=10),
        command_timeout: timedelta = timedelta(seconds=30),
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context`` replaces the system trust store, for a relay with a private CA (and tests)."""
        if security not in ("none", "starttls", "tls"):
            raise ValueError("security must be one of none, starttls, tls")
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        if not link_key:
            raise ValueError("link key must not be empty")
        self._host = host
        self._port = port
        self._security = security
        self._email_from = email_from
        self._public_url = public_url
        self._link_key = link_key
        self._clock = clock
        self._username = username
        self._password = password
        self._link_ttl = link_ttl
        self._connect_timeout = connect_timeout.total_seconds()
        self._command_timeout = command_timeout.total_seconds()
        self._tls_context = tls_context
        self._ehlo_name: str | None = None

    def __repr__(self) -> str:
        return f"SmtpEmailSender(host={self._host!r}, port={self._port}, security={self._security!r})"

    async def send(self, item: OutboxItem) -> DeliveryResult:
        """Render and send ``item``; never raises for anything the relay or the network does."""
        if not item.email:
            return DeliveryResult(False, "no email address", is_permanent=True)
        if not _is_plausible_address(item.email):
            return DeliveryResult(False, "invalid email address", is_permanent=True)
        if item.type is None:
            return DeliveryResult(False, "not a user notification", is_permanent=True)
        now = self._clock.now()
        message = build_message(item, email_from=self._email_from, sent_at=now, link=self._link(item))
        try:
            await self._deliver(message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            result = classify_smtp_failure(exc)
            logger.warning(
                "email delivery failed: %s",
                result.error,
                extra={"action": "notify.email.failed", "outbox_id": item.outbox_id},
            )
            return result
        logger.info(
            "email delivered",
            extra={"action": "notify.email.sent", "outbox_id": item.outbox_id, "type": str(item.type)},
        )
        return DeliveryResult(True)

    async def send_digest(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        """One email listing a recipient's warnings of the day (the ``email_digest`` rows of one address)."""
        if not items:
            return DeliveryResult(False, "empty digest", is_permanent=True)
        to = items[0].email
        if not to or not _is_plausible_address(to):
            return DeliveryResult(False, "invalid email address", is_permanent=True)
        entries = [DigestEntry(item.provider, item.created_at, self._link(item)) for item in items]
        message = build_digest_message(
            entries,
            to=to,
            email_from=self._email_from,
            sent_at=self._clock.now(),
            idempotency_keys=[item.idempotency_key for item in items],
        )
        try:
            await self._deliver(message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            result = classify_smtp_failure(exc)
            logger.warning(
                "digest email delivery failed: %s",
                result.error,
                extra={"action": "notify.digest.failed", "outbox_id": items[0].outbox_id},
            )
            return result
        logger.info(
            "digest email delivered",
            extra={"action": "notify.digest.sent", "outbox_id": items[0].outbox_id, "entries": len(items)},
        )
        return DeliveryResult(True)

    def _link(self, item: OutboxItem) -> ReconnectLink | None:
        if item.type not in LINKED_TYPES or item.connection_id is None:
            return None
        expires_at = self._clock.now() + self._link_ttl
        token = sign_reconnect(item.connection_id, expires_at, self._link_key)
        return ReconnectLink(reconnect_url(self._public_url, item.connection_id, token), expires_at)

    async def _local_hostname(self) -> str:
        """The EHLO name, looked up once: aiosmtplib would otherwise run ``socket.getfqdn`` in the shared
        thread pool for every message, which the dispatcher also uses for its database calls."""
        if self._ehlo_name is None:
            self._ehlo_name = await asyncio.to_thread(socket.getfqdn)
        return self._ehlo_name

    async def _deliver(self, message: EmailMessage) -> None:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            timeout=self._command_timeout,
            tls_context=self._tls_context,
            local_hostname=await self._local_hostname(),
        )
        await client.connect(timeout=self._connect_timeout)
        try:
            await client.send_message(message, timeout=self._command_timeout)
        finally:
            await _quit_quietly(client)


def _is_plausible_address(address: str) -> bool:
    # Enough to keep a stored address from breaking the To header; the relay judges the rest (RCPT).
    return "@" in address and not any(char.isspace() or not char.isprintable() for char in address)


async def _quit_quietly(client: aiosmtplib.SMTP) -> None:
    # The message is accepted (or refused) by now; a failing QUIT must not turn that into another outcome.
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


def classify_smtp_failure(exc: BaseException) -> DeliveryResult:
    """Map an aiosmtplib or socket failure to a result; only 5xx recipient or message refusals are final."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        return _reply("recipient refused", max(codes, default=0), permanent_5xx=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return _reply("recipient refused", exc.code, permanent_5xx=True)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return _reply("message refused", exc.code, permanent_5xx=True)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return _reply("SMTP authentication failed", exc.code, permanent_5xx=False)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return _reply("sender refused", exc.code, permanent_5xx=False)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _reply("SMTP server refused", exc.code, permanent_5xx=False)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return DeliveryResult(False, "SMTP server does not support a required extension")
    if isinstance(exc, TimeoutError):
        return DeliveryResult(False, f"SMTP timeout ({type(exc).__name__})")
    return DeliveryResult(False, f"SMTP connection failed ({type(exc).__name__})")


def _reply(what: str, code: int, *, permanent_5xx: bool) -> DeliveryResult:
    is_permanent = permanent_5xx and 500 <= code < 600
    return DeliveryResult(False, f"{what} ({code})", is_permanent=is_permanent)


class DigestEmailSender:
    """``DigestSender`` for ``email_digest`` rows, over the same relay and settings as the email channel."""

    channel = "email_digest"

    def __init__(self, email: SmtpEmailSender) -> None:
        self._email = email

    def __repr__(self) -> str:
        return f"DigestEmailSender({self._email!r})"

    async def send_digest(self, items: Sequence[OutboxItem]) -> DeliveryResult:
        return await self._email.send_digest(items)
