"""The refresh path's three statements, sent to the driver directly: claim due rows, mark starts, commit.

Each runs thousands of times a second in a busy worker, and a profile put SQLAlchemy's per-row work (binding
and processing about ten instants per connection through the generic type chain) above the database's own.
So these statements are plain SQL per dialect, run with ``exec_driver_sql``: values go in already in the
driver's form (instants converted once per batch where they are shared) and come out raw, converted here.
On SQLite they skip even ``exec_driver_sql`` and go to the ``sqlite3`` connection itself
(``engine.on_sqlite``): its result and event machinery cost about as much as SQLite's own work for a
tick's small statements (``docs/benchmarks.md``, tenth session). Everything else in the store stays on
SQLAlchemy Core; the column types' formats are the same (``types.UTCDateTime``), which
``tests/integration/test_store_hotpath.py`` checks against the Core path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection

from grantkeeper.adapters.db.engine import on_sqlite
from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionState, ConnectionStatus, DisconnectReason, ErrorInfo

if TYPE_CHECKING:
    from grantkeeper.adapters.db.leases import Lease

#: The columns a claim returns, in order: what a refresh needs and nothing else (no access token).
CLAIM_COLUMNS = (
    "id", "tenant_id", "provider_id", "user_id", "email", "refresh_token_enc", "version", "lease_owner",
    "lease_expires_at", "status", "consecutive_failures", "consecutive_transient_failures",
    "last_refreshed_at", "last_failure_at", "failing_since", "last_error_code", "last_error_description",
    "disconnect_reason", "expires_at", "next_attempt_at", "warning_sent", "rate_limit_notice_sent",
    "in_flight_since",
)  # fmt: skip

# The due rows are picked and locked by a subquery run once (PostgreSQL's ``= ANY(ARRAY(...))`` is an
# InitPlan; SQLite's ``IN (...)`` a list built first) and updated through their physical address (``ctid``,
# ``rowid``): the UPDATE goes straight to each row instead of joining the picked ids back through the
# primary key: 1,000 index probes, about half of the statement on PostgreSQL (``docs/benchmarks.md``, ADR 17).
# A ``ctid`` is safe to hold within the statement because the row is locked from the pick to the update.
# On PostgreSQL a row changed and committed after the statement's snapshot is locked in its newest version
# when it still qualifies, and that version is not visible to the UPDATE, so it is left for the next claim:
# never taken twice, never lost.
_CLAIM = """UPDATE connections SET lease_owner = :owner, version = connections.version + 1,
lease_expires_at = CASE WHEN connections.in_flight_since IS NULL THEN :expires_at ELSE :rescue_expires_at END
WHERE {address}{in_}(
SELECT {address} FROM connections AS due_connections
WHERE status = 'connected' AND next_attempt_at <= :due_at
AND (lease_expires_at IS NULL OR lease_expires_at < :now){tenant}{skip}
ORDER BY next_attempt_at LIMIT :limit{lock}){close}
RETURNING {columns}"""

# Rows left in flight first, whatever their due time: their retry races the provider's rotation grace window,
# and a worker running behind has older due rows queued ahead of them. Two steps: the ids of the rows with
# ``in_flight_since`` set, from ``ix_connections_in_flight_since`` alone (those in flight now, a few per
# worker, and those a dead worker left: a small index read, and usually the end of it), then a claim of
# those ids by primary key. The claim's conditions are wrapped in ``(...) IS TRUE`` so that no index can serve
# them and the primary key is the only way in: written plainly, both databases planned them on
# ``ix_connections_due`` (PostgreSQL's estimates for a column nearly always NULL), walking every due row to
# find a handful.
_IN_FLIGHT_IDS = """SELECT id FROM connections{indexed}
WHERE in_flight_since IS NOT NULL ORDER BY in_flight_since LIMIT 1000"""
_RESCUE = """WITH rescued_connections AS MATERIALIZED (
SELECT id FROM connections WHERE {ids}
AND (in_flight_since IS NOT NULL AND status = 'connected' AND next_attempt_at <= :due_at
AND (lease_expires_at IS NULL OR lease_expires_at < :now){tenant}) IS TRUE
ORDER BY in_flight_since LIMIT :limit{lock})
UPDATE connections SET lease_owner = :owner, version = connections.version + 1,
lease_expires_at = :rescue_expires_at
FROM rescued_connections WHERE connections.id = rescued_connections.id
RETURNING {columns}"""

_MARK = """UPDATE connections SET in_flight_since = :at, lease_expires_at = :deadline_at
WHERE id = :id AND version = :version AND lease_owner = :owner"""

_INSERT_ATTEMPT = """INSERT INTO refresh_attempts
(connection_id, tenant_id, provider_id, attempted_at, outcome, http_status, error_code, duration_ms)
VALUES (:connection_id, :tenant_id, :provider_id, :attempted_at, :outcome, :http_status, :error_code,
:duration_ms)"""

_NAMED = re.compile(r":([a-z_][a-z0-9_]*)")
_STATUSES = {status.value: status for status in ConnectionStatus}
_T = TypeVar("_T")


def built(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of a frozen dataclass made from all its field values, without calling its ``__init__``.

    A claim makes two such objects per row (the claim and its state), 1,000 rows per batch: the generated
    ``__init__`` of a frozen dataclass sets each field through ``object.__setattr__`` (3.9 µs for the state's
    13 fields, against 0.6 µs here; ``docs/benchmarks.md``). Only for classes without ``__post_init__`` or
    validation; ``tests/integration/test_store_hotpath.py`` checks that every field is given."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", values)
    return instance


def _sqlite_time_in(value: datetime) -> str:
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("the store refuses a naive datetime; pass an aware one (e.g. datetime.now(UTC))")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without the "+00:00" SQLAlchemy's format never had


def _sqlite_time_out(value: str | None) -> datetime | None:
    # one C call: parsing the offset yields the ``UTC`` singleton, 5x cheaper than ``.replace(tzinfo=UTC)``
    return None if value is None else datetime.fromisoformat(value + "+00:00")


def _postgresql_time_in(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("the store refuses a naive datetime; pass an aware one (e.g. datetime.now(UTC))")
    return value


def _postgresql_time_out(value: datetime | None) -> datetime | None:
    # the session's time zone is UTC (``engine``), so psycopg hands out the ``UTC`` singleton already
    if value is None or value.tzinfo is UTC:
        return value
    return value.astimezone(UTC)


@dataclass(frozen=True)
class HotPath:
    """The dialect's SQL text and value converters; one per engine dialect (``for_dialect``)."""

    dialect: str
    time_in: Callable[[datetime], Any]
    time_out: Callable[[Any], datetime | None]

    def sql(self, text: str) -> str:
        """``:name`` placeholders in the driver's style (sqlite3 takes them as they are; psycopg wants
        ``%(name)s``)."""
        return text if self.dialect == "sqlite" else _NAMED.sub(r"%(\1)s", text)

    def optional_time(self, value: datetime | None) -> Any:
        return None if value is None else self.time_in(value)

    def rows(self, connection: Connection, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
        """All rows of one statement, as tuples or tuple-like rows."""
        if self.dialect == "sqlite":
            values = parameters or {}
            return on_sqlite(connection, sql, values, lambda db: db.execute(sql, values).fetchall())
        return list(connection.exec_driver_sql(sql, parameters).all())

    def changed(self, connection: Connection, sql: str, rows: list[dict[str, Any]]) -> int:
        """Run one statement once per parameter set (one pipelined round trip on PostgreSQL); rows changed."""
        if self.dialect == "sqlite":
            return on_sqlite(connection, sql, rows, lambda db: db.executemany(sql, rows).rowcount)
        return int(connection.exec_driver_sql(sql, rows).rowcount)

    def run(self, connection: Connection, sql: str) -> None:
        """A statement without parameters or rows (savepoints)."""
        if self.dialect == "sqlite":
            on_sqlite(connection, sql, None, lambda db: db.execute(sql))
        else:
            connection.exec_driver_sql(sql)

    # --- claim -------------------------------------------------------------------------------------------

    @functools.cached_property
    def _claim_parts(self) -> dict[str, str]:
        """What every claim statement of the dialect shares: the RETURNING list and the row lock."""
        prefix = "connections." if self.dialect == "postgresql" else ""
        return {
            "columns": ", ".join(prefix + name for name in CLAIM_COLUMNS),
            "lock": "\nFOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else "",
        }

    @functools.cached_property
    def _claim_address(self) -> dict[str, str]:
        """How ``_CLAIM`` names the picked rows: ``ctid`` in an array (PostgreSQL), ``rowid`` (SQLite)."""
        if self.dialect == "postgresql":
            return {"address": "ctid", "in_": " = ANY(ARRAY", "close": ")"}
        return {"address": "rowid", "in_": " IN ", "close": ""}

    @functools.cached_property
    def _claim_sql(self) -> dict[tuple[bool, bool], str]:
        return {
            (has_tenant, skips): self.sql(
                _CLAIM.format(
                    tenant="\nAND tenant_id = :tenant_id" if has_tenant else "",
                    skip="\nAND in_flight_since IS NULL" if skips else "",
                    **self._claim_parts,
                    **self._claim_address,
                )
            )
            for has_tenant in (False, True)
            for skips in (False, True)
        }

    @functools.cached_property
    def _in_flight_ids_sql(self) -> str:
        indexed = " INDEXED BY ix_connections_in_flight_since" if self.dialect == "sqlite" else ""
        return self.sql(_IN_FLIGHT_IDS.format(indexed=indexed))

    def _rescue_sql(self, has_tenant: bool, count: int) -> str:
        """For ``count`` candidate ids: an array parameter on PostgreSQL, a list of placeholders on SQLite
        (both read the primary key)."""
        ids = (
            "id = ANY(:ids)"
            if self.dialect == "postgresql"
            else "id IN ({})".format(", ".join(f":id{i}" for i in range(count)))
        )
        tenant = "\nAND tenant_id = :tenant_id" if has_tenant else ""
        return self.sql(_RESCUE.format(ids=ids, tenant=tenant, **self._claim_parts))

    def _rescue(self, connection: Connection, parameters: dict[str, Any], has_tenant: bool) -> list[Any]:
        candidates = [row[0] for row in self.rows(connection, self._in_flight_ids_sql)]
        if not candidates:
            return []
        if self.dialect == "postgresql":
            values = parameters | {"ids": candidates}
        else:
            values = parameters | {f"id{i}": value for i, value in enumerate(candidates)}
        sql = self._rescue_sql(has_tenant, len(candidates))
        return self.rows(connection, sql, values)

    def claim(
        self,
        connection: Connection,
        due_at: datetime,
        lease: Lease,
        limit: int,
        tenant_id: str | None,
        *,
        skip_in_flight: bool = False,
    ) -> Sequence[Any]:
        """Lease up to ``limit`` rows due at ``due_at`` and free at the lease's start: rows left in flight
        first (``_RESCUE``), then the oldest due; raw rows in ``CLAIM_COLUMNS`` order. Rows left in flight
        get the lease's rescue expiry (see ``leases.claim_due``), or are skipped."""
        parameters: dict[str, Any] = {
            "due_at": self.time_in(due_at),
            "now": self.time_in(lease.now),
            "expires_at": self.time_in(lease.expires_at),
            "rescue_expires_at": self.time_in(lease.rescue_expires_at),
            "owner": lease.owner,
            "limit": limit,
        }
        if tenant_id is not None:
            parameters["tenant_id"] = tenant_id
        rows: list[Any] = []
        if not skip_in_flight:
            rows = self._rescue(connection, parameters, tenant_id is not None)
            if len(rows) >= limit:
                return rows
            parameters["limit"] = limit - len(rows)
        sql = self._claim_sql[tenant_id is not None, skip_in_flight]
        return rows + self.rows(connection, sql, parameters)

    def state(self, row: Sequence[Any]) -> ConnectionState:
        """A claimed row's policy state (the columns from ``status`` on, in ``CLAIM_COLUMNS`` order)."""
        (
            status, failures, transient, refreshed_at, failed_at, failing_since, error_code,
            error_description, reason, expires_at, next_attempt_at, warned, noticed, in_flight_since,
        ) = row[9:]  # fmt: skip
        time_out = self.time_out
        return built(
            ConnectionState,
            {
                "status": _STATUSES[status],
                "consecutive_failures": failures,
                "consecutive_transient_failures": transient,
                "last_refreshed_at": time_out(refreshed_at),
                "last_failure_at": time_out(failed_at),
                "failing_since": time_out(failing_since),
                "last_error": None if error_code is None else ErrorInfo(error_code, error_description or ""),
                "disconnect_reason": None if reason is None else DisconnectReason(reason),
                "expires_at": time_out(expires_at),
                "next_attempt_at": time_out(next_attempt_at),
                "warning_sent": bool(warned),
                "rate_limit_notice_sent": bool(noticed),
                "in_flight_since": time_out(in_flight_since),
            },
        )

    # --- starts ------------------------------------------------------------------------------------------

    @functools.cached_property
    def _mark_sql(self) -> str:
        return self.sql(_MARK)

    def mark(self, connection: Connection, rows: list[dict[str, Any]]) -> int:
        """Mark claims in flight (``id``, ``version``, ``owner``, ``at``, ``deadline_at`` each, the instants
        already converted); returns how many rows changed in all."""
        return self.changed(connection, self._mark_sql, rows)

    # --- commits -----------------------------------------------------------------------------------------

    @functools.lru_cache(maxsize=16)  # noqa: B019 - one HotPath per dialect, alive for the process
    def update_sql(self, columns: tuple[str, ...]) -> str:
        """The fenced UPDATE of an attempt's state and tokens (as ``commits._fenced_update``)."""
        unknown = set(columns) - set(connections.c.keys())
        if unknown:  # names come from ``rows.state_values``, never from input; this keeps it that way
            raise ValueError(f"not columns of connections: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = :{name}" for name in columns)
        return self.sql(
            f"UPDATE connections SET {assignments}, lease_owner = NULL, lease_expires_at = NULL, "  # noqa: S608
            "version = version + 1, updated_at = :updated_at "
            "WHERE id = :fence_id AND (version = :fence_version AND lease_owner = :fence_owner "
            "OR in_flight_since = :fence_started_at)"
        )

    def update(self, connection: Connection, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> int:
        return self.changed(connection, self.update_sql(columns), rows)

    # --- savepoints --------------------------------------------------------------------------------------

    def savepoint(self, connection: Connection) -> None:
        """Open a savepoint with plain SQL; ``begin_nested`` costs several times more in Python, and the
        refresh path opens one or two per batch. Ended by ``release`` or ``rollback_to``; never nested."""
        self.run(connection, "SAVEPOINT gk_hot_batch")

    def release(self, connection: Connection) -> None:
        self.run(connection, "RELEASE SAVEPOINT gk_hot_batch")

    def rollback_to(self, connection: Connection) -> None:
        """Undo what ran since ``savepoint`` (the transaction goes on) and end the savepoint."""
        self.run(connection, "ROLLBACK TO SAVEPOINT gk_hot_batch")
        self.run(connection, "RELEASE SAVEPOINT gk_hot_batch")

    @functools.cached_property
    def _insert_attempt_sql(self) -> str:
        return self.sql(_INSERT_ATTEMPT)

    def insert_attempts(self, connection: Connection, rows: list[dict[str, Any]]) -> None:
        self.changed(connection, self._insert_attempt_sql, rows)


_SQLITE = HotPath("sqlite", _sqlite_time_in, _sqlite_time_out)
_POSTGRESQL = HotPath("postgresql", _postgresql_time_in, _postgresql_time_out)


def for_connection(connection: Connection) -> HotPath:
    return _SQLITE if connection.dialect.name == "sqlite" else _POSTGRESQL
