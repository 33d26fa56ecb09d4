"""Request and response bodies of the ``/v1`` API, with DESIGN section 4's field names.

Request models forbid unknown fields, so a typo is an error rather than a silently ignored setting. No
response model has a refresh token; only ``TokenOut`` has an access token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator

from grantkeeper.core.model import ConnectionStatus, NotificationType, OutcomeClass
from grantkeeper.core.routing import WarningEmail
from grantkeeper.ports import (
    AttemptRecord,
    AuthMethod,
    ConnectionRecord,
    DeliveryAttemptRecord,
    DestinationRecord,
    NotificationRecord,
    ProviderConfig,
    UserPreferences,
    WorkflowRecord,
)
from grantkeeper.service.admin import MAX_CONCURRENCY_LIMIT, MAX_RATE_LIMIT
from grantkeeper.service.destinations import (
    EMAIL_PATTERN,
    MAX_EMAIL_LENGTH,
    MAX_URL_LENGTH,
    MAX_USER_ID_LENGTH,
    ChatKind,
)
from grantkeeper.service.importing import parse_time

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
# Control characters (NUL above all: PostgreSQL refuses it in text) are never valid in these fields.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Secret = Annotated[str, Field(min_length=1, max_length=4096, pattern=_PRINTABLE)]
Url = Annotated[str, Field(min_length=1, max_length=2048, pattern=_PRINTABLE)]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=_PRINTABLE)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ParamName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
ParamValue = Annotated[str, Field(max_length=512, pattern=_PRINTABLE)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


AccountField = Annotated[
    str, Field(max_length=200, pattern=r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,4}$")
]
Scopes = Annotated[str, Field(max_length=2048, pattern=_PRINTABLE)]
ExpiresIn = Annotated[int, Field(ge=1, le=10 * 365 * 86400)]
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_LIMIT)]
RatePerSecond = Annotated[float, Field(ge=0.01, le=MAX_RATE_LIMIT, allow_inf_nan=False)]
AuthorizeParams = Annotated[dict[ParamName, ParamValue], Field(max_length=20)]


class ProviderIn(Strict):
    name: Name
    token_url: Url
    client_id: Secret
    client_secret: Secret
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC
    default_expires_in: ExpiresIn = 3600
    authorize_url: Url | None = None
    revocation_url: Url | None = None
    introspection_url: Url | None = None
    scopes: Scopes | None = None
    authorize_params: AuthorizeParams | None = None
    account_field: AccountField | None = Field(
        default=None,
        description="Where a code exchange's answer names the provider account (e.g. id_token.sub, "
        "account_id, authed_user.id); a reconnect to another account is then refused.",
    )
    issuer: Url | None = Field(
        default=None,
        description="The authorization server's issuer identifier (RFC 8414): every callback must then "
        "carry it as iss (RFC 9207), or it is refused before the code is redeemed.",
    )
    max_concurrency: Concurrency | None = None
    rate_limit_per_second: RatePerSecond | None = None


class ProviderPatch(Strict):
    """Settings to change. A field left out keeps its value; null clears an optional one (the token URL,
    client id and secret, auth method and default lifetime can only be replaced). The name stays."""

    token_url: Url | None = None
    client_id: Secret | None = None
    client_secret: Secret | None = None
    auth_method: AuthMethod | None = None
    default_expires_in: ExpiresIn | None = None
    authorize_url: Url | None = None
    revocation_url: Url | None = None
    introspection_url: Url | None = None
    scopes: Scopes | None = None
    authorize_params: AuthorizeParams | None = None
    account_field: AccountField | None = None
    issuer: Url | None = None
    max_concurrency: Concurrency | None = None
    rate_limit_per_second: RatePerSecond | None = None


class ProviderOut(BaseModel):
    name: str
    token_url: str
    client_id: str
    auth_method: AuthMethod
    default_expires_in: int
    authorize_url: str | None
    revocation_url: str | None
    introspection_url: str | None
    scopes: str | None
    authorize_params: dict[str, str]
    account_field: str | None
    issuer: str | None
    flagged_at: datetime | None
    flag_reason: str | None
    max_concurrency: int | None
    rate_limit_per_second: float | None

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
            introspection_url=provider.introspection_url,
            scopes=provider.scopes,
            authorize_params=provider.authorize_params or {},
            account_field=provider.account_field,
            issuer=provider.issuer,
            flagged_at=provider.flagged_at,
            flag_reason=provider.flag_reason,
            max_concurrency=provider.max_concurrency,
            rate_limit_per_second=provider.rate_limit_per_second,
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
    account_id: str | None = Field(description="The provider account, once a connect flow learned it.")
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
            account_id=record.account_id,
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


class AttemptOut(BaseModel):
    """One refresh attempt: what the provider answered, never a token or the answer's body."""

    attempted_at: datetime
    outcome: OutcomeClass = Field(description="success, auth, reauth_required, transient or config")
    http_status: int | None = Field(description="None when no answer came (a timeout, a refused connection)")
    error_code: str | None = Field(description="The provider's error, or the network fault's kind")
    duration_ms: int

    @classmethod
    def of(cls, record: AttemptRecord) -> AttemptOut:
        return cls(
            attempted_at=record.attempted_at,
            outcome=record.outcome,
            http_status=record.http_status,
            error_code=record.error_code,
            duration_ms=round(record.duration.total_seconds() * 1000),
        )


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


