"""Outbox delivery: a lease on each outbox row and a log of delivery attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2025-04-01

The lease columns are nullable additions, which SQLite's ``ALTER TABLE ADD COLUMN`` handles without a table
rebuild. ``delivery_attempts.error`` is short on purpose: it holds a reason (``smtp_550``, an exception type),
never a message body or a token.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.String(32)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("outbox", sa.Column("lease_owner", sa.String(200), nullable=True))
    op.add_column("outbox", sa.Column("lease_expires_at", TIMESTAMP, nullable=True))
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "outbox_id",
            ID,
            sa.ForeignKey("outbox.id", ondelete="CASCADE", name="fk_delivery_attempts_outbox_id_outbox"),
            nullable=False,
        ),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("attempted_at", TIMESTAMP, nullable=False),
        sa.Column("is_delivered", sa.Boolean(), nullable=False),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_attempts"),
    )
    op.create_index(
        "ix_delivery_attempts_tenant_attempted", "delivery_attempts", ["tenant_id", "attempted_at"]
    )
    op.create_index("ix_delivery_attempts_outbox_id", "delivery_attempts", ["outbox_id"])


def downgrade() -> None:
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
