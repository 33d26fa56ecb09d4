"""Providers gain an RFC 7662 introspection endpoint; the index of attempts in flight leads with their start.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28

Before retrying a connection whose last answer was lost with its worker, the worker asks the provider whether
the stored refresh token still works (ADR 12): a dead token is a lost rotation, named without sending it (a
strict provider would take that request as a reuse); a live one is refreshed as usual.

``ix_connections_in_flight`` (provider, start) becomes ``ix_connections_in_flight_since`` (start, provider):
a claim now takes the rows left in flight first, oldest first, before the due backlog (ADR 11), and only an
index in that order serves it (PostgreSQL otherwise walks every due row of ``ix_connections_due``). The
per-provider concurrency count reads the same small partial index.
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
    op.drop_index("ix_connections_in_flight", table_name="connections")
    op.create_index(
        "ix_connections_in_flight_since",
        "connections",
        ["in_flight_since", "provider_id"],
        postgresql_where=sa.text("in_flight_since IS NOT NULL"),
        sqlite_where=sa.text("in_flight_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_connections_in_flight_since", table_name="connections")
    op.create_index(
        "ix_connections_in_flight",
        "connections",
        ["provider_id", "in_flight_since"],
        postgresql_where=sa.text("in_flight_since IS NOT NULL"),
        sqlite_where=sa.text("in_flight_since IS NOT NULL"),
    )
    with op.batch_alter_table("providers") as batch:
        batch.drop_column("introspection_url")
