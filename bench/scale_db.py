"""The database side of ``bench/scale_out.py``: one fresh PostgreSQL database per run, seeding through the
store, the queries the harness watches a run with, and the final audit of every stored token.

Every query the harness makes while workers run goes through ``BenchDb.safe``, which answers None instead of
raising while PostgreSQL is down (the ``db-outage`` scenario stops it on purpose).
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from scale_rig import SandboxProc
from sqlalchemy import Connection, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from support import CLIENT_ID, CLIENT_SECRET, PG_SERVER

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import migrate
from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.adapters.db.tables import connections, notifications, refresh_attempts
from grantkeeper.core.model import ConnectionStatus, DisconnectReason, NotificationType
from grantkeeper.core.policy import Policy
from grantkeeper.ports import AuthMethod, NewConnection, NewProvider
from grantkeeper.service import admin

T = TypeVar("T")
_c = connections.c
_a = refresh_attempts.c
_n = notifications.c
CONNECTED = ConnectionStatus.CONNECTED.value
LOST_ROTATION = DisconnectReason.LOST_ROTATION.value


#: Every connection with its committed successful refreshes (none: one row of NULLs).
_WITH_SUCCESSES = connections.outerjoin(
    refresh_attempts, (_a.connection_id == _c.id) & (_a.outcome == "success")
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def owner_pid(lease_owner: str) -> int | None:
    """The pid in a lease owner id (``host:pid:random``, see ``service.cycle.default_owner``)."""
    parts = lease_owner.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


@dataclass
class Audit:
    """Every connection's stored refresh token against the sandbox's current one for its grant."""

    connections: int = 0
    connected: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    tokens_match: int = 0  # stored refresh token == the sandbox's current one, grant not revoked
    silently_broken: int = 0  # connected, but the stored token is stale or the grant is revoked
    lost_truth: int = 0  # the sandbox rotated past our token or revoked the grant: the rotation was lost
    lost_identified: int = 0  # of those, marked disconnect_reason = lost_rotation
    lost_rotation_rows: int = 0  # rows marked lost_rotation
    lost_rotation_false: int = 0  # marked lost_rotation although our token is still the current one
    other_disconnected: int = 0  # not connected for any other reason: a false disconnection here
    lost_grants: dict[str, str] = field(default_factory=dict)  # connection id -> grant id, rotation lost

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["by_status"], data["by_reason"] = dict(self.by_status), dict(self.by_reason)
        del data["lost_grants"]
        return data


class BenchDb:
    """A new database ``bench_scale_<label>_<pid>_<hex>``, migrated, with one tenant; dropped by ``close``."""

    def __init__(self, label: str, *, keep: bool = False) -> None:
        self.name = f"bench_scale_{label}_{os.getpid()}_{secrets.token_hex(2)}"
        self.keep = keep
        self._admin = make_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        self.url = f"{PG_SERVER}/{self.name}"
        self.key_line = generate_key_line("scale")
        self.engine = make_engine(self.url, pool_size=4, max_overflow=4)
        migrate(self.engine)
        self.store = SqlStore(self.engine, Keyring.parse(self.key_line))
        self.tenant_id = self.store.ensure_tenant("default")

    def worker_url(self, app_name: str) -> str:
        """The URL a worker gets: ``application_name`` tells the harness which worker a session is."""
        return f"{self.url}?application_name={app_name}"

    def close(self) -> None:
        self.engine.dispose()
        if not self.keep:
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()

    # --- seeding ---------------------------------------------------------------------------------------

    def seed(
        self,
        sandbox: SandboxProc,
        grants: Sequence[dict[str, Any]],
        *,
        expires_at: Callable[[int], datetime],
        policy: Policy | None = None,
        max_concurrency: int | None = None,
        rate_limit_per_second: float | None = None,
        introspection: bool = False,
        workflows: Callable[[int], tuple[str, ...]] | None = None,
    ) -> None:
        """One provider (the sandbox) and a connection per grant, imported through the service layer.

        ``user_id`` is the grant id, so the audit finds each connection's grant; ``expires_at(i)`` is the
        i-th access token's expiry, which schedules the connection (due ``refresh_lead`` before it);
        ``workflows(i)`` names the workflows the i-th connection is linked to (made on first mention)."""
        provider = NewProvider(
            "sandbox", sandbox.token_url, CLIENT_ID, CLIENT_SECRET, AuthMethod.CLIENT_SECRET_BASIC,
            max_concurrency=max_concurrency, rate_limit_per_second=rate_limit_per_second,
            introspection_url=(
                sandbox.token_url.replace("/oauth/token", "/oauth/introspect") if introspection else None
            ),
        )  # fmt: skip
        admin.add_provider(self.store, self.tenant_id, provider)
        rows = [
            NewConnection(
                "sandbox",
                g["grant_id"],
                g["refresh_token"],
                g["access_token"],
                expires_at=expires_at(i),
                workflows=workflows(i) if workflows is not None else (),
            )
            for i, g in enumerate(grants)
        ]
        for start in range(0, len(rows), 5000):
            admin.import_rows(
                self.store, self.tenant_id, rows[start : start + 5000], policy or Policy(), SystemClock()
            )

    # --- watching a run ----------------------------------------------------------------------------------

    def safe(self, query: Callable[[Connection], T]) -> T | None:
        """Run ``query`` in its own transaction; None when the database does not answer."""
        try:
            with self.engine.begin() as conn:
                return query(conn)
        except (DBAPIError, OSError):
            return None

    def make_due(self, at: datetime) -> int | None:
        """Every connected connection due at ``at``: the start of a round."""
        statement = update(connections).where(_c.status == CONNECTED).values(next_attempt_at=at)
        return self.safe(lambda conn: conn.execute(statement).rowcount)

    def pending(self, since: datetime) -> int | None:
        """Connected connections not refreshed since ``since``."""
        query = select(func.count()).where(
            _c.status == CONNECTED, or_(_c.last_refreshed_at.is_(None), _c.last_refreshed_at < since)
        )
        return self.safe(lambda conn: int(conn.scalar(query) or 0))

    def last_refreshed(self, since: datetime) -> datetime | None:
        query = select(func.max(_c.last_refreshed_at)).where(_c.last_refreshed_at >= since)
        return self.safe(lambda conn: conn.scalar(query))

    def leases_by_pid(self, now: datetime) -> dict[int, tuple[int, int]] | None:
        """Per worker pid: live leases, and how many of them are recorded in flight (sent, not committed)."""
        query = (
            select(_c.lease_owner, func.count(), func.count(_c.in_flight_since))
            .where(_c.lease_owner.is_not(None), _c.lease_expires_at >= now)
            .group_by(_c.lease_owner)
        )

        def run(conn: Connection) -> dict[int, tuple[int, int]]:
            found: dict[int, tuple[int, int]] = {}
            for owner, leased, in_flight in conn.execute(query):
                pid = owner_pid(owner)
                if pid is not None:
                    before = found.get(pid, (0, 0))
                    found[pid] = (before[0] + leased, before[1] + in_flight)
            return found

        return self.safe(run)

    def claimable(self, now: datetime) -> int | None:
        """Connected connections due now that no lease holds: work any worker could take."""
        query = select(func.count()).where(
            _c.status == CONNECTED,
            _c.next_attempt_at <= now,
            or_(_c.lease_expires_at.is_(None), _c.lease_expires_at < now),
        )
        return self.safe(lambda conn: int(conn.scalar(query) or 0))

    def application_names(self) -> set[str]:
        query = text("SELECT application_name FROM pg_stat_activity WHERE datname = current_database()")
        return self.safe(lambda conn: {str(name) for name in conn.scalars(query)}) or set()

    # --- after a run -------------------------------------------------------------------------------------

    def outcomes_between(self, start: datetime, end: datetime | None) -> dict[str, int]:
        query = select(_a.outcome, func.count()).where(_a.attempted_at >= start)
        if end is not None:
            query = query.where(_a.attempted_at < end)
        with self.engine.begin() as conn:
            return {str(outcome): int(n) for outcome, n in conn.execute(query.group_by(_a.outcome))}

    def status_counts(self) -> dict[str, int]:
        query = select(_c.status, _c.disconnect_reason, func.count()).group_by(
            _c.status, _c.disconnect_reason
        )
        with self.engine.begin() as conn:
            return {f"{s}/{r or '-'}": int(n) for s, r, n in conn.execute(query)}

    def notices(self) -> dict[str, Counter[str]]:
        """Per notification type, how many each connection got."""
        query = select(_n.type, _n.connection_id, func.count()).group_by(_n.type, _n.connection_id)
        found: dict[str, Counter[str]] = {kind.value: Counter() for kind in NotificationType}
        with self.engine.begin() as conn:
            for kind, connection_id, n in conn.execute(query):
                found.setdefault(str(kind), Counter())[str(connection_id)] += int(n)
        return found

    def attempts(self, since: datetime) -> list[tuple[str, datetime, str, int]]:
        """(connection id, attempted_at, outcome, duration ms) of every attempt since ``since``."""
        query = (
            select(_a.connection_id, _a.attempted_at, _a.outcome, _a.duration_ms)
            .where(_a.attempted_at >= since)
            .order_by(_a.attempted_at)
        )
        with self.engine.begin() as conn:
            return [(str(r[0]), r[1], str(r[2]), int(r[3])) for r in conn.execute(query)]

    def successes(self) -> dict[str, tuple[str, int]]:
        """Per connection: its grant id and how many successful refreshes were committed for it."""
        query = (
            select(_c.id, _c.user_id, func.count(_a.id))
            .select_from(
                connections.outerjoin(
                    refresh_attempts, (_a.connection_id == _c.id) & (_a.outcome == "success")
                )
            )
            .group_by(_c.id, _c.user_id)
        )
        with self.engine.begin() as conn:
            return {str(cid): (str(grant), int(n)) for cid, grant, n in conn.execute(query)}

    def least_successes(self) -> int | None:
        """The fewest successful refreshes committed for any connected connection."""
        per_connection = (
            select(func.count(_a.id).label("n"))
            .select_from(
                connections.outerjoin(
                    refresh_attempts, (_a.connection_id == _c.id) & (_a.outcome == "success")
                )
            )
            .where(_c.status == CONNECTED)
            .group_by(_c.id)
            .subquery()
        )
        return self.safe(lambda conn: conn.scalar(select(func.min(per_connection.c.n))))

    def connection_ids(self) -> list[str]:
        with self.engine.begin() as conn:
            return [str(i) for i in conn.scalars(select(_c.id))]

    def audit(self, sandbox: SandboxProc) -> Audit:
        """Decrypt each stored refresh token (``SqlStore.read_tokens``) and compare it with the sandbox's
        current refresh token for the grant (``GET /_sandbox/grants/{id}``)."""
        result = Audit()
        query = select(_c.id, _c.user_id, _c.status, _c.disconnect_reason)
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
        for connection_id, grant_id, status, reason in rows:
            stored = self.store.read_tokens(self.tenant_id, connection_id)
            grant = sandbox.call("GET", f"/_sandbox/grants/{grant_id}")
            ours = stored.refresh_token if stored is not None else None
            is_current = ours == grant["refresh_token"] and not grant["revoked"]
            result.connections += 1
            result.by_status[status] += 1
            result.by_reason[reason or "-"] += 1
            result.tokens_match += is_current
            if status == CONNECTED:
                result.connected += 1
                result.silently_broken += not is_current
            elif reason == LOST_ROTATION:
                result.lost_rotation_rows += 1
                result.lost_rotation_false += is_current
            else:
                result.other_disconnected += 1
            if not is_current:
                result.lost_truth += 1
                result.lost_grants[connection_id] = grant_id
                result.lost_identified += reason == LOST_ROTATION
        return result


def not_due(_: int) -> datetime:
    """An access token valid for a day: the connection is not due until a round makes it so."""
    return utcnow() + timedelta(days=1)
