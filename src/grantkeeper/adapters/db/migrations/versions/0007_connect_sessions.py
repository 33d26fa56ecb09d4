"""Connecting in a browser: connect sessions, authorization requests, and providers' extra parameters.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

A connect link (for a new connection, or to reconnect one) is a ``connect_sessions`` row keyed by the digest
of the link's secret; each trip to the provider's authorization endpoint is an ``authorization_requests`` row
keyed by the digest of its ``state``, bound to the browser's cookie and holding the sealed PKCE verifier
(ADR 13). ``providers.authorize_params`` holds extra authorization parameters (``access_type=offline`` ...).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("providers", sa.Column("authorize_params", _JSON, nullable=True))
    op.create_table(
        "connect_sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("connection_id", sa.String(32), nullable=True),
        sa.Column("return_to", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_connect_sessions_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name="fk_connect_sessions_provider_id_providers",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name="fk_connect_sessions_connection_id_connections",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_connect_sessions"),
        sa.UniqueConstraint("secret_hash", name="uq_connect_sessions_secret_hash"),
    )
    op.create_table(
        "authorization_requests",
        sa.Column("state_hash", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("code_verifier_enc", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("return_to", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("used_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["connect_sessions.id"],
            name="fk_authorization_requests_session_id_connect_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("state_hash", name="pk_authorization_requests"),
    )
    op.create_index("ix_authorization_requests_session_id", "authorization_requests", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_authorization_requests_session_id", table_name="authorization_requests")
    op.drop_table("authorization_requests")
    op.drop_table("connect_sessions")
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("authorize_params")
