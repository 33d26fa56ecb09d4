"""Seeding for the benchmarks at scale: N connections of one tenant and one provider, cached between runs.

    .venv/bin/python bench/seed.py --database sqlite --database postgresql --n 1000000 --due 50000

Importing a million connections through ``grantkeeper connections import`` would take far longer than the
benchmarks themselves, so rows are written straight to the ``connections`` table, but exactly as the store
writes them: every token is sealed by the store's own ``FieldCipher`` (AES-GCM, the row id bound as associated
data), every value goes through the column types' bind processors, the tenant and the provider are created
through ``SqlStore``, and the schema comes from the migrations. A claim decrypts both tokens of every row it
takes, so the rows are valid, claimable and refreshable (given real refresh tokens).

The schedule, relative to the seeding instant (the *anchor*): ``due`` connections are due, spread evenly over
the hour before the anchor, and the rest over the day after it (``next_attempt_at`` ten minutes before the
access token expires, the default lead). Which rows are due is a fixed permutation of insertion order, so
the due rows are scattered over the table as they are in a live database, not packed into its first pages.

SQLite rows go in with ``executemany`` in one transaction on a connection configured by ``make_engine``
(WAL, ``synchronous=NORMAL``); PostgreSQL rows with one psycopg ``COPY``, followed by ``VACUUM ANALYZE``.
Foreign keys and every index stay in place while loading.

A seeded database is kept (a SQLite file under ``$GRANTKEEPER_BENCH_CACHE``, by default
``$TMPDIR/grantkeeper-bench``; a PostgreSQL database named ``bench_claim_<n>_<due>_v<format>``) and reused
while N, the due count and the schema revision match; ``--reseed`` starts over. ``restore`` puts back the
rows a benchmark changed, so a reused database starts every run in its seeded state. The key is fixed (it
guards benchmark data only): ``BENCH_KEY`` is what ``GRANTKEEPER_ENCRYPTION_KEYS`` must hold to read them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select, text, update
from support import CLIENT_ID, CLIENT_SECRET, PG_SERVER

from grantkeeper.adapters.crypto import Keyring
from grantkeeper.adapters.db import SqlStore, is_current, make_engine, migrate
from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.schema import head_revision
from grantkeeper.adapters.db.tables import (
    connections,
    delivery_attempts,
    new_id,
    notifications,
    outbox,
    refresh_attempts,
)
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.ports import AuthMethod, NewProvider

SEED_FORMAT = 1
BENCH_KEY = "bench:" + base64.urlsafe_b64encode(hashlib.sha256(b"grantkeeper bench seed").digest()).decode()
CACHE_DIR = Path(os.environ.get("GRANTKEEPER_BENCH_CACHE", Path(tempfile.gettempdir()) / "grantkeeper-bench"))
LEAD = timedelta(minutes=10)  # next_attempt_at = expires_at - LEAD, the default refresh lead
DUE_SPREAD = timedelta(hours=1)  # due rows: the hour before the anchor
LATER_SPREAD = timedelta(hours=24)  # the others: the day after it
PLACEHOLDER_TOKEN_URL = "http://127.0.0.1:9/oauth/token"  # a benchmark that refreshes points it elsewhere
CHUNK = 20_000
INFO_TABLE = "bench_seed_info"
_c = connections.c


@dataclass(frozen=True)
class Seeded:
    """A seeded database: where it is, what it holds, and how long seeding took (None when reused)."""

    kind: str
    url: str
    n: int
    due: int
    anchor: datetime
    seconds: float | None

    def engine(self) -> Engine:
        return make_engine(self.url)


def keyring() -> Keyring:
    return Keyring.parse(BENCH_KEY)


def database_name(n: int, due: int) -> str:
    return f"bench_claim_{n}_{due}_v{SEED_FORMAT}"


def database_url(kind: str, n: int, due: int) -> str:
    if kind == "sqlite":
        return f"sqlite:///{CACHE_DIR / (database_name(n, due) + '.db')}"
    return f"{PG_SERVER}/{database_name(n, due)}"


class Schedule:
    """Row ``i`` (user id ``u<i>``) has rank ``i * step mod n``; ranks below ``due`` are due, in rank order.

    Multiplying by a step coprime to n is a permutation that scatters neighbouring ranks far apart in
    insertion order, and needs no memory, so ``restore`` can recompute any row's seeded schedule."""

    def __init__(self, n: int, due: int, anchor: datetime) -> None:
        self.n, self.due, self.anchor = n, due, anchor
        step = 2_654_435_761 % n or 1
        while math.gcd(step, n) != 1:
            step += 1
        self.step = step
        self._due_gap = DUE_SPREAD / max(due, 1)
        self._later_gap = LATER_SPREAD / max(n - due, 1)

    def next_attempt_at(self, i: int) -> datetime:
        rank = i * self.step % self.n
        if rank < self.due:
            return self.anchor - DUE_SPREAD + rank * self._due_gap
        return self.anchor + (rank - self.due + 1) * self._later_gap


