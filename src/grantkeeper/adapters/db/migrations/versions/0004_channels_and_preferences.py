"""Slack, Discord and webhook destinations, per-user preferences, and outbox rows that stand alone.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-15

An outbox row is now one event for one destination: it carries its tenant (backfilled from its notification),
its destination, the email address it goes to, and for webhooks the event type and the body, rendered once so
every resend is byte-identical. Webhook events with no user notification behind them (``workflow.paused``,
``provider.config_error``) make ``notification_id`` nullable. SQLite alters the outbox by rebuilding it
(Alembic batch mode); the table is small, delivered rows being history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "destinations",
        sa.Column("id", ID, nullable=False),
        sa.Column(
            "tenant_id",
            ID,
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_destinations_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(255), nullable=True),
        sa.Column("url_enc", sa.Text(), nullable=False),
        sa.Column("url_hint", sa.String(300), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("kind IN ('slack', 'discord', 'webhook')", name="ck_destinations_kind"),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="ck_destinations_status"),
        sa.PrimaryKeyConstraint("id", name="pk_destinations"),
    )
    op.create_index("ix_destinations_tenant_kind", "destinations", ["tenant_id", "kind"])
    op.create_table(
        "user_preferences",
        sa.Column(
            "tenant_id",
            ID,
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_user_preferences_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("email_address", sa.String(320), nullable=True),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("slack", sa.Boolean(), nullable=False),
        sa.Column("discord", sa.Boolean(), nullable=False),
        sa.Column("warning_email", sa.String(16), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint(
            "warning_email IN ('immediate', 'digest', 'never')", name="ck_user_preferences_warning_email"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name="pk_user_preferences"),
    )
    op.add_column("outbox", sa.Column("tenant_id", ID, nullable=True))
    op.execute(
        "UPDATE outbox SET tenant_id = "
        "(SELECT notifications.tenant_id FROM notifications WHERE notifications.id = outbox.notification_id)"
    )
    op.add_column("outbox", sa.Column("destination_id", ID, nullable=True))
    op.add_column("outbox", sa.Column("recipient", sa.String(320), nullable=True))
    op.add_column("outbox", sa.Column("event", sa.String(64), nullable=True))
    op.add_column("outbox", sa.Column("payload", JSON_DOCUMENT, nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("tenant_id", existing_type=ID, nullable=False)
        batch.alter_column("notification_id", existing_type=ID, nullable=True)
        batch.create_foreign_key(
            "fk_outbox_tenant_id_tenants", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            "fk_outbox_destination_id_destinations",
            "destinations",
            ["destination_id"],
            ["id"],
            ondelete="CASCADE",
        )
    op.create_index("ix_outbox_destination_id", "outbox", ["destination_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_destination_id", "outbox")
    op.execute("DELETE FROM outbox WHERE notification_id IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint("fk_outbox_destination_id_destinations", type_="foreignkey")
        batch.drop_constraint("fk_outbox_tenant_id_tenants", type_="foreignkey")
        batch.alter_column("notification_id", existing_type=ID, nullable=False)
        batch.drop_column("payload")
        batch.drop_column("event")
        batch.drop_column("recipient")
        batch.drop_column("destination_id")
        batch.drop_column("tenant_id")
    op.drop_table("user_preferences")
    op.drop_table("destinations")
