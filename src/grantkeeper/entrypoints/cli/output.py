"""How the CLI prints: JSON (DESIGN section 4 field names, ISO 8601 times with offset) or Rich tables.

Nothing printed here ever holds a token: records handed to these functions have none.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from grantkeeper.ports import AttemptRecord, ConnectionRecord, NotificationRecord, ProviderConfig

# Piped output (a log, a file) is read later, not on an 80-column screen: give tables room.
console = Console() if sys.stdout.isatty() else Console(width=200)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def attempt_dict(record: AttemptRecord) -> dict[str, Any]:
    """One refresh attempt as the CLI prints it (the API's ``AttemptOut`` fields)."""
    return {
        "attempted_at": iso(record.attempted_at),
        "outcome": record.outcome.value,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "duration_ms": round(record.duration.total_seconds() * 1000),
    }


def connection_dict(record: ConnectionRecord) -> dict[str, Any]:
    state = record.state
    return {
        "id": record.connection_id,
        "provider": record.provider,
        "user_id": record.user_id,
        "email": record.email,
        "account_id": record.account_id,
        "status": state.status.value,
        "consecutive_failures": state.consecutive_failures,
        "consecutive_transient_failures": state.consecutive_transient_failures,
        "expires_at": iso(state.expires_at),
        "next_attempt_at": iso(state.next_attempt_at),
        "last_refreshed_at": iso(state.last_refreshed_at),
        "last_failure_at": iso(state.last_failure_at),
        "last_error": (
            {"code": state.last_error.code, "description": state.last_error.description}
            if state.last_error
            else None
        ),
        "disconnect_reason": state.disconnect_reason.value if state.disconnect_reason else None,
        "created_at": iso(record.created_at),
    }


def notification_dict(record: NotificationRecord) -> dict[str, Any]:
    return {
        "id": record.notification_id,
        "type": record.type.value,
        "title": record.title,
        "message": record.message,
        "is_read": record.is_read,
        "created_at": iso(record.created_at),
        "metadata": record.metadata,
        "connection_id": record.connection_id,
        "user_id": record.user_id,
    }


def provider_dict(provider: ProviderConfig) -> dict[str, Any]:
    return {
        "id": provider.provider_id,
        "name": provider.name,
        "token_url": provider.token_url,
        "client_id": provider.client_id,
        "auth_method": provider.auth_method.value,
        "default_expires_in": provider.default_expires_in,
        "authorize_url": provider.authorize_url,
        "scopes": provider.scopes,
        "authorize_params": provider.authorize_params or {},
        "account_field": provider.account_field,
        "issuer": provider.issuer,
        "revocation_url": provider.revocation_url,
        "introspection_url": provider.introspection_url,
        "max_concurrency": provider.max_concurrency,
        "rate_limit_per_second": provider.rate_limit_per_second,
        "flagged_at": iso(provider.flagged_at),
        "flag_reason": provider.flag_reason,
    }


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column, overflow="fold")  # ids and errors wrap rather than lose their ends
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    return grid


def connections_table(records: Sequence[Mapping[str, Any]], title: str = "Connections") -> Table:
    columns = ("id", "provider", "user_id", "status", "failures", "transient", "expires_at", "last_error")
    rows = (
        (
            r["id"],
            r["provider"],
            r["user_id"],
            r["status"],
            r["consecutive_failures"],
            r["consecutive_transient_failures"],
            (r["expires_at"] or "")[:19],
            (r["last_error"] or {}).get("code"),
        )
        for r in records
    )
    return table(title, columns, rows)


def notifications_table(records: Sequence[Mapping[str, Any]], title: str = "Notifications") -> Table:
    rows = (
        (r["created_at"], r["type"], r["metadata"].get("provider"), r["user_id"], r["title"], r["is_read"])
        for r in records
    )
    return table(title, ("created_at", "type", "provider", "user_id", "title", "read"), rows)
