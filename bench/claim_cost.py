"""Selection cost (issue 5): how long ``store.claim_due`` takes to lease a batch of 1,000 due connections,
with 10,000 and with 1,000,000 connections stored, on SQLite and PostgreSQL.

    .venv/bin/python bench/claim_cost.py --database sqlite --database postgresql --n 10000 --n 1000000

The bar: at most 50 ms per batch of 1,000 with 1,000,000 stored, and at most twice the time with 10,000
stored. The claim is the work queue's hot statement (``WITH due AS MATERIALIZED (SELECT id ... ORDER BY
next_attempt_at LIMIT n FOR UPDATE SKIP LOCKED) UPDATE ... RETURNING``, see ``adapters/db/leases.py``); its
cost must not grow with the table, which holds only if ``ix_connections_due`` serves it.

Set-up: a database from ``seed.py`` (one tenant, one provider, tokens sealed with the store's cipher);
``max(n * --due-fraction, --min-due)`` rows due, the rest due over the next day. Each round is one
``store.claim_due(anchor, 1000, owner, 2 min, None)`` call with a fresh owner, timed from the call to its
return: the transaction, the statement, the provider lookup, the commit (the tokens stay sealed: an attempt
opens its own when it starts).
``statement`` is the claim statement alone, timed around the driver's ``execute``. Between rounds, untimed,
the round's rows are handed back the way a worker's commit hands them back (lease cleared, ``version`` + 1,
``next_attempt_at`` moved), except that they move to the back of the due queue (``next_attempt_at`` =
the claim instant) rather than into the future: every round takes the next 1,000 due rows and the number due
never drops, so any number of rounds fits any table with at least 1,000 due. The claim instant is the seed's
anchor, so a cached database keeps its due set however old it is. ``--warmup`` rounds run first and are not
counted (connection set-up, statement compilation). A run starts and ends by restoring every row a run
touched to its seeded state (then ``VACUUM ANALYZE`` on PostgreSQL). After the rounds the plan of the
captured claim statement is printed: ``EXPLAIN (ANALYZE, BUFFERS)`` in a rolled-back transaction on
PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite. ``statement``, ``commit`` and ``rest`` split a claim's time:
the claim statement at the driver, the DBAPI commit, and everything else (fetching the result rows,
building the claims, the provider lookup). ``cpu`` is the CPU time of the claiming thread over the whole
claim (``time.thread_time``): on PostgreSQL the client's share alone, on SQLite the database's work too.

PostgreSQL runs on the machine's server (``GRANTKEEPER_BENCH_PG``, 127.0.0.1:5432 by default), or with
``--own-server [NAME=VALUE ...]`` on a server of the benchmark's own (``pg_cluster.py``) with the settings
given, by default those an operator of a million connections would set first (``pg_cluster.SIZED_SETTINGS``:
2 GB of shared buffers, 4 GB of WAL between checkpoints); its seeded databases are kept like the SQLite
files. Before the rounds, ``pg_prewarm`` loads the connections table and its indexes into the server's cache,
as far as it holds them, as a server that has been serving workers holds them.

To measure a proposed change against the schema and settings the project ships, the change is made on a
copy of the seeded database (the same file copied, or ``CREATE DATABASE ... TEMPLATE``, so the same physical
layout) and both are measured in the same run, rounds alternating between them (``--sequential``: all of one,
then all of the other). ``--setup-sql`` statements run on the copy (autocommit, then ``VACUUM ANALYZE`` on
PostgreSQL), e.g. ``CREATE INDEX ...`` or a fillfactor and a table rewrite; ``--sqlite-pragma NAME=VALUE`` is
set on every SQLite connection the copy's store opens.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from seed import Seeded, ensure_seeded, keyring, restore, vacuum_analyze
from sqlalchemy import Engine, event, update
from sqlalchemy.exc import OperationalError
from support import PG_SERVER

from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.adapters.db.engine import watch_statements
from grantkeeper.adapters.db.tables import connections

BATCH = 1000
_OWN_SERVER = "GRANTKEEPER_BENCH_OWN_SERVER"  # set in the run that ``--own-server`` starts: its settings
LEASE_TTL = timedelta(minutes=2)
MAX_MS = 50.0
MAX_RATIO = 2.0
_c = connections.c


class Timer:
    """Times the claim statement at the driver and the claim transaction's commit (the DBAPI call), and
    keeps the statement's text and parameters for EXPLAIN."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statement_ms = self.commit_ms = 0.0
        self.statement: str | None = None
        self.parameters: Any = None
        self.in_claim = False
        self._started = 0.0

    def _before(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> None:
        if "due_connections" in statement:
            self.statement, self.parameters = statement, parameters
            self._started = time.perf_counter()

    def _after(self, _conn: Any, _cursor: Any, statement: str, _params: Any, _ctx: Any, _many: bool) -> None:
        if "due_connections" in statement:
            self._stopped()

    def _watched(self, statement: str, parameters: Any) -> Callable[[], None] | None:
        """The same for SQLite's refresh path, which sends its statements straight to the driver."""
        if "due_connections" not in statement:
            return None
        self._before(None, None, statement, parameters, None, False)
        return self._stopped

    def _stopped(self) -> None:
        self.statement_ms = (time.perf_counter() - self._started) * 1000

    @contextmanager
    def installed(self) -> Iterator[Timer]:
        dialect = self.engine.dialect
        do_commit = dialect.do_commit

        def timed_commit(dbapi_connection: Any) -> None:
            started = time.perf_counter()
            do_commit(dbapi_connection)
            if self.in_claim:
                self.commit_ms = (time.perf_counter() - started) * 1000

        dialect.do_commit = timed_commit  # type: ignore[method-assign]
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            with watch_statements(self.engine, self._watched):
                yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)
            dialect.do_commit = do_commit  # type: ignore[method-assign]


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (``statistics.quantiles``' inclusive method)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def plan(engine: Engine, timer: Timer) -> str:
    """The captured claim statement's plan; on PostgreSQL executed (EXPLAIN ANALYZE) and rolled back."""
    assert timer.statement is not None
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            if engine.dialect.name == "sqlite":
                prefix = "EXPLAIN QUERY PLAN "
            else:
                prefix = "EXPLAIN (ANALYZE, BUFFERS, COSTS, TIMING) "
            rows = connection.exec_driver_sql(prefix + timer.statement, timer.parameters).all()
        finally:
            transaction.rollback()
    if engine.dialect.name == "sqlite":
        return "\n".join(f"{row[0]:>3} {row[1]:>3} {row[-1]}" for row in rows)
    return "\n".join(str(row[0]) for row in rows)


def hand_back(engine: Engine, ids: list[str], now: datetime) -> None:
    """What a worker's commit does to the claimed rows, but leaving them due, behind every other due row."""
    statement = (
        update(connections)
        .where(_c.id.in_(ids))
        .values(lease_owner=None, lease_expires_at=None, version=_c.version + 1, next_attempt_at=now)
    )
    with engine.begin() as connection:
        connection.execute(statement)


@dataclass(frozen=True)
class Variant:
    """A proposed change, measured on a copy of the seeded database; empty: the project as it ships."""

    setup_sql: tuple[str, ...] = ()
    sqlite_pragmas: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.setup_sql or self.sqlite_pragmas)


