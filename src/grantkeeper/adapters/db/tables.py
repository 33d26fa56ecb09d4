"""The schema as SQLAlchemy Core tables: the single description queries are written against.

Migrations in ``migrations/versions`` create the same schema by hand (they must not change when this file
does); a test compares the two on SQLite and PostgreSQL so they cannot drift. Token and secret columns end in
``_enc`` and only ever hold ``Keyring`` output.
"""

from __future__ import annotations

import secrets

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from grantkeeper.adapters.db.types import UTCDateTime

# Named constraints: Alembic's batch mode on SQLite can only alter what has a name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ID = String(32)
JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
AUTOINCREMENT_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 80 random bits in hex: unguessable, URL-safe, and known before the INSERT so the id can
    be bound into the encryption's associated data up front (no insert-then-update round trip)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def _tenant_fk() -> Column[str]:
    return Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)


tenants = Table(
    "tenants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("api_key_hash", String(128), nullable=True, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

providers = Table(
    "providers",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("name", String(200), nullable=False),
    Column("token_url", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("client_secret_enc", Text, nullable=False),
    Column("auth_method", String(32), nullable=False),
    Column("default_expires_in", Integer, nullable=False),
    Column("authorize_url", Text, nullable=True),
    Column("revocation_url", Text, nullable=True),
    Column("introspection_url", Text, nullable=True),
    Column("scopes", Text, nullable=True),
    Column("flagged_at", UTCDateTime, nullable=True),
    Column("flag_reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    # The operator's limits across all workers, and the shared token bucket enforcing the rate (migration 5).
    Column("max_concurrency", Integer, nullable=True),
    Column("rate_limit_per_second", Float, nullable=True),
    Column("rate_tokens", Float, nullable=True),
    Column("rate_refilled_at", UTCDateTime, nullable=True),
    # Extra query parameters for the authorization endpoint, e.g. {"access_type": "offline"} (migration 7).
    Column("authorize_params", JSON_DOCUMENT, nullable=True),
    # Where a code exchange's answer names the provider account, e.g. "id_token.sub" (migration 8).
    Column("account_field", String(200), nullable=True),
    Column("issuer", Text, nullable=True),
    UniqueConstraint("tenant_id", "name"),
)

connections = Table(
    "connections",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("provider_id", ID, ForeignKey("providers.id"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("email", String(320), nullable=True),
    Column("status", String(32), nullable=False),
    Column("access_token_enc", Text, nullable=True),
    Column("refresh_token_enc", Text, nullable=True),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("consecutive_transient_failures", Integer, nullable=False, default=0),
    Column("last_refreshed_at", UTCDateTime, nullable=True),
    Column("last_failure_at", UTCDateTime, nullable=True),
    Column("failing_since", UTCDateTime, nullable=True),
    Column("last_error_code", String(200), nullable=True),
    Column("last_error_description", Text, nullable=True),
    Column("disconnect_reason", String(32), nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("warning_sent", Boolean, nullable=False, default=False),
    Column("rate_limit_notice_sent", Boolean, nullable=False, default=False),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("in_flight_since", UTCDateTime, nullable=True),
    # The provider account the grant belongs to, once a connect flow learned it (migration 8).
    Column("account_id", String(255), nullable=True),
    CheckConstraint("status IN ('connected', 'needs_reauthorization', 'revoked')", name="status"),
    # The work queue's index: the due query is an equality on status, then a range in next_attempt_at order.
    Index("ix_connections_due", "status", "next_attempt_at"),
    Index("ix_connections_owner", "tenant_id", "provider_id", "user_id"),
    # Keyset pages of the API's listing (ordered by id), one per filter: each serves its filter as equalities
    # and then yields the rows in id order, so a page reads about ``limit`` index entries, not the tenant.
    Index("ix_connections_tenant_page", "tenant_id", "id"),
    Index("ix_connections_tenant_status_page", "tenant_id", "status", "id"),
    Index("ix_connections_tenant_provider_page", "tenant_id", "provider_id", "id"),
    Index("ix_connections_tenant_user_page", "tenant_id", "user_id", "id"),
    # Attempts in flight, oldest first, for the rescue of rows a dead worker left (claimed before the due
    # backlog) and per provider for the concurrency limit: only the few rows in flight are indexed.
    Index(
        "ix_connections_in_flight_since",
        "in_flight_since",
        "provider_id",
        postgresql_where=text("in_flight_since IS NOT NULL"),
        sqlite_where=text("in_flight_since IS NOT NULL"),
    ),
    # Connections backing off from transient failures, per provider: a provider's recovery wakes them.
    Index(
        "ix_connections_transient",
        "provider_id",
        "next_attempt_at",
        postgresql_where=text("consecutive_transient_failures > 0"),
        sqlite_where=text("consecutive_transient_failures > 0"),
    ),
)

workflows = Table(
    "workflows",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("paused_reason", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("status IN ('active', 'paused')", name="status"),
    UniqueConstraint("tenant_id", "name"),
)

workflow_connections = Table(
    "workflow_connections",
    metadata,
    Column("workflow_id", ID, ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True),
    Column("connection_id", ID, ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_workflow_connections_connection_id", "connection_id"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("connection_id", ID, ForeignKey("connections.id", ondelete="SET NULL"), nullable=True),
    Column("user_id", String(255), nullable=True),
    Column("type", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("is_read", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("metadata", JSON_DOCUMENT, nullable=False),
    Index("ix_notifications_tenant_created", "tenant_id", "created_at"),
    Index("ix_notifications_tenant_unread", "tenant_id", "is_read", "created_at", "id"),
    Index("ix_notifications_tenant_type", "tenant_id", "type", "created_at", "id"),
)

destinations = Table(
    "destinations",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("kind", String(16), nullable=False),
    Column("user_id", String(255), nullable=True),  # None: tenant-wide
    Column("url_enc", Text, nullable=False),  # a Slack or Discord webhook URL is a bearer secret
    Column("url_hint", String(300), nullable=False),  # scheme://host/… for listings
    Column("secret_enc", Text, nullable=True),  # the Standard Webhooks signing secret
    Column("status", String(16), nullable=False),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_error", String(200), nullable=True),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    CheckConstraint("kind IN ('slack', 'discord', 'webhook')", name="kind"),
    CheckConstraint("status IN ('enabled', 'disabled')", name="status"),
    Index("ix_destinations_tenant_kind", "tenant_id", "kind"),
)

user_preferences = Table(
    "user_preferences",
    metadata,
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", String(255), primary_key=True),
    Column("email_address", String(320), nullable=True),  # used when the connection has no address
    Column("email", Boolean, nullable=False),
    Column("slack", Boolean, nullable=False),
    Column("discord", Boolean, nullable=False),
    Column("warning_email", String(16), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("warning_email IN ('immediate', 'digest', 'never')", name="warning_email"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", ID, primary_key=True),
    Column("notification_id", ID, ForeignKey("notifications.id", ondelete="CASCADE"), nullable=True),
    Column("channel", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("tenant_id", ID, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("destination_id", ID, ForeignKey("destinations.id", ondelete="CASCADE"), nullable=True),
    Column("recipient", String(320), nullable=True),  # the email address, fixed when the row is written
    Column("event", String(64), nullable=True),  # the webhook event type
    Column("payload", JSON_DOCUMENT, nullable=True),  # the webhook body, identical on every resend
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
    Index("ix_outbox_due", "status", "next_attempt_at"),
    Index("ix_outbox_notification_id", "notification_id"),
    Index("ix_outbox_destination_id", "destination_id"),
)

refresh_attempts = Table(
    "refresh_attempts",
    metadata,
    Column("id", AUTOINCREMENT_ID, primary_key=True, autoincrement=True),
    Column("connection_id", ID, ForeignKey("connections.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", ID, nullable=False),
    Column("provider_id", ID, nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error_code", String(200), nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_refresh_attempts_connection_attempted", "connection_id", "attempted_at"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", AUTOINCREMENT_ID, primary_key=True, autoincrement=True),
    Column("outbox_id", ID, ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", ID, nullable=False),
    Column("channel", String(64), nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("is_delivered", Boolean, nullable=False),
    Column("error", String(200), nullable=True),  # a short reason, never a message body or a token
    Column("duration_ms", Integer, nullable=False),
    Index("ix_delivery_attempts_tenant_attempted", "tenant_id", "attempted_at"),
    Index("ix_delivery_attempts_outbox_id", "outbox_id"),
)


# --- connecting in a browser (migration 7, ADR 13) ---------------------------------------------------------

#: A connect link: for a new connection (``connection_id`` NULL until it completes) or to reconnect one.
#: Only the SHA-256 of the link's secret is stored; an email's signed link gets a row on its first use,
#: keyed by its token's digest, so it too works once.
connect_sessions = Table(
    "connect_sessions",
    metadata,
    Column("id", ID, primary_key=True),
    _tenant_fk(),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("provider_id", ID, ForeignKey("providers.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("email", String(320), nullable=True),
    Column("connection_id", ID, ForeignKey("connections.id", ondelete="CASCADE"), nullable=True),
    Column("return_to", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
)

#: One trip to the provider's authorization endpoint: the ``state`` (its digest), the browser it belongs to
#: (its cookie's digest), and the PKCE verifier, sealed. Used once, by the callback.
authorization_requests = Table(
    "authorization_requests",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column(
        "session_id",
        ID,
        ForeignKey("connect_sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("browser_hash", String(64), nullable=False),
    Column("code_verifier_enc", Text, nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("return_to", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)
