"""Providers may name their issuer identifier, which every connect callback must then carry (RFC 9207).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

A callback whose ``iss`` is missing or names another authorization server is refused before its code is
redeemed: the defence against mix-up attacks (RFC 9207, RFC 9700 section 4.4), ADR 15. Providers made before
this migration have none and are checked as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("issuer", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("issuer")
