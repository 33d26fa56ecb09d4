"""The narrow interfaces the service layer needs; adapters implement them, ``testing`` has fakes of them.

The store is synchronous on purpose: SQLAlchemy Core with a plain connection pool is simple and well
understood, and the async service calls it through ``asyncio.to_thread`` so a commit never blocks the event
loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from grantkeeper.core.errors import GrantkeeperError
from grantkeeper.core.model import (
    ConnectionState,
    ConnectionStatus,
    NotificationType,
    Outcome,
    OutcomeClass,
    TokenSet,
    Transition,
)
from grantkeeper.core.routing import DestinationKind, Preferences


class StoreError(GrantkeeperError):
    """Base of the errors a ``ConnectionStore`` raises on purpose; every implementation raises the same.

    StoreError
    ├── UnknownProviderError     an import line or request names a provider the tenant does not have
    ├── UnknownConnectionError   connection ids that do not exist in the tenant
    ├── UnknownWorkflowError     a workflow id that does not exist in the tenant
    ├── DuplicateProviderError   the tenant already has a provider of that name
    ├── DuplicateWorkflowError   the tenant already has a workflow of that name
    ├── UnknownDestinationError  a Slack, Discord or webhook destination id the tenant does not have
    ├── TenantKeyExistsError     the tenant already has an API key and the caller did not ask to replace it
    ├── StoreUnavailableError    the database did not answer (down, restarting, unreachable): try again
    └── SchemaOutdatedError      the database schema is not the one this code expects: run migrate
    """


class StoreUnavailableError(StoreError):
    """The database could not be reached or dropped the connection; nothing of the call was done, and the
    same call may succeed later (the refresh path holds its answers in memory meanwhile)."""


class UnknownProviderError(StoreError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown provider {name!r}")
        self.name = name


class UnknownConnectionError(StoreError, LookupError):
    def __init__(self, connection_ids: Sequence[str]) -> None:
        shown = ", ".join(connection_ids[:10]) + (", ..." if len(connection_ids) > 10 else "")
        super().__init__(f"unknown connection id(s): {shown}")
        self.connection_ids = tuple(connection_ids)


class UnknownWorkflowError(StoreError, LookupError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"unknown workflow id {workflow_id!r}")
        self.workflow_id = workflow_id


class UnknownDestinationError(StoreError, LookupError):
    def __init__(self, destination_id: str) -> None:
        super().__init__(f"unknown destination id {destination_id!r}")
        self.destination_id = destination_id


class DuplicateProviderError(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"provider {name!r} already exists")
        self.name = name


class DuplicateWorkflowError(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"workflow {name!r} already exists")
        self.name = name


class TenantKeyExistsError(StoreError):
    """Refusing to overwrite a key silently: every client using the old key would be locked out at once."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"tenant {name!r} already has an API key; rotate it with `grantkeeper tenants rotate-key {name}`"
        )
        self.name = name


class SchemaOutdatedError(StoreError):
    """Raised instead of silently migrating a database that already holds data; migrations are explicit."""


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


@dataclass(frozen=True)
class ClaimedConnection:
    """A connection leased to one worker for one refresh attempt, with its decrypted tokens.

    ``version`` fences the commit: it succeeds only while the row still carries this version and lease owner,
    or, once the attempt has started (``started_at``, set by the start gate), while nobody has started another
    attempt since (the row's ``in_flight_since`` is still ours), so an answer held through a database outage
    still lands if no other worker has sent a request in the meantime.
    ``access_token`` is None from ``claim_due``: a scheduled refresh never needs the old one.
    """

    connection_id: str
    tenant_id: str
    user_id: str
    email: str | None
    provider: ProviderConfig
    state: ConnectionState
    refresh_token: str | None = field(repr=False)
    access_token: str | None = field(repr=False)
    version: int
    lease_owner: str
    lease_expires_at: datetime
    started_at: datetime | None = None


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


