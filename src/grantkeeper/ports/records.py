"""The values that cross the store port: tenants, providers, connections, claims, attempts, notifications
and workflows, as frozen dataclasses and enums with no behaviour of their own. The service layer builds and
reads them and every ``ConnectionStore`` takes and returns them, so they belong to the port rather than to an
adapter; they depend on ``core`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    NotificationType,
    Outcome,
    OutcomeClass,
    TokenSet,
    Transition,
)
from grantkeeper.core.quick_init import quick_init


class AuthMethod(StrEnum):
    """Client authentication at the token endpoint (RFC 6749 section 2.3.1)."""

    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method name, not a secret)
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as the API and CLI show it: whether it has an API key, never the key or its hash."""

    tenant_id: str
    name: str
    has_api_key: bool
    created_at: datetime


@dataclass(frozen=True)
class ProviderConfig:
    provider_id: str
    tenant_id: str
    name: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC
    default_expires_in: int = 3600
    authorize_url: str | None = None
    revocation_url: str | None = None
    scopes: str | None = None
    introspection_url: str | None = None
    flagged_at: datetime | None = None
    flag_reason: str | None = None
    max_concurrency: int | None = None
    rate_limit_per_second: float | None = None
    #: extra query parameters for the authorization endpoint, e.g. {"access_type": "offline"}
    authorize_params: dict[str, str] | None = None
    #: where a code exchange's answer names the account (``core.accounts``), e.g. "id_token.sub"
    account_field: str | None = None
    #: the authorization server's issuer identifier; a callback must carry it as ``iss`` (RFC 9207)
    issuer: str | None = None


@dataclass(frozen=True)
class NewProvider:
    name: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC
    default_expires_in: int = 3600
    authorize_url: str | None = None
    revocation_url: str | None = None
    scopes: str | None = None
    #: RFC 7662: asked whether a stored refresh token still works before an in-doubt retry sends it
    introspection_url: str | None = None
    max_concurrency: int | None = None  # refresh requests in flight at once, across all workers
    rate_limit_per_second: float | None = None  # refresh requests started per second, across all workers
    authorize_params: dict[str, str] | None = None  # extra authorization endpoint parameters
    account_field: str | None = None  # where a code exchange's answer names the account (core.accounts)
    issuer: str | None = None  # the issuer identifier every callback must carry as ``iss`` (RFC 9207)


@dataclass(frozen=True)
class NewConnection:
    """One connection to create (from an import line or the API); validated before it gets here."""

    provider: str
    user_id: str
    refresh_token: str | None = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    email: str | None = None
    workflows: tuple[str, ...] = ()
    next_attempt_at: datetime | None = None  # None: due at once (the import's ``now``)
    account_id: str | None = None  # the provider account, when a connect flow learned it


@dataclass(frozen=True)
class ConnectionRecord:
    """A connection as listings show it: never a token."""

    connection_id: str
    tenant_id: str
    provider: str
    user_id: str
    email: str | None
    state: ConnectionState
    created_at: datetime
    updated_at: datetime
    #: The provider account the grant belongs to, once a connect flow learned it (``core.accounts``).
    account_id: str | None = None


