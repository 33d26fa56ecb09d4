"""``SqlStore``: the ``ConnectionStore`` port on SQLAlchemy Core, for SQLite and PostgreSQL alike.

This class only opens transactions and delegates; the SQL lives in ``catalog``, ``imports``, ``leases``,
``commits``, ``queries``, ``workflows``, ``inbox``, ``outbox``, ``deletions`` and ``retention``. Methods are
synchronous: the async service calls them through ``asyncio.to_thread``, and the engine's pool hands each
thread its own connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import (
    catalog,
    commits,
    connect,
    deletions,
    destinations,
    imports,
    inbox,
    leases,
    outbox,
    queries,
    rekeying,
    retention,
    starts,
    workflows,
)
from grantkeeper.adapters.db.engine import (
    commit_without_waiting_for_disk,
    ping,
    plan_on_indexes,
    read_transaction,
    write_transaction,
)
from grantkeeper.adapters.db.fanout import DEFAULT_DIGEST_HOUR
from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.schema import ensure_schema, is_current
from grantkeeper.core.model import ConnectionStatus, NotificationType, TokenSet, Transition
from grantkeeper.core.routing import DestinationKind
from grantkeeper.ports import (
    AttemptCommit,
    AttemptRecord,
    AttemptStarts,
    ClaimedConnection,
    ConnectCompletion,
    ConnectionRecord,
    ConnectResult,
    ConnectSession,
    DeliveryAttemptRecord,
    DeliveryResult,
    DestinationRecord,
    NewAuthorizationRequest,
    NewConnection,
    NewConnectSession,
    NewProvider,
    NotificationContent,
    NotificationRecord,
    OutboxItem,
    OutboxRecord,
    ProviderConfig,
    PruneBatch,
    StoredTokens,
    StoreUnavailableError,
    TakenAuthorization,
    TenantRecord,
    UserPreferences,
    WorkflowRecord,
)

__all__ = ["SqlStore"]


@contextmanager
def _unavailable_as_store_error() -> Iterator[None]:
    """Connectivity failures (the server down, restarting, or the connection dropped) as the port's
    ``StoreUnavailableError``, so the service can tell "try again later" from a bug without knowing SQL."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailableError(str(exc.orig or exc).splitlines()[0][:200] if str(exc) else "") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailableError("the database connection was lost") from exc
        raise


