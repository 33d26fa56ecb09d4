"""Request and response bodies of the ``/v1`` API, with DESIGN section 4's field names.

Request models forbid unknown fields, so a typo is an error rather than a silently ignored setting. No
response model has a refresh token; only ``TokenOut`` has an access token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from grantkeeper.core.model import ConnectionStatus, NotificationType
from grantkeeper.ports import AuthMethod, ConnectionRecord, NotificationRecord, ProviderConfig, WorkflowRecord
from grantkeeper.service.importing import parse_time

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
# Control characters (NUL above all: PostgreSQL refuses it in text) are never valid in these fields.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Secret = Annotated[str, Field(min_length=1, max_length=4096, pattern=_PRINTABLE)]
Url = Annotated[str, Field(min_length=1, max_length=2048, pattern=_PRINTABLE)]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderIn(Strict):
    name: Name
    token_url: Url
    client_id: Secret
    client_secret: Secret
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC
    default_expires_in: int = Field(default=3600, ge=1, le=10 * 365 * 86400)
    authorize_url: Url | None = None
    revocation_url: Url | None = None
    scopes: Annotated[str, Field(max_length=2048, pattern=_PRINTABLE)] | None = None


class ProviderOut(BaseModel):
    name: str
    token_url: str
    client_id: str
    auth_method: AuthMethod
    default_expires_in: int
    authorize_url: str | None
    revocation_url: str | None
    scopes: str | None
    flagged_at: datetime | None
    flag_reason: str | None

    @classmethod
    def of(cls, provider: ProviderConfig) -> ProviderOut:
        return cls(
            name=provider.name,
            token_url=provider.token_url,
            client_id=provider.client_id,
            auth_method=provider.auth_method,
            default_expires_in=provider.default_expires_in,
            authorize_url=provider.authorize_url,
            revocation_url=provider.revocation_url,
            scopes=provider.scopes,
            flagged_at=provider.flagged_at,
            flag_reason=provider.flag_reason,
        )


def _time(value: Any) -> datetime | None:
    """ISO 8601 or Unix seconds, as the CLI import accepts (DESIGN section 4); a naive time is UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_time(value)


class ConnectionIn(Strict):
    provider: Name
    user_id: Text
    refresh_token: Secret
    access_token: Secret | None = None
    expires_at: datetime | None = Field(default=None, description="ISO 8601 or Unix seconds")
    email: Text | None = None
    workflows: list[Name] = Field(default_factory=list, max_length=100)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _parse_expires_at(cls, value: Any) -> datetime | None:
        return _time(value)


class ImportIn(Strict):
    connections: list[ConnectionIn] = Field(min_length=1, max_length=10_000)


class ErrorOut(BaseModel):
    code: str
    description: str


class ConnectionOut(BaseModel):
    id: str
    provider: str
    user_id: str
    email: str | None
    status: ConnectionStatus
    consecutive_failures: int
    consecutive_transient_failures: int
    expires_at: datetime | None
    next_attempt_at: datetime | None
    last_refreshed_at: datetime | None
    last_failure_at: datetime | None
    last_error: ErrorOut | None
    disconnect_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ConnectionRecord) -> ConnectionOut:
        state = record.state
        error = state.last_error
        return cls(
            id=record.connection_id,
            provider=record.provider,
            user_id=record.user_id,
            email=record.email,
            status=state.status,
            consecutive_failures=state.consecutive_failures,
            consecutive_transient_failures=state.consecutive_transient_failures,
            expires_at=state.expires_at,
            next_attempt_at=state.next_attempt_at,
            last_refreshed_at=state.last_refreshed_at,
            last_failure_at=state.last_failure_at,
            last_error=ErrorOut(code=error.code, description=error.description) if error else None,
            disconnect_reason=state.disconnect_reason.value if state.disconnect_reason else None,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class ConnectionPage(BaseModel):
    items: list[ConnectionOut]
    next_cursor: str | None


class ImportOut(BaseModel):
    imported: int
    ids: list[str]


class TokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_at: datetime | None


class WorkflowIn(Strict):
    name: Name
    connection_ids: list[Id] = Field(max_length=1000)


class WorkflowOut(BaseModel):
    id: str
    name: str
    status: str
    paused_reason: str | None
    connection_ids: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowOut:
        return cls(
            id=record.workflow_id,
            name=record.name,
            status=record.status.value,
            paused_reason=record.paused_reason,
            connection_ids=list(record.connection_ids),
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class NotificationOut(BaseModel):
    id: str
    type: NotificationType
    title: str
    message: str
    is_read: bool
    created_at: datetime
    metadata: dict[str, Any]
    connection_id: str | None
    user_id: str | None

    @classmethod
    def of(cls, record: NotificationRecord) -> NotificationOut:
        return cls(
            id=record.notification_id,
            type=record.type,
            title=record.title,
            message=record.message,
            is_read=record.is_read,
            created_at=record.created_at,
            metadata=record.metadata,
            connection_id=record.connection_id,
            user_id=record.user_id,
        )


__all__ = [
    "ConnectionIn",
    "ConnectionOut",
    "ConnectionPage",
    "ImportIn",
    "ImportOut",
    "NotificationOut",
    "ProviderIn",
    "ProviderOut",
    "TokenOut",
    "WorkflowIn",
    "WorkflowOut",
]
