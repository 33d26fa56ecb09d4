"""``ConnectionStore``: the durable state and work queue the service layer needs, as a Protocol that
``adapters.db`` implements on SQLite and PostgreSQL, so the service layer sees only this interface. It is
synchronous on purpose (see the package docstring); its arguments and results are the records of
``ports.records`` and ``ports.delivery``, and the errors it raises on purpose are those of ``ports.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from grantkeeper.core.model import ConnectionStatus, NotificationType, TokenSet, Transition
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports.delivery import (
    DeliveryAttemptRecord,
    DeliveryResult,
    DestinationRecord,
    OutboxItem,
    UserPreferences,
)
from grantkeeper.ports.records import (
    AttemptCommit,
    AttemptRecord,
    AttemptStarts,
    ClaimedConnection,
    ConnectCompletion,
    ConnectionRecord,
    ConnectResult,
    ConnectSession,
    NewAuthorizationRequest,
    NewConnection,
    NewConnectSession,
    NewProvider,
    NotificationContent,
    NotificationRecord,
    ProviderConfig,
    PruneBatch,
    StoredTokens,
    TakenAuthorization,
    TenantRecord,
    WorkflowRecord,
)


class ConnectionStore(Protocol):
    """Durable state and the work queue. Methods that take ``tenant_id`` see that tenant's rows only."""

    def ensure_tenant(self, name: str) -> str: ...

    def add_provider(self, tenant_id: str, provider: NewProvider) -> ProviderConfig: ...

    def update_provider(self, tenant_id: str, provider_id: str, provider: NewProvider) -> ProviderConfig:
        """Store every setting of ``provider`` (all but its name) on the existing provider; its id, name,
        connections, flag and rate-limit state stay."""
        ...

    def list_providers(self, tenant_id: str) -> list[ProviderConfig]: ...

    def delete_provider(self, tenant_id: str, name: str, *, with_connections: bool = False) -> int:
        """Remove the provider; returns how many connections went with it, each as ``delete_connection``
        removes one (tokens, attempts and workflow links go, notifications stay, workflows nothing blocks any
        more resume). ``UnknownProviderError`` when the tenant has none of that name; ``ProviderInUseError``
        when it has connections and ``with_connections`` is False. Either way nothing changes."""
        ...

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

    def park_unreadable(self, claim: ClaimedConnection, now: datetime) -> bool:
        """Give back a claim whose refresh token no configured key opens, and set the row aside for an hour
        with ``last_error`` ``decryption_failed`` (logged by id): its counters and status are untouched,
        since it is not the user's doing. False when the lease was no longer ours."""
        ...

    def reconnect(
        self,
        tenant_id: str,
        connection_id: str,
        tokens: TokenSet,
        transition: Transition,
        now: datetime,
        notifications: Sequence[NotificationContent] = (),
    ) -> bool: ...

    # --- connecting in a browser (ADR 13) --------------------------------------------------------------

    def create_connect_session(self, session: NewConnectSession, now: datetime) -> ConnectSession:
        """Store a connect link's session (the link's secret only as a digest); an email's signed link asks
        again on every click and gets the first click's row. Raises ``UnknownProviderError`` or
        ``UnknownConnectionError`` for what the tenant does not have."""
        ...

    def connect_session(self, secret_hash: str) -> ConnectSession | None: ...

    def tenant_of_connection(self, connection_id: str) -> str | None: ...

    def add_authorization_request(self, request: NewAuthorizationRequest, now: datetime) -> None: ...

    def take_authorization_request(
        self, state_hash: str, browser_hash: str | None, now: datetime
    ) -> TakenAuthorization:
        """Check a callback's state and use it up (once); see ``CallbackCheck`` for the refusals."""
        ...

    def complete_connect(self, completion: ConnectCompletion) -> ConnectResult | None:
        """Store a finished flow's tokens, once per session; None when it was completed already."""
        ...

    def prune_connect_links(self, before: datetime) -> int:
        """Delete connect sessions and authorization requests that expired before ``before``."""
        ...

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

    def list_attempts(
        self, tenant_id: str, connection_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[AttemptRecord]:
        """The connection's refresh attempts, newest first (before ``before`` when given);
        ``UnknownConnectionError`` when the tenant has no such connection."""
        ...

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

    def prune_finished_outbox(self, before: datetime, *, batch_size: int = 1000) -> PruneBatch:
        """Delivered or failed outbox rows older than ``before`` go, with their delivery attempts; pending
        rows stay whatever their age."""
        ...

    def prune_notifications(self, before: datetime, *, batch_size: int = 1000) -> PruneBatch:
        """In-app notifications created before ``before`` go, with their finished deliveries; one with a
        delivery still pending stays whatever its age."""
        ...
