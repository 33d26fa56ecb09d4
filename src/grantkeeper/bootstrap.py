"""Builds the concrete objects from settings. Nothing is built at import time; only entrypoints call this.

The notification channels (aiohttp, aiosmtplib, Jinja2, standardwebhooks) are imported where they are built:
most commands never send anything, and importing them took about a quarter of a second of each command's
start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, make_url
from sqlalchemy.exc import ArgumentError

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import ensure_schema
from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.config import Settings
from grantkeeper.core.errors import InvalidSettingError
from grantkeeper.core.links import derive_link_key
from grantkeeper.core.policy import Policy
from grantkeeper.core.return_urls import ReturnUrlAllowList
from grantkeeper.ports import ChannelSender, Clock, CodeExchanger
from grantkeeper.service.attempt import START_MARGIN, AttemptResult
from grantkeeper.service.connecting import ConnectFlow
from grantkeeper.service.cycle import RefreshService, default_owner
from grantkeeper.service.dispatch import Dispatcher

if TYPE_CHECKING:
    from grantkeeper.adapters.notify import SmtpEmailSender

_log = logging.getLogger("grantkeeper.worker")


def check_database_url(url: str) -> None:
    """Only SQLite and PostgreSQL are supported; say so before any driver import fails obscurely."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        backend = None
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise InvalidSettingError(
            "GRANTKEEPER_DATABASE_URL must be sqlite:///path/to/file.db or postgresql://user@host:port/db"
        )


def load_keyring(settings: Settings) -> Keyring | None:
    """The configured keyring, or None: commands that never touch tokens work without one."""
    if settings.encryption_keys is None or not settings.encryption_keys.get_secret_value().strip():
        return None
    return Keyring.parse(settings.encryption_keys.get_secret_value())


def build_email_sender(settings: Settings, clock: Clock) -> SmtpEmailSender | None:
    """The email channel, when SMTP is configured; links are signed with a key derived from the first
    encryption key, so no extra secret is needed (rotating that key also expires outstanding links)."""
    link_key = _link_key(settings)
    if not settings.smtp_host or not settings.email_from or link_key is None:
        return None
    from grantkeeper.adapters.notify import SmtpEmailSender

    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return SmtpEmailSender(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=password,
        email_from=settings.email_from,
        public_url=settings.public_url,
        link_key=link_key,
        clock=clock,
    )


def _link_key(settings: Settings) -> bytes | None:
    """The reconnect-link key, derived from the first encryption key; None without keys."""
    if settings.encryption_keys is None or not settings.encryption_keys.get_secret_value().strip():
        return None
    first_key = settings.encryption_keys.get_secret_value().split(",")[0].strip()
    return derive_link_key(first_key.encode("utf-8"))


def build_senders(settings: Settings, clock: Clock) -> dict[str, ChannelSender]:
    """Every channel the settings allow. Slack, Discord and webhook destinations live in the database, but
    sealing them needs the encryption keys, so without keys there can be none and no sender is built."""
    senders: dict[str, ChannelSender] = {}
    email = build_email_sender(settings, clock)
    if email is not None:
        senders[email.channel] = email
    link_key = _link_key(settings)
    if link_key is not None:
        from grantkeeper.adapters.notify import DiscordSender, SlackSender, StandardWebhookSender

        public_url = settings.public_url
        for sender in (
            SlackSender(public_url=public_url, link_key=link_key, clock=clock),
            DiscordSender(public_url=public_url, link_key=link_key, clock=clock),
            StandardWebhookSender(clock=clock),
        ):
            senders[sender.channel] = sender
    return senders


def attempt_budget(settings: Settings) -> timedelta:
    """How long a started attempt may take: the request's timeouts plus the margin for recording its start
    and its commit. It is the lease an attempt in flight holds (ADR 9), so a worker that dies mid-request
    leaves its connections for others this long after the start."""
    return timedelta(seconds=settings.connect_timeout_seconds + settings.read_timeout_seconds) + START_MARGIN


#: Okta's default rotation grace window, the shortest of the common ones (Xero 30 min, Auth0 configurable).
COMMON_GRACE_WINDOW = timedelta(seconds=30)


def longest_retry_after_death(settings: Settings, poll_interval_seconds: float | None = None) -> timedelta:
    """From a request's start to its retry by another worker when the sender died mid-request: the
    attempt's lease runs out, then an idle worker finds the row at its next poll at the latest (the
    settings' poll, or the one a command was given). A provider's rotation grace window (Okta 30 s by
    default) must be longer for the retry to lose nothing."""
    poll = settings.poll_interval_seconds if poll_interval_seconds is None else poll_interval_seconds
    return attempt_budget(settings) + timedelta(seconds=poll)


