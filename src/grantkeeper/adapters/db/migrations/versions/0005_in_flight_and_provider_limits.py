"""Attempts recorded in flight, and per-provider concurrency and rate limits that hold across workers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

``connections.in_flight_since`` is written just before a refresh request leaves and cleared with its result;
found set by the next attempt, it means a worker died with an answer we never stored (a possibly lost
rotation). Two partial indexes: the attempts in flight, for the per-provider concurrency count, and the
connections backing off from transient failures, which a provider's recovery makes due at once; each holds
only the few rows concerned. ``providers`` gains the operator's limits and the token bucket that enforces the
rate limit (its level and when it was last refilled).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("connections", sa.Column("in_flight_since", TIMESTAMP, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # room on each page, so the frequent lease updates stay on their page (HOT, no new index entries):
        # a million-row claim dirtied 6,900 pages without it and 1,000 with it (docs/benchmarks.md); pages
        # written before take it on their next rewrite (VACUUM FULL), new ones at once
        op.execute("ALTER TABLE connections SET (fillfactor = 80)")
    op.create_index(
        "ix_connections_in_flight",
        "connections",
        ["provider_id", "in_flight_since"],
        postgresql_where=sa.text("in_flight_since IS NOT NULL"),
        sqlite_where=sa.text("in_flight_since IS NOT NULL"),
    )
    op.create_index(
        "ix_connections_transient",
        "connections",
        ["provider_id", "next_attempt_at"],
        postgresql_where=sa.text("consecutive_transient_failures > 0"),
        sqlite_where=sa.text("consecutive_transient_failures > 0"),
    )
    op.add_column("providers", sa.Column("max_concurrency", sa.Integer(), nullable=True))
    op.add_column("providers", sa.Column("rate_limit_per_second", sa.Float(), nullable=True))
    op.add_column("providers", sa.Column("rate_tokens", sa.Float(), nullable=True))
    op.add_column("providers", sa.Column("rate_refilled_at", TIMESTAMP, nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE connections RESET (fillfactor)")
    for column in ("rate_refilled_at", "rate_tokens", "rate_limit_per_second", "max_concurrency"):
        with op.batch_alter_table("providers") as batch:
            batch.drop_column(column)
    op.drop_index("ix_connections_transient", table_name="connections")
    op.drop_index("ix_connections_in_flight", table_name="connections")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("in_flight_since")