def user_id(i: int) -> str:
    return f"u{i:07d}"


def ordinal(user: str) -> int:
    return int(user[1:])


def _rows(
    engine: Engine, tenant_id: str, provider_id: str, schedule: Schedule, columns: list[str]
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows in chunks, as the driver receives them from SQLAlchemy (bind processors applied)."""
    cipher = FieldCipher(keyring())
    dialect = engine.dialect
    processors: dict[str, Callable[[Any], Any]] = {}
    for name in columns:
        processor = connections.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        processors[name] = processor if processor is not None else (lambda value: value)
    as_time = processors["next_attempt_at"]
    created = as_time(schedule.anchor)
    false, zero = processors["warning_sent"](False), 0
    for start in range(0, schedule.n, CHUNK):
        chunk: list[tuple[Any, ...]] = []
        for i in range(start, min(start + CHUNK, schedule.n)):
            connection_id = new_id("con")
            user = user_id(i)
            due_at = schedule.next_attempt_at(i)
            expires_at = due_at + LEAD
            values: dict[str, Any] = {
                "id": connection_id,
                "tenant_id": tenant_id,
                "provider_id": provider_id,
                "user_id": user,
                "email": f"{user}@example.test",
                "status": ConnectionStatus.CONNECTED.value,
                "access_token_enc": cipher.seal(
                    "connections", connection_id, "access_token", f"seed-at-{connection_id}-{user}"
                ),
                "refresh_token_enc": cipher.seal(
                    "connections", connection_id, "refresh_token", f"seed-rt-{connection_id}-{user}"
                ),
                "expires_at": as_time(expires_at),
                "consecutive_failures": zero,
                "consecutive_transient_failures": zero,
                "last_refreshed_at": as_time(expires_at - timedelta(hours=1)),
                "next_attempt_at": as_time(due_at),
                "warning_sent": false,
                "rate_limit_notice_sent": false,
                "version": zero,
                "created_at": created,
                "updated_at": created,
            }
            chunk.append(tuple(values.get(name) for name in columns))
        yield chunk


def _load_sqlite(engine: Engine, rows: Iterator[list[tuple[Any, ...]]], columns: list[str]) -> None:
    raw = engine.raw_connection()  # make_engine's connect hook: WAL, synchronous=NORMAL, no implicit BEGIN
    try:
        cursor = raw.cursor()
        statement = (
            f"INSERT INTO connections ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        )
        cursor.execute("BEGIN IMMEDIATE")
        for chunk in rows:
            cursor.executemany(statement, chunk)
        cursor.execute("COMMIT")
        cursor.close()
    finally:
        raw.close()


def _load_postgresql(engine: Engine, rows: Iterator[list[tuple[Any, ...]]], columns: list[str]) -> None:
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection  # psycopg 3
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY connections ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for chunk in rows:
                for row in chunk:
                    copy.write_row(row)
        driver.commit()
    finally:
        raw.close()


def vacuum_analyze(engine: Engine) -> None:
    """PostgreSQL: reclaim what a run left behind and refresh the planner's statistics (no-op on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


def _info(engine: Engine) -> dict[str, Any] | None:
    try:
        with engine.connect() as connection:
            row = connection.execute(text(f"SELECT format, n, due, anchor FROM {INFO_TABLE}")).first()
    except Exception:
        return None
    return None if row is None else dict(row._mapping)


def _drop_postgresql(name: str) -> None:
    admin = make_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _create_postgresql(name: str) -> None:
    admin = make_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %(n)s", {"n": name})
        if exists.first() is None:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()


def drop(kind: str, n: int, due: int) -> None:
    if kind == "sqlite":
        path = CACHE_DIR / (database_name(n, due) + ".db")
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        _drop_postgresql(database_name(n, due))


def _cached(kind: str, n: int, due: int) -> Seeded | None:
    url = database_url(kind, n, due)
    if kind == "sqlite" and not (CACHE_DIR / (database_name(n, due) + ".db")).exists():
        return None
    if kind == "postgresql":
        _create_postgresql(database_name(n, due))
    engine = make_engine(url)
    try:
        info = _info(engine)
        if info is None or (info["format"], info["n"], info["due"]) != (SEED_FORMAT, n, due):
            return None
        if not is_current(engine):
            return None  # someone added a migration since: seed again at the new head
    finally:
        engine.dispose()
    return Seeded(kind, url, n, due, datetime.fromisoformat(info["anchor"]), None)


def ensure_seeded(
    kind: str, n: int, due: int, *, reseed: bool = False, log: Callable[[str], None] = print
) -> Seeded:
    """The cached database for (kind, n, due), seeding it first when missing, stale or ``reseed``."""
    if not 1 <= due <= n:
        raise ValueError("need 1 <= due <= n")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    if not reseed and (seeded := _cached(kind, n, due)) is not None:
        log(f"{kind}: reusing {database_name(n, due)} (seeded {seeded.anchor:%Y-%m-%d %H:%M} UTC)")
        return seeded
    drop(kind, n, due)
    if kind == "postgresql":
        _create_postgresql(database_name(n, due))
    url = database_url(kind, n, due)
    log(f"{kind}: seeding {n:,} connections ({due:,} due) into {database_name(n, due)} ...")
    started = time.perf_counter()
    engine = make_engine(url)
    try:
        migrate(engine)
        store = SqlStore(engine, keyring())
        tenant_id = store.ensure_tenant("default")
        provider = NewProvider(
            "sandbox", PLACEHOLDER_TOKEN_URL, CLIENT_ID, CLIENT_SECRET, AuthMethod.CLIENT_SECRET_BASIC
        )
        provider_id = store.add_provider(tenant_id, provider).provider_id
        anchor = datetime.now(UTC).replace(microsecond=0)
        columns = [column.name for column in connections.c]
        rows = _rows(engine, tenant_id, provider_id, Schedule(n, due, anchor), columns)
        if kind == "sqlite":
            _load_sqlite(engine, rows, columns)
        else:
            _load_postgresql(engine, rows, columns)
        loaded = time.perf_counter() - started
        vacuum_analyze(engine)
        seconds = time.perf_counter() - started
        with engine.begin() as connection:
            connection.execute(
                text(f"CREATE TABLE {INFO_TABLE} (format INTEGER, n INTEGER, due INTEGER, anchor TEXT)")
            )
            connection.execute(
                text(f"INSERT INTO {INFO_TABLE} VALUES (:format, :n, :due, :anchor)"),
                {"format": SEED_FORMAT, "n": n, "due": due, "anchor": anchor.isoformat()},
            )
    finally:
        engine.dispose()
    log(
        f"{kind}: seeded {n:,} rows in {seconds:.1f} s (load {loaded:.1f} s, "
        f"{n / loaded:,.0f} rows/s; schema {head_revision()})"
    )
    return Seeded(kind, url, n, due, anchor, seconds)


def restore(seeded: Seeded, engine: Engine) -> int:
    """Put every row a benchmark touched (``version`` moved, or leased) back to its seeded state, delete what
    refreshes wrote (attempts, notifications, outbox), and vacuum on PostgreSQL; returns the rows restored.

    Tokens a real refresh rotated stay as they are: still sealed with ``BENCH_KEY`` for their own row."""
    schedule = Schedule(seeded.n, seeded.due, seeded.anchor)
    touched = select(_c.id, _c.user_id).where((_c.version != 0) | _c.lease_owner.is_not(None))
    with engine.begin() as connection:
        rows = connection.execute(touched).all()
        for start in range(0, len(rows), 5000):
            values = [
                {"row_id": row.id, "due_at": (due_at := schedule.next_attempt_at(ordinal(row.user_id))),
                 "expires": due_at + LEAD}
                for row in rows[start : start + 5000]
            ]  # fmt: skip
            connection.execute(_RESTORE, values)
        for table in (delivery_attempts, outbox, notifications, refresh_attempts):
            connection.execute(delete(table))
    if rows:
        vacuum_analyze(engine)
    return len(rows)


_RESTORE = (
    update(connections)
    .where(_c.id == bindparam("row_id"))
    .values(
        status=ConnectionStatus.CONNECTED.value,
        next_attempt_at=bindparam("due_at", type_=_c.next_attempt_at.type),
        expires_at=bindparam("expires", type_=_c.expires_at.type),
        lease_owner=None,
        lease_expires_at=None,
        version=0,
        consecutive_failures=0,
        consecutive_transient_failures=0,
        last_failure_at=None,
        failing_since=None,
        last_error_code=None,
        last_error_description=None,
        disconnect_reason=None,
        warning_sent=False,
        rate_limit_notice_sent=False,
    )
)


def count_due(engine: Engine, now: datetime) -> int:
    query = select(func.count()).where(
        _c.status == ConnectionStatus.CONNECTED.value,
        _c.next_attempt_at <= now,
        _c.lease_expires_at.is_(None) | (_c.lease_expires_at < now),
    )
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, action="append", help="connections stored (repeatable)")
    parser.add_argument(
        "--due", type=int, default=50_000, help="how many are due at the anchor (capped at n)"
    )
    parser.add_argument("--reseed", action="store_true", help="seed again even when a matching seed exists")
    parser.add_argument("--drop", action="store_true", help="drop the matching seeded databases and stop")
    args = parser.parse_args()
    for kind in args.database or ["sqlite", "postgresql"]:
        for n in args.n or [10_000, 1_000_000]:
            due = min(args.due, n)
            if args.drop:
                drop(kind, n, due)
                print(f"{kind}: dropped {database_name(n, due)}")
                continue
            seeded = ensure_seeded(kind, n, due, reseed=args.reseed)
            engine = seeded.engine()
            restored = restore(seeded, engine)
            print(f"{kind}: {count_due(engine, seeded.anchor):,} due at the anchor; restored {restored} rows")
            engine.dispose()


if __name__ == "__main__":
    main()