@dataclass(frozen=True)
class AttemptRecord:
    connection_id: str
    attempted_at: datetime
    outcome: OutcomeClass
    http_status: int | None
    error_code: str | None
    duration: timedelta


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
    """One batch of pruned refresh attempts: how many rows went, and whether the prune is done (the batch
    held nothing older than the cutoff, or reached the end of the table)."""

    deleted: int
    is_done: bool


class ConnectionStore(Protocol):
    """Durable state and the work queue. Methods that take ``tenant_id`` see that tenant's rows only."""

    def ensure_tenant(self, name: str) -> str: ...

    def add_provider(self, tenant_id: str, provider: NewProvider) -> ProviderConfig: ...

    def list_providers(self, tenant_id: str) -> list[ProviderConfig]: ...

    def import_connections(
        self, tenant_id: str, rows: Sequence[NewConnection], now: datetime
    ) -> list[str]: ...

    def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionRecord | None: ...

    def list_connections(
        self, tenant_id: str, status: ConnectionStatus | None = None
    ) -> list[ConnectionRecord]: ...

    def claim_due(
        self,
        now: datetime,
        limit: int,
        owner: str,
        lease_ttl: timedelta,
        tenant_id: str | None = None,
        *,
        leased_at: datetime | None = None,
        rescue_ttl: timedelta | None = None,
        skip_in_flight: bool = False,
    ) -> list[ClaimedConnection]:
        """Lease due connections, oldest due first, those left in flight by a dead attempt ahead of the rest
        and for ``rescue_ttl`` only (so a retry inside a provider's rotation grace window is not held up by a
        second worker dying too); ``skip_in_flight`` leaves those rows to their owner for now."""
        ...

    def claim_ids(
        self,
        tenant_id: str,
        connection_ids: Sequence[str] | None,
        now: datetime,
        owner: str,
        lease_ttl: timedelta,
    ) -> list[ClaimedConnection]: ...

    def check_connections(self, tenant_id: str, connection_ids: Sequence[str]) -> None: ...

    def start_attempts(
        self, claims: Sequence[ClaimedConnection], now: datetime, attempt_ttl: timedelta
    ) -> AttemptStarts: ...

    def schedule_probes(self, now: datetime, horizon_at: datetime) -> int: ...

    def commit_attempt(self, commit: AttemptCommit) -> bool: ...

    def commit_attempts(self, batch: Sequence[AttemptCommit]) -> list[bool]: ...

    def commit_and_start(
        self,
        batch: Sequence[AttemptCommit],
        claims: Sequence[ClaimedConnection],
        now: datetime,
        attempt_ttl: timedelta,
    ) -> tuple[list[bool], AttemptStarts]: ...

    def release(self, claim: ClaimedConnection) -> None: ...

    def reconnect(
        self, tenant_id: str, connection_id: str, tokens: TokenSet, transition: Transition, now: datetime
    ) -> bool: ...

    def list_notifications(
        self,
        tenant_id: str,
        limit: int = 100,
        *,
        type: NotificationType | None = None,
        unread_only: bool = False,
    ) -> list[NotificationRecord]: ...

    def mark_notification_read(self, tenant_id: str, notification_id: str) -> bool: ...

    def count_by_status(self, tenant_id: str) -> dict[str, int]: ...

    def count_by_disconnect_reason(self, tenant_id: str) -> dict[str, int]: ...

    def list_failing(self, tenant_id: str, limit: int = 100) -> list[ConnectionRecord]: ...

    def list_workflows(self, tenant_id: str) -> list[WorkflowRecord]: ...

    def attempts_for(self, connection_id: str, limit: int = 100) -> list[AttemptRecord]: ...

    # Tenants and API keys: keys are stored only as the hash the caller computed.

    def set_tenant_key(self, name: str, api_key_hash: str, *, replace: bool = False) -> TenantRecord: ...

    def tenant_for_key(self, api_key_hash: str) -> TenantRecord | None: ...

    def list_tenants(self) -> list[TenantRecord]: ...

    # The HTTP API's resources (DESIGN section 4).

    def get_provider(self, tenant_id: str, name: str) -> ProviderConfig | None: ...

    def list_connections_page(
        self,
        tenant_id: str,
        *,
        status: ConnectionStatus | None = None,
        provider: str | None = None,
        user_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[ConnectionRecord], str | None]: ...

    def delete_connection(self, tenant_id: str, connection_id: str) -> bool: ...

    def read_tokens(
        self, tenant_id: str, connection_id: str, *, with_refresh_token: bool = True
    ) -> StoredTokens | None: ...

    def lease_holder(self, tenant_id: str, connection_id: str, now: datetime) -> str | None: ...

    def create_workflow(
        self, tenant_id: str, name: str, connection_ids: Sequence[str], now: datetime
    ) -> WorkflowRecord: ...

    def get_workflow(self, tenant_id: str, workflow_id: str) -> WorkflowRecord | None: ...

    # Notification delivery: the outbox as a work queue, leased like connections (issue 4).

    def claim_outbox(
        self,
        now: datetime,
        limit: int,
        owner: str,
        lease_ttl: timedelta,
        channels: Sequence[str] | None = None,
    ) -> list[OutboxItem]: ...

    def record_delivery(
        self,
        item: OutboxItem,
        result: DeliveryResult,
        attempted_at: datetime,
        duration: timedelta,
        next_attempt_at: datetime | None,
        *,
        failure_limit: int | None = None,
    ) -> bool: ...

    def list_deliveries(
        self,
        tenant_id: str,
        limit: int = 100,
        *,
        destination_id: str | None = None,
        channel: str | None = None,
    ) -> list[DeliveryAttemptRecord]: ...

    def claim_digests(
        self, now: datetime, max_recipients: int, owner: str, lease_ttl: timedelta
    ) -> list[list[OutboxItem]]: ...

    # Destinations and preferences (issue 4).

    def add_destination(
        self,
        tenant_id: str,
        kind: DestinationKind,
        url: str,
        now: datetime,
        *,
        user_id: str | None = None,
        secret: str | None = None,
    ) -> DestinationRecord: ...

    def list_destinations(
        self, tenant_id: str, kind: DestinationKind | None = None
    ) -> list[DestinationRecord]: ...

    def remove_destination(self, tenant_id: str, destination_id: str) -> bool: ...

    def enable_destination(self, tenant_id: str, destination_id: str) -> DestinationRecord: ...

    def get_preferences(self, tenant_id: str, user_id: str) -> UserPreferences: ...

    def set_preferences(self, tenant_id: str, prefs: UserPreferences, now: datetime) -> UserPreferences: ...

    def outbox_counts(self, tenant_id: str) -> dict[str, int]: ...

    # Health, for /readyz.

    def ping(self) -> None: ...

    def schema_is_current(self) -> bool: ...

    # Retention: refresh attempts older than a cutoff, oldest first, one transaction per batch.

    def prune_refresh_attempts(self, before: datetime, *, batch_size: int = 10_000) -> PruneBatch: ...


