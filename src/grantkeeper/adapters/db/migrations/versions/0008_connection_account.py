"""Connections remember which provider account they belong to; providers say where an answer names it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28

A reconnect whose user signs in to another account at the provider is refused instead of silently moving the
connection (and every workflow on it) to that account (``core.accounts``, ADR 13). Rows made before this
migration, or by an import, learn their account at their first connect flow.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("account_field", sa.String(length=200), nullable=True))
    op.add_column("connections", sa.Column("account_id", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("account_id")
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("account_field")