# Notification destinations and preferences (issue 4) ------------------------------------------------------

DestinationUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        pattern=_PRINTABLE,
        description="https (plain http only to a loopback host)",
        examples=["https://app.example.com/hooks/grantkeeper"],
    ),
]
UserId = Annotated[str, Field(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=_PRINTABLE)]
EmailAddress = Annotated[
    str, Field(min_length=3, max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN, examples=["ana@example.com"])
]


class WebhookIn(Strict):
    url: DestinationUrl


class ChannelIn(Strict):
    kind: ChatKind
    url: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_URL_LENGTH,
            pattern=_PRINTABLE,
            description="the incoming-webhook URL; its path is a secret and is never shown again",
            examples=["https://hooks.slack.com/services/T000/B000/XXXXXXXX"],
        ),
    ]
    user_id: UserId | None = Field(default=None, description="only this user's notifications; none: all")


class DestinationOut(BaseModel):
    """``url`` is a hint: scheme and host, plus the path for webhooks (a chat URL's path is its secret)."""

    id: str
    url: str
    status: str = Field(description="enabled, or disabled after too many failed deliveries in a row")
    consecutive_failures: int
    last_error: str | None
    disabled_at: datetime | None
    created_at: datetime

    @classmethod
    def fields_of(cls, record: DestinationRecord) -> dict[str, Any]:
        return {
            "id": record.destination_id,
            "url": record.url_hint,
            "status": record.status,
            "consecutive_failures": record.consecutive_failures,
            "last_error": record.last_error,
            "disabled_at": record.disabled_at,
            "created_at": record.created_at,
        }


class WebhookOut(DestinationOut):
    @classmethod
    def of(cls, record: DestinationRecord) -> WebhookOut:
        return cls(**cls.fields_of(record))


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="the Standard Webhooks signing secret; shown once, here only")


class ChannelOut(DestinationOut):
    kind: ChatKind
    user_id: str | None

    @classmethod
    def of(cls, record: DestinationRecord) -> ChannelOut:
        return cls(kind=ChatKind(record.kind.value), user_id=record.user_id, **cls.fields_of(record))


def _present(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null; leave the field out to keep its value")
    return value


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # the field may be left out, but null is not a value it takes


# Optional but not nullable: left out keeps the stored value; the schema says boolean (or the enum) only.
_Switch = Annotated[
    StrictBool | None, WithJsonSchema({"type": "boolean"}), Field(json_schema_extra=_without_default)
]


class PreferencesPatch(Strict):
    """A partial update: fields left out keep their value; ``email_address: null`` forgets the address."""

    email: _Switch = None
    slack: _Switch = None
    discord: _Switch = None
    warning_email: Annotated[
        WarningEmail | None,
        WithJsonSchema({"type": "string", "enum": [w.value for w in WarningEmail]}),
        Field(json_schema_extra=_without_default),
    ] = None
    email_address: EmailAddress | None = None

    _not_null = field_validator("email", "slack", "discord", "warning_email")(_present)


class PreferencesOut(BaseModel):
    user_id: str
    email: bool
    slack: bool
    discord: bool
    warning_email: WarningEmail
    email_address: str | None
    updated_at: datetime | None = Field(description="null: never set, these are the defaults")

    @classmethod
    def of(cls, prefs: UserPreferences) -> PreferencesOut:
        return cls(
            user_id=prefs.user_id,
            email=prefs.preferences.email,
            slack=prefs.preferences.slack,
            discord=prefs.preferences.discord,
            warning_email=prefs.preferences.warning_email,
            email_address=prefs.email_address,
            updated_at=prefs.updated_at,
        )


class DeliveryOut(BaseModel):
    outbox_id: str
    channel: str = Field(description="email, email_digest, slack, discord or webhook")
    destination_id: str | None
    notification_id: str | None
    event: str | None
    attempted_at: datetime
    delivered: bool
    error: str | None
    duration_ms: int

    @classmethod
    def of(cls, record: DeliveryAttemptRecord) -> DeliveryOut:
        return cls(
            outbox_id=record.outbox_id,
            channel=record.channel,
            destination_id=record.destination_id,
            notification_id=record.notification_id,
            event=record.event,
            attempted_at=record.attempted_at,
            delivered=record.is_delivered,
            error=record.error,
            duration_ms=round(record.duration.total_seconds() * 1000),
        )


__all__ = [
    "ChannelIn",
    "ChannelOut",
    "ConnectionIn",
    "ConnectionOut",
    "ConnectionPage",
    "DeliveryOut",
    "ImportIn",
    "ImportOut",
    "NotificationOut",
    "PreferencesOut",
    "PreferencesPatch",
    "ProviderIn",
    "ProviderOut",
    "ProviderPatch",
    "TokenOut",
    "WebhookCreatedOut",
    "WebhookIn",
    "WebhookOut",
    "WorkflowIn",
    "WorkflowOut",
]
