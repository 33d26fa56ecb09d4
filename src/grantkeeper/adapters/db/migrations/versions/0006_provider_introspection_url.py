"""Providers gain an RFC 7662 introspection endpoint.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

Before retrying a connection whose last answer was lost with its worker, the worker asks the provider whether
the stored refresh token still works (ADR 12): a dead token is a lost rotation, named without sending it (a
strict provider would take that request as a reuse); a live one is refreshed as usual.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("introspection_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("introspection_url")