@contextmanager
def variant_copy(seeded: Seeded, variant: Variant) -> Iterator[str]:
    """A byte-for-byte copy of the seeded database (same physical layout) with ``setup_sql`` applied."""
    if seeded.kind == "sqlite":
        source = Path(seeded.url.removeprefix("sqlite:///"))
        engine = seeded.engine()
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()
        target = source.with_name(source.stem + "_variant.db")
        shutil.copyfile(source, target)
        url = f"sqlite:///{target}"
    else:
        name = seeded.url.rsplit("/", 1)[1]
        copy = f"{name}_variant"
        admin = make_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            for attempt in range(30):  # autovacuum may be visiting the source for a moment
                try:
                    connection.exec_driver_sql(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
                    break
                except OperationalError:
                    if attempt == 29:
                        others = connection.exec_driver_sql(
                            "SELECT backend_type, application_name, state, left(query, 80) "
                            "FROM pg_stat_activity WHERE datname = %(name)s",
                            {"name": name},
                        ).all()
                        raise RuntimeError(f"{name} stayed in use: {others}") from None
                    time.sleep(1)
        url = f"{PG_SERVER}/{copy}"
    engine = make_engine(url)
    try:
        if seeded.kind == "sqlite":
            with engine.begin() as connection:
                for statement in variant.setup_sql:
                    connection.exec_driver_sql(statement)
        else:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                for statement in variant.setup_sql:
                    connection.exec_driver_sql(statement)
            vacuum_analyze(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        if seeded.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(target) + suffix).unlink(missing_ok=True)
        else:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            admin.dispose()


@dataclass
class Arm:
    """One database measured: a seeded one as shipped, or a variant's copy of it."""

    label: str
    seeded: Seeded
    engine: Engine
    store: SqlStore
    totals: list[float] = field(default_factory=list)
    statements: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    explained: str = ""

    def result(self, rounds: int) -> dict[str, Any]:
        rest = [t - s - c for t, s, c in zip(self.totals, self.statements, self.commits, strict=True)]
        return {
            "database": self.seeded.kind,
            "variant": self.label,
            "n": self.seeded.n,
            "due": self.seeded.due,
            "rounds": rounds,
            "median_ms": statistics.median(self.totals),
            "p90_ms": percentile(self.totals, 0.9),
            "min_ms": min(self.totals),
            "max_ms": max(self.totals),
            "statement_median_ms": statistics.median(self.statements),
            "commit_median_ms": statistics.median(self.commits),
            "rest_median_ms": statistics.median(rest),
            "cpu_median_ms": statistics.median(self.cpus),
            "per_round_ms": [round(value, 1) for value in self.totals],
            "plan": self.explained,
        }


def make_arm(label: str, seeded: Seeded, url: str, pragmas: tuple[str, ...]) -> Arm:
    engine = make_engine(url)
    if pragmas and engine.dialect.name == "sqlite":

        def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
            for pragma in pragmas:
                dbapi_connection.execute(f"PRAGMA {pragma}")

        event.listen(engine, "connect", set_pragmas)
    return Arm(label, seeded, engine, SqlStore(engine, keyring()))


def run_rounds(arms: list[Arm], rounds: int, warmup: int, *, sequential: bool) -> None:
    """Claim, time, hand back. The arms' rounds alternate (every size, and a variant beside what it
    changes), so all see the same machine load: on these shared machines the load drifts over minutes,
    and a ratio of two sizes measured minutes apart measured the drift. ``sequential``: all of an arm's
    rounds before the next arm's; on PostgreSQL two alternating copies of a large table share (and fight
    over) one server's buffer cache, which neither would in production."""
    schedule = [(number, index) for number in range(warmup + rounds) for index in range(len(arms))]
    if sequential:
        schedule.sort(key=lambda item: item[1])
    with ExitStack() as stack:
        timers = [stack.enter_context(Timer(arm.engine).installed()) for arm in arms]
        for round_number, index in schedule:
            arm, timer = arms[index], timers[index]
            now = arm.seeded.anchor
            owner = f"bench-{uuid.uuid4().hex[:12]}"
            timer.in_claim = True
            started, cpu_started = time.perf_counter(), time.thread_time()
            claims = arm.store.claim_due(now, BATCH, owner, LEASE_TTL, None)
            elapsed_ms = (time.perf_counter() - started) * 1000
            cpu_ms = (time.thread_time() - cpu_started) * 1000
            timer.in_claim = False
            if len(claims) != BATCH:
                raise RuntimeError(f"claimed {len(claims)} rows, expected {BATCH}")
            if round_number >= warmup:
                arm.totals.append(elapsed_ms)
                arm.statements.append(timer.statement_ms)
                arm.commits.append(timer.commit_ms)
                arm.cpus.append(cpu_ms)
            hand_back(arm.engine, [claim.connection_id for claim in claims], now)
        for arm, timer in zip(arms, timers, strict=True):
            arm.explained = plan(arm.engine, timer)


def restore_all(seededs: list[Seeded]) -> None:
    for seeded in seededs:
        engine = seeded.engine()
        restore(seeded, engine)
        engine.dispose()


def prewarm(seededs: list[Seeded]) -> None:
    """PostgreSQL: load the connections table and its indexes into the server's buffer cache, as far as it
    holds them, as a server that has been serving the workers holds them (every row is refreshed once per
    token lifetime). A server started for the run starts cold, and its first rounds measured reads from the
    operating system's cache instead (about 20 ms of a claim at a million rows)."""
    for seeded in seededs:
        if seeded.kind != "postgresql":
            continue
        engine = seeded.engine()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            connection.exec_driver_sql(
                "SELECT pg_prewarm(c.oid) FROM pg_class c WHERE c.oid = 'connections'::regclass "
                "OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'connections'::regclass)"
            )
        engine.dispose()


def measure(
    seededs: list[Seeded], rounds: int, warmup: int, variant: Variant, *, sequential: bool = False
) -> list[dict[str, Any]]:
    """The seeded databases (one per size) as shipped; with a variant, also each one's copy with the
    change; the rounds of all of them alternating."""
    restore_all(seededs)
    prewarm(seededs)
    with ExitStack() as stack:
        arms: list[Arm] = []
        try:
            # every copy first: a store connects when made, and a database in use cannot be a template
            copies = [
                stack.enter_context(variant_copy(seeded, variant)) if variant else "" for seeded in seededs
            ]
            for seeded, copy_url in zip(seededs, copies, strict=True):
                arms.append(make_arm("as shipped", seeded, seeded.url, ()))
                if variant:
                    arms.append(make_arm("variant", seeded, copy_url, variant.sqlite_pragmas))
            run_rounds(arms, rounds, warmup, sequential=sequential)
        finally:
            for arm in arms:
                arm.engine.dispose()
    restore_all(seededs)
    return [arm.result(rounds) for arm in arms]


def due_for(n: int, fraction: float, minimum: int) -> int:
    return min(n, max(round(n * fraction), minimum))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, action="append", help="connections stored (repeatable)")
    parser.add_argument("--rounds", type=int, default=20, help="timed claims per database and size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed claims first")
    parser.add_argument("--due-fraction", type=float, default=0.05)
    parser.add_argument("--min-due", type=int, default=2000)
    parser.add_argument("--reseed", action="store_true", help="seed again even when a cached seed matches")
    parser.add_argument("--sequential", action="store_true", help="variant: all its rounds after the others")
    parser.add_argument(
        "--setup-sql", action="append", default=[], help="variant: SQL on the copy (repeatable)"
    )
    parser.add_argument(
        "--sqlite-pragma", action="append", default=[], help="variant: NAME=VALUE on its SQLite connections"
    )
    parser.add_argument(
        "--own-server",
        nargs="*",
        metavar="NAME=VALUE",
        default=None,
        help="PostgreSQL on the benchmark's own server (pg_cluster.py) with these settings; "
        "none given: pg_cluster.SIZED_SETTINGS",
    )
    args = parser.parse_args()
    if args.own_server is not None and _OWN_SERVER not in os.environ:
        from pg_cluster import SIZED_SETTINGS, own_server

        settings = args.own_server or list(SIZED_SETTINGS)
        with own_server(settings) as url:
            # seed.py and this module read the server's address once, at import: run again pointed at it
            environment = os.environ | {"GRANTKEEPER_BENCH_PG": url, _OWN_SERVER: " ".join(settings)}
            done = subprocess.run([sys.executable, *sys.argv], env=environment, check=False)
            raise SystemExit(done.returncode)
    server = os.environ.get(_OWN_SERVER, f"the server at {PG_SERVER}, as found")
    sizes = sorted(args.n or [10_000, 1_000_000])
    variant = Variant(tuple(args.setup_sql), tuple(args.sqlite_pragma))
    results: list[dict[str, Any]] = []
    for kind in args.database or ["sqlite", "postgresql"]:
        seededs = [
            ensure_seeded(kind, n, due_for(n, args.due_fraction, args.min_due), reseed=args.reseed)
            for n in sizes
        ]
        load_before = os.getloadavg()[0]
        for result in measure(seededs, args.rounds, args.warmup, variant, sequential=args.sequential):
            result |= {"load_before": load_before, "load_after": os.getloadavg()[0]}
            if kind == "postgresql":
                result["server"] = server
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "plan"}), file=sys.stderr, flush=True)
    print_table(results, sizes[0])


