"""Indexes for the HTTP API's listings: keyset pages of connections per filter, notifications by read state
and by type.

Revision ID: 0002
Revises: 0001
Create Date: 2025-03-01

``ix_connections_tenant_status`` becomes ``ix_connections_tenant_status_page`` (the same columns plus ``id``),
which serves everything the old one did, so each write still maintains one index for it, not two.
On a large PostgreSQL table ``CREATE INDEX`` blocks writes while it runs; operators with millions of rows may
prefer to create these indexes ``CONCURRENTLY`` by hand first (same names) and then run the migration.
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_CONNECTION_PAGE_INDEXES = {
    "ix_connections_tenant_page": ["tenant_id", "id"],
    "ix_connections_tenant_status_page": ["tenant_id", "status", "id"],
    "ix_connections_tenant_provider_page": ["tenant_id", "provider_id", "id"],
    "ix_connections_tenant_user_page": ["tenant_id", "user_id", "id"],
}
_NOTIFICATION_INDEXES = {
    "ix_notifications_tenant_unread": ["tenant_id", "is_read", "created_at", "id"],
    "ix_notifications_tenant_type": ["tenant_id", "type", "created_at", "id"],
}


def upgrade() -> None:
    for name, columns in _CONNECTION_PAGE_INDEXES.items():
        op.create_index(name, "connections", columns, if_not_exists=True)
    op.drop_index("ix_connections_tenant_status", table_name="connections")
    for name, columns in _NOTIFICATION_INDEXES.items():
        op.create_index(name, "notifications", columns, if_not_exists=True)


def downgrade() -> None:
    for name in _NOTIFICATION_INDEXES:
        op.drop_index(name, table_name="notifications")
    op.create_index("ix_connections_tenant_status", "connections", ["tenant_id", "status"])
    for name in _CONNECTION_PAGE_INDEXES:
        op.drop_index(name, table_name="connections")
