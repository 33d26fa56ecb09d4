"""Initial schema: tenants, providers, connections (the work queue), workflows, notifications, outbox and
refresh attempts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out by hand rather than imported from ``tables.py``: a migration must keep creating what it created on
the day it shipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
TIMESTAMP = sa.DateTime(timezone=True)


def _tenant_fk(table: str) -> sa.Column[str]:
    return sa.Column(
        "tenant_id",
        ID,
        sa.ForeignKey("tenants.id", ondelete="CASCADE", name=f"fk_{table}_tenant_id_tenants"),
        nullable=False,
    )


def upgrade() -> None:
    _create_tenants_and_providers()
    _create_connections()
    _create_workflows()
    _create_notifications_and_outbox()
    _create_refresh_attempts()


def _create_tenants_and_providers() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("api_key_hash", sa.String(128), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
        sa.UniqueConstraint("api_key_hash", name="uq_tenants_api_key_hash"),
    )
    op.create_table(
        "providers",
        sa.Column("id", ID, nullable=False),
        _tenant_fk("providers"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_url", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("client_secret_enc", sa.Text(), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("default_expires_in", sa.Integer(), nullable=False),
        sa.Column("authorize_url", sa.Text(), nullable=True),
        sa.Column("revocation_url", sa.Text(), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=True),
        sa.Column("flagged_at", TIMESTAMP, nullable=True),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_providers"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_providers_tenant_id_name"),
    )


def _create_connections() -> None:
    op.create_table(
        "connections",
        sa.Column("id", ID, nullable=False),
        _tenant_fk("connections"),
        sa.Column(
            "provider_id",
            ID,
            sa.ForeignKey("providers.id", name="fk_connections_provider_id_providers"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("expires_at", TIMESTAMP, nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("consecutive_transient_failures", sa.Integer(), nullable=False),
        sa.Column("last_refreshed_at", TIMESTAMP, nullable=True),
        sa.Column("last_failure_at", TIMESTAMP, nullable=True),
        sa.Column("failing_since", TIMESTAMP, nullable=True),
        sa.Column("last_error_code", sa.String(200), nullable=True),
        sa.Column("last_error_description", sa.Text(), nullable=True),
        sa.Column("disconnect_reason", sa.String(32), nullable=True),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("warning_sent", sa.Boolean(), nullable=False),
        sa.Column("rate_limit_notice_sent", sa.Boolean(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        sa.CheckConstraint(
            "status IN ('connected', 'needs_reauthorization', 'revoked')", name="ck_connections_status"
        ),
    )
    op.create_index("ix_connections_due", "connections", ["status", "next_attempt_at"])
    op.create_index("ix_connections_owner", "connections", ["tenant_id", "provider_id", "user_id"])
    op.create_index("ix_connections_tenant_status", "connections", ["tenant_id", "status"])


def _create_workflows() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", ID, nullable=False),
        _tenant_fk("workflows"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("paused_reason", sa.String(64), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_workflows"),
        sa.CheckConstraint("status IN ('active', 'paused')", name="ck_workflows_status"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_workflows_tenant_id_name"),
    )
    op.create_table(
        "workflow_connections",
        sa.Column(
            "workflow_id",
            ID,
            sa.ForeignKey(
                "workflows.id", ondelete="CASCADE", name="fk_workflow_connections_workflow_id_workflows"
            ),
            nullable=False,
        ),
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey(
                "connections.id", ondelete="CASCADE", name="fk_workflow_connections_connection_id_connections"
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("workflow_id", "connection_id", name="pk_workflow_connections"),
    )
    op.create_index("ix_workflow_connections_connection_id", "workflow_connections", ["connection_id"])


def _create_notifications_and_outbox() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", ID, nullable=False),
        _tenant_fk("notifications"),
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey(
                "connections.id", ondelete="SET NULL", name="fk_notifications_connection_id_connections"
            ),
            nullable=True,
        ),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
    )
    op.create_index("ix_notifications_tenant_created", "notifications", ["tenant_id", "created_at"])
    op.create_table(
        "outbox",
        sa.Column("id", ID, nullable=False),
        sa.Column(
            "notification_id",
            ID,
            sa.ForeignKey(
                "notifications.id", ondelete="CASCADE", name="fk_outbox_notification_id_notifications"
            ),
            nullable=False,
        ),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_outbox_status"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_notification_id", "outbox", ["notification_id"])


def _create_refresh_attempts() -> None:
    op.create_table(
        "refresh_attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "connection_id",
            ID,
            sa.ForeignKey(
                "connections.id", ondelete="CASCADE", name="fk_refresh_attempts_connection_id_connections"
            ),
            nullable=False,
        ),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("provider_id", ID, nullable=False),
        sa.Column("attempted_at", TIMESTAMP, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(200), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_attempts"),
    )
    op.create_index(
        "ix_refresh_attempts_connection_attempted", "refresh_attempts", ["connection_id", "attempted_at"]
    )


def downgrade() -> None:
    for table in (
        "refresh_attempts",
        "outbox",
        "notifications",
        "workflow_connections",
        "workflows",
        "connections",
        "providers",
        "tenants",
    ):
        op.drop_table(table)