class TokenEndpoint(Protocol):
    """Performs one refresh_token grant (RFC 6749 section 6) and classifies whatever comes back; asks whether
    a refresh token still works (RFC 7662) where the provider has an introspection endpoint."""

    async def refresh(self, provider: ProviderConfig, refresh_token: str) -> Outcome: ...

    async def introspect(self, provider: ProviderConfig, refresh_token: str) -> IntrospectionResult: ...


class TokenStatus(StrEnum):
    """What an RFC 7662 introspection said about a token: it works, it does not, or no usable answer."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IntrospectionResult:
    """One RFC 7662 introspection; never holds a token. ``error_code`` says why the status is unknown (an
    RFC 6749 section 5.2 code, a network fault value, ``malformed_response``, or a local reason nothing was
    sent, such as ``no_introspection_endpoint``)."""

    status: TokenStatus
    http_status: int | None
    error_code: str | None = None


@dataclass(frozen=True)
class RevocationResult:
    """What one RFC 7009 revocation request came to; never holds a token or a secret.

    ``is_revoked`` is True for a 200 (RFC 7009 section 2.2: also sent for a token the server does not know,
    so it means "this token no longer works", not "it was valid"). ``error_code`` is an RFC 7009 section
    2.2.1 / RFC 6749 section 5.2 code (``unsupported_token_type``, ``invalid_client``), a network fault value
    (``connect_timeout``), or a local reason nothing was sent (``no_revocation_endpoint``).
    """

    is_revoked: bool
    http_status: int | None
    error_code: str | None


class TokenRevoker(Protocol):
    """Revokes one token at the provider (RFC 7009 section 2), e.g. when an app deletes a connection.

    Never raises for anything the provider or the network does: a 503 (RFC 7009 section 2.2.1) or a network
    fault comes back as a result with ``is_revoked`` False, and the caller decides whether to try again.
    """

    async def revoke(
        self, provider: ProviderConfig, token: str, token_type_hint: str
    ) -> RevocationResult: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


# Notification delivery (issue 4) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxItem:
    """One outbox row leased for delivery, with everything a channel needs to render and send it.

    A row is one notification (or one webhook event) for one destination. ``idempotency_key`` is the row's id,
    so it is stable across retries: a resend after a crash carries the same key, and a receiver that dedupes
    (Standard Webhooks' ``webhook-id``, an email's ``Message-ID``) sees the event once.

    ``notification_id`` and ``type`` are None for webhook events that no user notification stands behind
    (``workflow.paused``, ``workflow.resumed``, ``provider.config_error``). ``event`` and ``payload`` are set
    for webhook rows: the payload was rendered when the event happened, so every resend has the same body.
    ``destination_url`` and ``destination_secret`` are decrypted for this delivery only and never logged;
    ``destination_user_id`` is None for a tenant-wide destination.
    """

    outbox_id: str
    notification_id: str | None
    channel: str
    attempts: int
    tenant_id: str
    connection_id: str | None
    user_id: str | None
    email: str | None
    provider: str
    type: NotificationType | None
    title: str
    message: str
    metadata: dict[str, Any]
    created_at: datetime
    lease_owner: str = ""
    destination_id: str | None = None
    destination_url: str | None = field(default=None, repr=False)
    destination_secret: str | None = field(default=None, repr=False)
    destination_user_id: str | None = None
    event: str | None = None
    payload: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        return self.outbox_id


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery attempt did. ``is_permanent`` failures are not retried (a bad address, a 4xx);
    ``retry_after`` is the receiver's own ``Retry-After``, which the retry schedule waits for at least."""

    is_delivered: bool
    error: str | None = None
    is_permanent: bool = False
    retry_after: timedelta | None = None