def warn_if_retries_miss_grace_windows(settings: Settings, interval: float) -> None:
    """Say at start-up (``worker``, and ``serve`` with its scheduler) when a dead worker's request would be
    retried too late for Okta's default rotation grace window: the timeouts and the poll decide it, and the
    user would otherwise learn it from lost rotations after a crash."""
    wait = longest_retry_after_death(settings, interval)
    if wait >= COMMON_GRACE_WINDOW:
        _log.warning(
            "a worker that dies mid-request has its connections retried up to %.0f s after the request "
            "(connect %g s + read %g s + %g s, then the %g s poll); a provider whose rotation grace window "
            "is shorter (Okta's default is %.0f s) refuses that retry if the lost request rotated the token, "
            "and the connection needs reconnecting (disconnect_reason lost_rotation). Lower "
            "GRANTKEEPER_READ_TIMEOUT_SECONDS, GRANTKEEPER_CONNECT_TIMEOUT_SECONDS or the poll interval to "
            "stay inside it",
            wait.total_seconds(),
            settings.connect_timeout_seconds,
            settings.read_timeout_seconds,
            START_MARGIN.total_seconds(),
            interval,
            COMMON_GRACE_WINDOW.total_seconds(),
            extra={"action": "retry_after_death_beyond_grace"},
        )


@dataclass
class Runtime:
    """The wired objects one command needs; ``close`` releases the database pool and HTTP sessions."""

    settings: Settings
    engine: Engine
    store: SqlStore
    clock: Clock
    policy: Policy

    def connect_flow(self, exchanger: CodeExchanger) -> ConnectFlow:
        """The browser side of connecting (``/connect``, ``/oauth/callback``), redeeming codes with
        ``exchanger`` (the API's HTTP client)."""
        return ConnectFlow(
            self.store,
            exchanger,
            self.clock,
            self.policy,
            public_url=self.settings.public_url,
            link_key=_link_key(self.settings),
            allow_list=return_url_allow_list(self.settings),
        )

    def token_endpoint(self, *, max_connections: int = 10) -> HttpTokenEndpoint:
        """The HTTP client for token, revocation and introspection endpoints, with the configured timeouts
        (the caller closes it)."""
        return HttpTokenEndpoint(
            self.clock,
            connect_timeout=self.settings.connect_timeout_seconds,
            read_timeout=self.settings.read_timeout_seconds,
            max_connections=max_connections,
        )

    def refresh_service(
        self,
        *,
        concurrency: int | None = None,
        policy: Policy | None = None,
        on_attempt: Callable[[AttemptResult], None] | None = None,
    ) -> tuple[RefreshService, HttpTokenEndpoint]:
        """A refresh service and its HTTP client (the caller closes the client)."""
        settings = self.settings
        endpoint = self.token_endpoint(max_connections=max(concurrency or settings.concurrency, 10))
        budget = attempt_budget(settings)
        service = RefreshService(
            self.store,
            endpoint,
            self.clock,
            policy or self.policy,
            concurrency=concurrency or settings.concurrency,
            max_attempt_duration=budget,
            lease_ttl=max(budget * 4, timedelta(minutes=2)),
            on_attempt=on_attempt,
        )
        return service, endpoint

    def dispatcher(self) -> Dispatcher | None:
        """The outbox dispatcher, or None when no channel is configured (rows then wait in the outbox).

        The caller closes it (``await dispatcher.close()``) to release the HTTP senders' sessions."""
        settings = self.settings
        senders = build_senders(settings, self.clock)
        if not senders:
            return None
        lease = settings.delivery_lease_seconds
        if settings.delivery_send_timeout_seconds * 2 > lease:
            raise InvalidSettingError(
                "GRANTKEEPER_DELIVERY_LEASE_SECONDS must be at least twice "
                "GRANTKEEPER_DELIVERY_SEND_TIMEOUT_SECONDS, so a send always ends before its lease"
            )
        from grantkeeper.adapters.notify import DigestEmailSender, SmtpEmailSender

        email = senders.get("email")
        digest = DigestEmailSender(email) if isinstance(email, SmtpEmailSender) else None
        return Dispatcher(
            self.store,
            senders,
            self.clock,
            owner=default_owner(),
            max_attempts=settings.delivery_max_attempts,
            base_delay=timedelta(seconds=settings.delivery_base_delay_seconds),
            max_delay=timedelta(
                seconds=max(settings.delivery_max_delay_seconds, settings.delivery_base_delay_seconds)
            ),
            lease_ttl=timedelta(seconds=lease),
            send_timeout=timedelta(seconds=settings.delivery_send_timeout_seconds),
            concurrency=settings.delivery_concurrency,
            digest_sender=digest,
            failure_limit=settings.destination_failure_limit,
        )

    def close(self) -> None:
        self.engine.dispose()


def return_url_allow_list(settings: Settings) -> ReturnUrlAllowList:
    try:
        return ReturnUrlAllowList.parse(settings.return_url_allowlist)
    except ValueError as exc:
        raise InvalidSettingError(f"GRANTKEEPER_RETURN_URL_ALLOWLIST: {exc}") from None


def build_runtime(
    settings: Settings,
    *,
    keyring: Keyring | None = None,
    clock: Clock | None = None,
    policy: Policy | None = None,
) -> Runtime:
    """Open (and migrate on first use) the configured database."""
    check_database_url(settings.database_url)
    return_url_allow_list(settings)  # a bad allow list stops every command at once, not the first callback
    engine = make_engine(settings.database_url)
    ensure_schema(engine)
    store = SqlStore(
        engine,
        keyring if keyring is not None else load_keyring(settings),
        digest_hour=settings.digest_hour,
    )
    return Runtime(settings, engine, store, clock or SystemClock(), policy or settings.policy())
