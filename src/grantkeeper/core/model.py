"""The domain's values: connection state, refresh outcomes, tokens and the effects a transition asks for.

Everything here is a frozen dataclass or a StrEnum so the policy can be a pure function of values,
hypothesis can generate and shrink them, and no token ever shows up in a ``repr`` (token fields are
``repr=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from grantkeeper.core.quick_init import quick_init


class ConnectionStatus(StrEnum):
    CONNECTED = "connected"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"
    REVOKED = "revoked"


class OutcomeClass(StrEnum):
    """The five classes of one refresh attempt (DESIGN section 2)."""

    SUCCESS = "success"
    AUTH = "auth"
    REAUTH_REQUIRED = "reauth_required"
    TRANSIENT = "transient"
    CONFIG = "config"


class NotificationType(StrEnum):
    WARNING = "integration_warning"
    DISCONNECTED = "integration_disconnected"
    RATE_LIMIT = "integration_rate_limit"
    RECOVERED = "integration_recovered"


class DisconnectReason(StrEnum):
    """Why a connection needs reauthorization. ``LOST_ROTATION`` is ours, not the user's: an attempt's
    rotated refresh token never reached the database (a worker died in flight), so our grant is dead."""

    AUTH_FAILURES = "auth_failures"
    REAUTH_REQUIRED = "reauth_required"
    LOST_ROTATION = "lost_rotation"


class NetworkFault(StrEnum):
    """Failures below HTTP: the request never produced a response we could read."""

    CONNECT_TIMEOUT = "connect_timeout"
    READ_TIMEOUT = "read_timeout"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_REFUSED = "connection_refused"
    DNS_FAILURE = "dns_failure"
    TLS_ERROR = "tls_error"
    PROTOCOL_ERROR = "protocol_error"


@quick_init
@dataclass(frozen=True)
class TokenSet:
    """What a successful refresh hands back (RFC 6749 section 5.1).

    ``refresh_token`` is None when the provider did not rotate; the caller then keeps the stored one.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    scope: str | None = None
    #: The provider account the grant belongs to, read from the answer at the provider's ``account_field``
    #: (``core.accounts``); only a code exchange asks for it.
    account_id: str | None = None


@quick_init
@dataclass(frozen=True)
class ErrorInfo:
    """A short, token-free description of why an attempt failed, kept as ``last_error``."""

    code: str
    description: str = ""


@quick_init
@dataclass(frozen=True)
class Outcome:
    """One refresh attempt, classified. ``tokens`` is set exactly when ``klass`` is SUCCESS."""

    klass: OutcomeClass
    http_status: int | None = None
    error: ErrorInfo | None = None
    retry_after: timedelta | None = None
    tokens: TokenSet | None = None


@quick_init
@dataclass(frozen=True)
class ConnectionState:
    """The policy-relevant state of one connection (DESIGN section 2 fields plus the once-per-streak marks).

    ``failing_since`` is when the current failure streak began; it decides staleness. ``warning_sent`` and
    ``rate_limit_notice_sent`` make each notification fire at most once per streak, even when thresholds are
    configured so that a counter passes them more than once. ``in_flight_since`` is set when an earlier
    attempt was sent and its answer never recorded (its worker died): the provider may have rotated the
    refresh token we hold, so the next definite answer decides what happened (DESIGN section 3).
    """

    status: ConnectionStatus = ConnectionStatus.CONNECTED
    consecutive_failures: int = 0
    consecutive_transient_failures: int = 0
    last_refreshed_at: datetime | None = None
    last_failure_at: datetime | None = None
    failing_since: datetime | None = None
    last_error: ErrorInfo | None = None
    disconnect_reason: DisconnectReason | None = None
    expires_at: datetime | None = None
    next_attempt_at: datetime | None = None
    warning_sent: bool = False
    rate_limit_notice_sent: bool = False
    in_flight_since: datetime | None = None


# Effects: what a transition asks the shell to do, as values.


@quick_init
@dataclass(frozen=True)
class Notify:
    """Emit a user notification; ``email`` says whether it is also sent by email (DESIGN section 2 table)."""

    type: NotificationType
    email: bool


@dataclass(frozen=True)
class PauseWorkflows:
    reason: DisconnectReason


@dataclass(frozen=True)
class ResumeWorkflows:
    pass


@dataclass(frozen=True)
class FlagProvider:
    """Our client credentials look wrong: an operator problem, never the user's (config class)."""

    error: ErrorInfo


@dataclass(frozen=True)
class RetryProviderNow:
    """The provider answers again after transient trouble: up to ``limit`` other connections of this provider
    that are backing off from transient failures are due now, not at the end of their (possibly hour-long)
    backoff; those whose retry lies furthest ahead first.

    Backoff protects a provider while it is down; once one refresh proves it is up, waiting out every other
    connection's backoff would only leave users with expired tokens. But waking them all in one statement
    took 25 s on SQLite and 114 s on PostgreSQL with a million backed off, inside a worker's commit (ADR 27).
    So each recovery wakes a few, and the woken ones' own recoveries wake more: the catch-up grows
    geometrically while the provider keeps answering and stops when it fails again (a slow start). The
    furthest retries go first because they have failed longest and so wake others in turn; the nearest come
    due by themselves. The provider's rate limit, if set, spreads the catch-up further.
    """

    limit: int


Effect = Notify | PauseWorkflows | ResumeWorkflows | FlagProvider | RetryProviderNow


@quick_init
@dataclass(frozen=True)
class Transition:
    state: ConnectionState
    effects: tuple[Effect, ...] = ()
    is_stale: bool = False

    @property
    def notifications(self) -> tuple[Notify, ...]:
        return tuple(e for e in self.effects if isinstance(e, Notify))