class Secret(Protocol):
    """A stored secret that is decrypted where it is used, not where it is read.

    A claim of 1,000 rows would otherwise decrypt 1,000 refresh tokens inside the claim's transaction (on
    SQLite, while holding the only write lock) and keep them in memory in clear for the whole batch; each
    attempt opens its own as it starts instead. ``reveal`` raises ``UnreadableSecretError`` when no
    configured key opens it."""

    def reveal(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PlainSecret:
    """A secret already in clear (decrypted eagerly, or made by a test)."""

    value: str = field(repr=False)

    def reveal(self) -> str:
        return self.value


@quick_init
@dataclass(frozen=True)
class ClaimedConnection:
    """A connection leased to one worker for one refresh attempt, with its tokens.

    ``version`` fences the commit: it succeeds only while the row still carries this version and lease owner,
    or, once the attempt has started (``started_at``, set by the start gate), while nobody has started another
    attempt since (the row's ``in_flight_since`` is still ours), so an answer held through a database outage
    still lands if no other worker has sent a request in the meantime.
    ``access_token`` is None from ``claim_due``: a scheduled refresh never needs the old one; its refresh
    token is a ``Secret`` opened by the attempt (``refresh_token`` reveals it).
    """

    connection_id: str
    tenant_id: str
    user_id: str
    email: str | None
    provider: ProviderConfig
    state: ConnectionState
    refresh_secret: Secret | None = field(repr=False)
    access_token: str | None = field(repr=False)
    version: int
    lease_owner: str
    lease_expires_at: datetime
    started_at: datetime | None = None

    @property
    def refresh_token(self) -> str | None:
        """The refresh token in clear, decrypted on each read; raises ``UnreadableSecretError``."""
        return None if self.refresh_secret is None else self.refresh_secret.reveal()

    def started(self, lease_expires_at: datetime, started_at: datetime) -> ClaimedConnection:
        """This claim once its attempt is recorded in flight, with the attempt's lease.

        The same as ``dataclasses.replace``, which works the fields out again on every call: 4 µs against
        0.4 for a copy of the instance's dict, once per refresh on the store thread."""
        copy = object.__new__(ClaimedConnection)
        values = copy.__dict__
        values.update(self.__dict__)
        values["lease_expires_at"] = lease_expires_at
        values["started_at"] = started_at
        return copy


@quick_init
@dataclass(frozen=True)
class AttemptStarts:
    """The store's answer to "these attempts are about to start": which were marked in flight (their lease
    now ends at ``lease_expires_at``, the attempt's deadline), which leases were lost meanwhile, and how many
    seconds each of the others must wait for its provider's concurrency or rate limit."""

    started: frozenset[str]
    lost: frozenset[str]
    waits: dict[str, float]
    lease_expires_at: datetime
    started_at: datetime


@quick_init
@dataclass(frozen=True)
class AttemptRecord:
    connection_id: str
    attempted_at: datetime
    outcome: OutcomeClass
    http_status: int | None
    error_code: str | None
    duration: timedelta


@quick_init
@dataclass(frozen=True)
class NotificationContent:
    type: NotificationType
    title: str
    message: str
    metadata: dict[str, Any]
    channels: tuple[str, ...]  # outbox channels besides in-app, e.g. ("email",)


@dataclass(frozen=True)
class NotificationRecord:
    notification_id: str
    tenant_id: str
    connection_id: str | None
    user_id: str | None
    type: NotificationType
    title: str
    message: str
    is_read: bool
    created_at: datetime
    metadata: dict[str, Any]


class WorkflowStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


@dataclass(frozen=True)
class StoredTokens:
    """A connection's current tokens, decrypted: for token vending and checks, never for listings."""

    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime | None
    status: ConnectionStatus = ConnectionStatus.CONNECTED


@dataclass(frozen=True)
class OutboxRecord:
    """One pending or finished delivery of a notification to a channel other than in-app."""

    outbox_id: str
    notification_id: str
    channel: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class WorkflowRecord:
    """A workflow and the connections it depends on. ``paused_reason`` is a ``DisconnectReason`` value when a
    disconnection paused it; only those pauses are lifted automatically on reconnect."""

    workflow_id: str
    tenant_id: str
    name: str
    status: WorkflowStatus
    paused_reason: str | None
    connection_ids: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@quick_init
@dataclass(frozen=True)
class AttemptCommit:
    """Everything one attempt changes, committed in one transaction (DESIGN section 3)."""

    claim: ClaimedConnection
    outcome: Outcome
    transition: Transition
    attempt: AttemptRecord
    notifications: tuple[NotificationContent, ...]


@dataclass(frozen=True)
class PruneBatch:
    """One batch of pruned rows (refresh attempts, finished deliveries): how many went, and whether the prune
    is done (the batch held nothing older than the cutoff, or reached the end of the table)."""

    deleted: int
    is_done: bool


# --- connecting in a browser (ADR 13) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectSession:
    """A connect link's stored side: who connects which provider, to which connection (None: a new one),
    and where the browser goes afterwards. Never holds the link's secret, only finds it by its digest."""

    session_id: str
    tenant_id: str
    provider: ProviderConfig
    user_id: str
    email: str | None
    connection_id: str | None
    return_to: str | None
    expires_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class NewConnectSession:
    """What the application asks a link for (``POST /v1/connect-sessions`` or a reconnect link)."""

    tenant_id: str
    secret_hash: str
    expires_at: datetime
    provider: str | None = None  # by name, for a new connection
    user_id: str | None = None
    email: str | None = None
    connection_id: str | None = None  # to reconnect an existing one (provider and user come from it)
    return_to: str | None = None


@dataclass(frozen=True)
class NewAuthorizationRequest:
    """One trip to the provider: stored by the digests of its ``state`` and of the browser's cookie."""

    session_id: str
    state_hash: str
    browser_hash: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    return_to: str | None
    expires_at: datetime


class CallbackCheck(StrEnum):
    """Why a callback's ``state`` was refused, or ``OK``: each gets its own page."""

    OK = "ok"
    UNKNOWN = "unknown"  # never issued (or tampered with)
    USED = "used"  # already taken by a callback: a replay
    EXPIRED = "expired"
    OTHER_BROWSER = "other_browser"  # issued to another browser (login CSRF, a forwarded link)


@dataclass(frozen=True)
class TakenAuthorization:
    """The callback's view of its authorization request: the check, and when OK the verifier and session."""

    check: CallbackCheck
    session: ConnectSession | None = None
    code_verifier: str | None = field(default=None, repr=False)
    redirect_uri: str | None = None
    return_to: str | None = None


@dataclass(frozen=True)
class ConnectCompletion:
    """What the callback stores once the provider gave tokens: for a reconnect, the transition (and its
    rendered notices); for a new connection, the row to create."""

    session_id: str
    tokens: TokenSet = field(repr=False)
    now: datetime
    transition: Transition | None = None
    notifications: tuple[NotificationContent, ...] = ()
    new_connection: NewConnection | None = None


@dataclass(frozen=True)
class ConnectResult:
    """A finished connect: the connection, whether it is new, and the workflows that resumed."""

    connection_id: str
    is_new: bool
    resumed_workflows: tuple[str, ...]