class ChannelSender(Protocol):
    """Delivers outbox items of one channel (``email``, ``slack``, ``discord``, ``webhook``)."""

    channel: str

    async def send(self, item: OutboxItem) -> DeliveryResult: ...


class DigestSender(Protocol):
    """Delivers one recipient's daily digest: several outbox rows, one message."""

    channel: str

    async def send_digest(self, items: Sequence[OutboxItem]) -> DeliveryResult: ...


@dataclass(frozen=True)
class DestinationRecord:
    """A Slack or Discord incoming webhook or an app webhook endpoint, as listings show it.

    No URL path (a chat webhook's path is its credential), no secret. ``status`` turns ``disabled`` after too
    many failures in a row; ``last_error`` says the latest.
    """

    destination_id: str
    tenant_id: str
    kind: DestinationKind
    user_id: str | None
    url_hint: str
    status: str
    consecutive_failures: int
    last_error: str | None
    disabled_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class UserPreferences:
    """A user's notification preferences and fallback address; ``updated_at`` None means never set."""

    user_id: str
    email_address: str | None = None
    preferences: Preferences = field(default_factory=Preferences)
    updated_at: datetime | None = None


@dataclass(frozen=True)
class DeliveryAttemptRecord:
    """One attempt to deliver an outbox row; ``error`` is a short reason, never a message body or a token."""

    outbox_id: str
    channel: str
    attempted_at: datetime
    is_delivered: bool
    error: str | None
    duration: timedelta
    destination_id: str | None = None
    notification_id: str | None = None
    event: str | None = None