def print_table(results: list[dict[str, Any]], smallest_n: int) -> None:
    print()
    for server in sorted({r["server"] for r in results if "server" in r}):
        print(f"PostgreSQL: {server}\n")
    print(
        "| database | variant | stored | due | rounds | median ms | p90 ms | min-max ms | statement ms "
        f"| commit ms | rest ms | cpu ms | vs {smallest_n:,} (median) | <= {MAX_MS:.0f} ms (p90) "
        f"| <= {MAX_RATIO:.0f}x |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        base = next(
            b
            for b in results
            if (b["database"], b["variant"], b["n"]) == (r["database"], r["variant"], smallest_n)
        )
        ratio = r["median_ms"] / base["median_ms"]
        print(
            f"| {r['database']} | {r['variant']} | {r['n']:,} | {r['due']:,} | {r['rounds']} "
            f"| {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} "
            f"| {r['statement_median_ms']:.1f} | {r['commit_median_ms']:.1f} | {r['rest_median_ms']:.1f} "
            f"| {r['cpu_median_ms']:.1f} | {ratio:.2f} | {'yes' if r['p90_ms'] <= MAX_MS else 'no'} "
            f"| {'yes' if ratio <= MAX_RATIO else 'no'} |"
        )
    for r in results:
        print(f"\n### plan: {r['database']} ({r['variant']}), {r['n']:,} stored\n\n```\n{r['plan']}\n```")


if __name__ == "__main__":
    main()