class SqlStore:
    """Durable state and work queue. Creates the schema of a brand-new database on construction unless
    ``create_schema=False``; refuses (``SchemaOutdatedError``) a database at another migration.

    ``digest_hour`` (UTC) is when a day's digest warnings become due; notifications are fanned out to the
    outbox inside the store's transactions, so the store needs to know it."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring | None,
        *,
        create_schema: bool = True,
        digest_hour: int = DEFAULT_DIGEST_HOUR,
    ) -> None:
        if not 0 <= digest_hour <= 23:
            raise ValueError("digest_hour must be between 0 and 23")
        self._engine = engine
        self._cipher = FieldCipher(keyring)
        self._digest_hour = digest_hour
        if create_schema:
            ensure_schema(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def __repr__(self) -> str:
        return f"SqlStore({self._engine.url!r})"

    def ensure_tenant(self, name: str) -> str:
        with write_transaction(self._engine) as connection:
            return catalog.ensure_tenant(connection, name, datetime.now(UTC))

    def add_provider(self, tenant_id: str, provider: NewProvider) -> ProviderConfig:
        with write_transaction(self._engine) as connection:
            return catalog.add_provider(connection, self._cipher, tenant_id, provider, datetime.now(UTC))

    def update_provider(self, tenant_id: str, provider_id: str, provider: NewProvider) -> ProviderConfig:
        with write_transaction(self._engine) as connection:
            return catalog.update_provider(connection, self._cipher, tenant_id, provider_id, provider)

    def list_providers(self, tenant_id: str) -> list[ProviderConfig]:
        with read_transaction(self._engine) as connection:
            return catalog.list_providers(connection, self._cipher, tenant_id)

    def import_connections(self, tenant_id: str, rows: Sequence[NewConnection], now: datetime) -> list[str]:
        with write_transaction(self._engine) as connection:
            return imports.import_connections(connection, self._cipher, tenant_id, rows, now)

    def set_tenant_key(self, name: str, api_key_hash: str, *, replace: bool = False) -> TenantRecord:
        with write_transaction(self._engine) as connection:
            return catalog.set_tenant_key(
                connection, name, api_key_hash, replace=replace, now=datetime.now(UTC)
            )

    def tenant_for_key(self, api_key_hash: str) -> TenantRecord | None:
        with read_transaction(self._engine) as connection:
            return catalog.tenant_for_key(connection, api_key_hash)

    def list_tenants(self) -> list[TenantRecord]:
        with read_transaction(self._engine) as connection:
            return catalog.list_tenants(connection)

    def get_provider(self, tenant_id: str, name: str) -> ProviderConfig | None:
        with read_transaction(self._engine) as connection:
            return catalog.get_provider(connection, self._cipher, tenant_id, name)

    def get_connection(self, tenant_id: str, connection_id: str) -> ConnectionRecord | None:
        with read_transaction(self._engine) as connection:
            return queries.get_connection(connection, tenant_id, connection_id)

    def list_connections(
        self, tenant_id: str, status: ConnectionStatus | None = None
    ) -> list[ConnectionRecord]:
        with read_transaction(self._engine) as connection:
            return queries.list_connections(connection, tenant_id, status)

    def list_connections_page(
        self,
        tenant_id: str,
        *,
        status: ConnectionStatus | None = None,
        provider: str | None = None,
        user_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[ConnectionRecord], str | None]:
        with read_transaction(self._engine) as connection:
            return queries.list_connections_page(
                connection,
                tenant_id,
                status=status,
                provider=provider,
                user_id=user_id,
                after=after,
                limit=limit,
            )

    def delete_connection(self, tenant_id: str, connection_id: str) -> bool:
        with write_transaction(self._engine) as connection:
            return deletions.delete_connection(connection, tenant_id, connection_id, datetime.now(UTC))

    def lease_holder(self, tenant_id: str, connection_id: str, now: datetime) -> str | None:
        with read_transaction(self._engine) as connection:
            return leases.lease_holder(connection, tenant_id, connection_id, now)

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
        """Lease up to ``limit`` connections due at ``now``; the lease runs from ``leased_at`` (the present,
        by default ``now``), so a cycle that takes longer than a lease still leases what it claims late.
        Rows left in flight come first, leased for ``rescue_ttl`` (see ``leases.claim_due``).

        The claim's commit does not wait for the disk (ADR 18): nothing leaves the worker on the strength of
        a claim until ``start_attempts`` has committed, durably, after it. A crash in between undoes the
        claim, and the start's fence on ``version`` and ``lease_owner`` then refuses it; the worker never
        runs two attempts for one connection (``AttemptRunner.run``), which a claim taken again after such a
        loss, with the same version and owner, would otherwise allow."""
        lease = leases.Lease(leased_at or now, owner, lease_ttl, rescue_ttl or lease_ttl)
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            commit_without_waiting_for_disk(connection)
            plan_on_indexes(connection)
            return leases.claim_due(
                connection, self._cipher, lease, limit, tenant_id, due_at=now, skip_in_flight=skip_in_flight
            )

    def claim_ids(
        self,
        tenant_id: str,
        connection_ids: Sequence[str] | None,
        now: datetime,
        owner: str,
        lease_ttl: timedelta,
    ) -> list[ClaimedConnection]:
        lease = leases.Lease(now, owner, lease_ttl)
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return leases.claim_ids(connection, self._cipher, lease, tenant_id, connection_ids)

    def check_connections(self, tenant_id: str, connection_ids: Sequence[str]) -> None:
        """Raise ``UnknownConnectionError`` naming every id the tenant does not have."""
        with read_transaction(self._engine) as connection:
            leases.check_known(connection, tenant_id, list(dict.fromkeys(connection_ids)))

    def start_attempts(
        self, claims: Sequence[ClaimedConnection], now: datetime, attempt_ttl: timedelta
    ) -> AttemptStarts:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return starts.start_attempts(connection, claims, now, attempt_ttl)

    def schedule_probes(self, now: datetime, horizon_at: datetime) -> int:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return commits.schedule_probes(connection, now, horizon_at)

    def commit_attempt(self, commit: AttemptCommit) -> bool:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return commits.commit_attempt(connection, self._cipher, commit, digest_hour=self._digest_hour)

    def commit_attempts(self, batch: Sequence[AttemptCommit]) -> list[bool]:
        """Several attempts in one transaction, each fenced on its own; one answer per attempt, in order.

        Each rotated refresh token is durable when this returns, like ``commit_attempt``'s; grouping only
        shares the transaction's cost (on PostgreSQL one round trip and one WAL flush instead of many)."""
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return commits.commit_attempts(connection, self._cipher, batch, digest_hour=self._digest_hour)

    def commit_and_start(
        self,
        batch: Sequence[AttemptCommit],
        claims: Sequence[ClaimedConnection],
        now: datetime,
        attempt_ttl: timedelta,
    ) -> tuple[list[bool], AttemptStarts]:
        """``commit_attempts`` then ``start_attempts`` in one transaction: a busy worker's every tick has
        answers to store and requests to send, and one transaction is half the cost of two. Commits go first,
        so the slots they free count for the starts. A database that does not answer raises
        ``StoreUnavailableError`` (the caller keeps its answers and retries); any other error is a bug or a
        value the database refuses, and is raised as it is."""
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            committed = commits.commit_attempts(
                connection, self._cipher, batch, digest_hour=self._digest_hour
            )
            return committed, starts.start_attempts(connection, claims, now, attempt_ttl)

    def release(self, claim: ClaimedConnection) -> None:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            leases.release(connection, claim)

    def park_unreadable(self, claim: ClaimedConnection, now: datetime) -> bool:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return leases.park_unreadable(connection, claim, now)

    def reconnect(
        self,
        tenant_id: str,
        connection_id: str,
        tokens: TokenSet,
        transition: Transition,
        now: datetime,
        notifications: Sequence[NotificationContent] = (),
    ) -> bool:
        with write_transaction(self._engine) as connection:
            resumed = commits.reconnect(
                connection,
                self._cipher,
                tenant_id,
                connection_id,
                tokens,
                transition,
                now,
                notifications=notifications,
                digest_hour=self._digest_hour,
            )
        return resumed is not None

    # --- connecting in a browser (ADR 13) --------------------------------------------------------------

    def create_connect_session(self, session: NewConnectSession, now: datetime) -> ConnectSession:
        with write_transaction(self._engine) as connection:
            return connect.create_session(connection, self._cipher, session, now)

    def connect_session(self, secret_hash: str) -> ConnectSession | None:
        with read_transaction(self._engine) as connection:
            return connect.session_by_secret(connection, self._cipher, secret_hash)

    def tenant_of_connection(self, connection_id: str) -> str | None:
        with read_transaction(self._engine) as connection:
            return connect.tenant_of_connection(connection, connection_id)

    def add_authorization_request(self, request: NewAuthorizationRequest, now: datetime) -> None:
        with write_transaction(self._engine) as connection:
            connect.add_authorization_request(connection, self._cipher, request, now)

    def take_authorization_request(
        self, state_hash: str, browser_hash: str | None, now: datetime
    ) -> TakenAuthorization:
        with write_transaction(self._engine) as connection:
            return connect.take_authorization_request(connection, self._cipher, state_hash, browser_hash, now)

    def complete_connect(self, completion: ConnectCompletion) -> ConnectResult | None:
        with write_transaction(self._engine) as connection:
            return connect.complete(connection, self._cipher, completion, digest_hour=self._digest_hour)

    def prune_connect_links(self, before: datetime) -> int:
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            return connect.prune_expired(connection, before)

    def list_notifications(
        self,
        tenant_id: str,
        limit: int = 100,
        *,
        type: NotificationType | None = None,
        unread_only: bool = False,
    ) -> list[NotificationRecord]:
        with read_transaction(self._engine) as connection:
            return inbox.list_notifications(connection, tenant_id, limit, kind=type, unread_only=unread_only)

    def mark_notification_read(self, tenant_id: str, notification_id: str) -> bool:
        with write_transaction(self._engine) as connection:
            return inbox.mark_notification_read(connection, tenant_id, notification_id)

    def count_by_disconnect_reason(self, tenant_id: str) -> dict[str, int]:
        with read_transaction(self._engine) as connection:
            return queries.count_by_disconnect_reason(connection, tenant_id)

    def count_by_status(self, tenant_id: str) -> dict[str, int]:
        with read_transaction(self._engine) as connection:
            return queries.count_by_status(connection, tenant_id)

    def list_failing(self, tenant_id: str, limit: int = 100) -> list[ConnectionRecord]:
        with read_transaction(self._engine) as connection:
            return queries.list_failing(connection, tenant_id, limit)

    def list_workflows(self, tenant_id: str) -> list[WorkflowRecord]:
        with read_transaction(self._engine) as connection:
            return workflows.list_workflows(connection, tenant_id)

    def get_workflow(self, tenant_id: str, workflow_id: str) -> WorkflowRecord | None:
        with read_transaction(self._engine) as connection:
            return workflows.get_workflow(connection, tenant_id, workflow_id)

    def create_workflow(
        self, tenant_id: str, name: str, connection_ids: Sequence[str], now: datetime
    ) -> WorkflowRecord:
        with write_transaction(self._engine) as connection:
            return workflows.create_workflow(connection, tenant_id, name, connection_ids, now)

    def delete_provider(self, tenant_id: str, name: str, *, with_connections: bool = False) -> int:
        with write_transaction(self._engine) as connection:
            return deletions.delete_provider(
                connection, tenant_id, name, with_connections=with_connections, at=datetime.now(UTC)
            )

    def key_usage(self) -> dict[str, dict[str, int]]:
        """Per sealed column, how many stored values each configured key id seals (``rekeying.OTHER``: none
        of them); an old key can go once its counts are all zero."""
        return rekeying.usage(self._engine, self._cipher.kids)

    def reseal_secrets(
        self, *, batch_size: int = 500, on_batch: Callable[[str, int], None] | None = None
    ) -> rekeying.ResealReport:
        """Rewrite every stored secret that another key seals under the first configured key."""
        kids = self._cipher.kids
        return rekeying.reseal(self._engine, self._cipher, kids[0], batch_size=batch_size, on_batch=on_batch)

    def read_tokens(
        self, tenant_id: str, connection_id: str, *, with_refresh_token: bool = True
    ) -> StoredTokens | None:
        with read_transaction(self._engine) as connection:
            return queries.read_tokens(
                connection, self._cipher, tenant_id, connection_id, with_refresh_token=with_refresh_token
            )

    def list_outbox(self, notification_id: str) -> list[OutboxRecord]:
        with read_transaction(self._engine) as connection:
            return queries.list_outbox(connection, notification_id)

    def list_attempts(
        self, tenant_id: str, connection_id: str, limit: int = 100, before: datetime | None = None
    ) -> list[AttemptRecord]:
        with read_transaction(self._engine) as connection:
            return queries.list_attempts(connection, tenant_id, connection_id, limit, before)

    def attempts_for(self, connection_id: str, limit: int = 100) -> list[AttemptRecord]:
        with read_transaction(self._engine) as connection:
            return queries.attempts_for(connection, connection_id, limit)

    def claim_outbox(
        self,
        now: datetime,
        limit: int,
        owner: str,
        lease_ttl: timedelta,
        channels: Sequence[str] | None = None,
    ) -> list[OutboxItem]:
        with write_transaction(self._engine) as connection:
            return outbox.claim_outbox(
                connection, self._cipher, leases.Lease(now, owner, lease_ttl), limit, channels
            )

    def claim_digests(
        self, now: datetime, max_recipients: int, owner: str, lease_ttl: timedelta
    ) -> list[list[OutboxItem]]:
        with write_transaction(self._engine) as connection:
            return outbox.claim_digests(
                connection, self._cipher, leases.Lease(now, owner, lease_ttl), max_recipients
            )

    def record_delivery(
        self,
        item: OutboxItem,
        result: DeliveryResult,
        attempted_at: datetime,
        duration: timedelta,
        next_attempt_at: datetime | None,
        *,
        failure_limit: int | None = None,
    ) -> bool:
        duration_ms = round(duration.total_seconds() * 1000)
        with write_transaction(self._engine) as connection:
            return outbox.record_delivery(
                connection, item, result, attempted_at, duration_ms, next_attempt_at, failure_limit
            )

    def list_deliveries(
        self,
        tenant_id: str,
        limit: int = 100,
        *,
        destination_id: str | None = None,
        channel: str | None = None,
    ) -> list[DeliveryAttemptRecord]:
        with read_transaction(self._engine) as connection:
            return outbox.list_deliveries(
                connection, tenant_id, limit, destination_id=destination_id, channel=channel
            )

    def add_destination(
        self,
        tenant_id: str,
        kind: DestinationKind,
        url: str,
        now: datetime,
        *,
        user_id: str | None = None,
        secret: str | None = None,
    ) -> DestinationRecord:
        with write_transaction(self._engine) as connection:
            return destinations.add_destination(
                connection, self._cipher, tenant_id, kind, url, now, user_id=user_id, secret=secret
            )

    def list_destinations(
        self, tenant_id: str, kind: DestinationKind | None = None
    ) -> list[DestinationRecord]:
        with read_transaction(self._engine) as connection:
            return destinations.list_destinations(connection, tenant_id, kind)

    def remove_destination(self, tenant_id: str, destination_id: str) -> bool:
        with write_transaction(self._engine) as connection:
            return destinations.remove_destination(connection, tenant_id, destination_id)

    def enable_destination(self, tenant_id: str, destination_id: str) -> DestinationRecord:
        with write_transaction(self._engine) as connection:
            return destinations.enable_destination(connection, tenant_id, destination_id)

    def get_preferences(self, tenant_id: str, user_id: str) -> UserPreferences:
        with read_transaction(self._engine) as connection:
            return destinations.get_preferences(connection, tenant_id, user_id)

    def set_preferences(self, tenant_id: str, prefs: UserPreferences, now: datetime) -> UserPreferences:
        with write_transaction(self._engine) as connection:
            return destinations.set_preferences(connection, tenant_id, prefs, now)

    def outbox_counts(self, tenant_id: str) -> dict[str, int]:
        with read_transaction(self._engine) as connection:
            return outbox.outbox_counts(connection, tenant_id)

    def prune_refresh_attempts(self, before: datetime, *, batch_size: int = 10_000) -> PruneBatch:
        """Delete up to ``batch_size`` of the oldest attempts made before ``before``, in one short write
        transaction; call again until ``is_done`` (see ``retention`` for why it goes by id)."""
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            deleted, is_done = retention.prune_refresh_attempts(connection, before, batch_size)
        return PruneBatch(deleted=deleted, is_done=is_done)

    def prune_finished_outbox(self, before: datetime, *, batch_size: int = 1000) -> PruneBatch:
        """Delete a batch of delivered or failed outbox rows older than ``before``, with their attempts."""
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            deleted, is_done = retention.prune_finished_outbox(connection, before, batch_size)
        return PruneBatch(deleted=deleted, is_done=is_done)

    def prune_notifications(self, before: datetime, *, batch_size: int = 1000) -> PruneBatch:
        """Delete a batch of in-app notifications created before ``before``; one still being delivered
        stays."""
        with _unavailable_as_store_error(), write_transaction(self._engine) as connection:
            deleted, is_done = retention.prune_notifications(connection, before, batch_size)
        return PruneBatch(deleted=deleted, is_done=is_done)

    def ping(self) -> None:
        ping(self._engine)

    def schema_is_current(self) -> bool:
        return is_current(self._engine)
