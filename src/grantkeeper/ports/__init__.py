"""The narrow interfaces the service layer needs; adapters implement them, ``testing`` has fakes of them.

The store is synchronous on purpose: SQLAlchemy Core with a plain connection pool is simple and well
understood, and the async service calls it through ``asyncio.to_thread`` so a commit never blocks the event
loop.

One module per concern, every public name re-exported here (import from ``grantkeeper.ports``):
``errors`` (what a store raises on purpose), ``records`` (the values the store takes and returns),
``store`` (``ConnectionStore``), ``provider`` (refresh, introspection and revocation at a provider),
``delivery`` (notification channels and the outbox items they send) and ``clock`` (``Clock``).
"""

from __future__ import annotations

from grantkeeper.ports.clock import Clock
from grantkeeper.ports.delivery import (
    ChannelSender,
    DeliveryAttemptRecord,
    DeliveryResult,
    DestinationRecord,
    DigestSender,
    OutboxItem,
    UserPreferences,
)
from grantkeeper.ports.errors import (
    DuplicateProviderError,
    DuplicateWorkflowError,
    SchemaOutdatedError,
    StoreError,
    StoreUnavailableError,
    TenantKeyExistsError,
    UnknownConnectionError,
    UnknownDestinationError,
    UnknownProviderError,
    UnknownWorkflowError,
    UnreadableSecretError,
)
from grantkeeper.ports.provider import (
    CodeExchanger,
    IntrospectionResult,
    RevocationResult,
    TokenEndpoint,
    TokenRevoker,
    TokenStatus,
)
from grantkeeper.ports.records import (
    AttemptCommit,
    AttemptRecord,
    AttemptStarts,
    AuthMethod,
    CallbackCheck,
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
    OutboxRecord,
    PlainSecret,
    ProviderConfig,
    PruneBatch,
    Secret,
    StoredTokens,
    TakenAuthorization,
    TenantRecord,
    WorkflowRecord,
    WorkflowStatus,
)
from grantkeeper.ports.store import ConnectionStore

__all__ = [
    "AttemptCommit",
    "AttemptRecord",
    "AttemptStarts",
    "AuthMethod",
    "CallbackCheck",
    "ChannelSender",
    "ClaimedConnection",
    "Clock",
    "CodeExchanger",
    "ConnectCompletion",
    "ConnectResult",
    "ConnectSession",
    "ConnectionRecord",
    "ConnectionStore",
    "DeliveryAttemptRecord",
    "DeliveryResult",
    "DestinationRecord",
    "DigestSender",
    "DuplicateProviderError",
    "DuplicateWorkflowError",
    "IntrospectionResult",
    "NewAuthorizationRequest",
    "NewConnectSession",
    "NewConnection",
    "NewProvider",
    "NotificationContent",
    "NotificationRecord",
    "OutboxItem",
    "OutboxRecord",
    "PlainSecret",
    "ProviderConfig",
    "PruneBatch",
    "RevocationResult",
    "SchemaOutdatedError",
    "Secret",
    "StoreError",
    "StoreUnavailableError",
    "StoredTokens",
    "TakenAuthorization",
    "TenantKeyExistsError",
    "TenantRecord",
    "TokenEndpoint",
    "TokenRevoker",
    "TokenStatus",
    "UnknownConnectionError",
    "UnknownDestinationError",
    "UnknownProviderError",
    "UnknownWorkflowError",
    "UnreadableSecretError",
    "UserPreferences",
    "WorkflowRecord",
    "WorkflowStatus",
]
