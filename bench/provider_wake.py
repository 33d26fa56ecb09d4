"""A provider's return at scale (ADR 27): what one ``RetryProviderNow`` costs inside a worker's commit.

    .venv/bin/python bench/provider_wake.py --database sqlite --database postgresql --backed-off 100000

After an hour-long outage with one-hour tokens, every connection of the provider is backing off from
transient failures. The first refresh that succeeds emits ``RetryProviderNow``, which the worker applies in
the same transaction as that refresh's commit (``adapters/db/commits.py``). This benchmark times that
statement with ``--backed-off`` connections in a streak, out of 1,000,000 stored (``seed.py``; ``--stored``):

- ``all``: the former statement, which made every backed-off row due in one UPDATE (the baseline);
- ``limited``: ``retry_provider_now(limit=8)`` as it is now, which wakes the eight whose retry lies
  furthest ahead.

Set-up, in one transaction that is rolled back at the end so the cached database stays as seeded: the
first ``--backed-off`` rows by id get ``consecutive_transient_failures = 6`` and a retry time spread over
the next six hours (the longest backoff). Each timed call runs inside a savepoint that is rolled back, so
every call meets the same rows; rounds alternate between the two statements. Reported: the median and
the longest call of each, and their ratio. A commit holds the worker's store thread (and on SQLite the
database's one write lock) for as long as the statement runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime

import seed
from sqlalchemy import Connection, or_, text, update

from grantkeeper.adapters.db.commits import retry_provider_now
from grantkeeper.adapters.db.tables import connections
from grantkeeper.core.model import ConnectionStatus
from grantkeeper.core.policy import Policy

STORED = 1_000_000
DUE = 50_000  # the seed's due rows (``seed.py``), as in ``claim_cost.py``: a cached database is shared
_c = connections.c


def wake_all(connection: Connection, provider_id: str, at: datetime) -> int:
    """The statement ``retry_provider_now`` ran before ADR 27: every backed-off row due in one UPDATE."""
    statement = (
        update(connections)
        .where(
            _c.provider_id == provider_id,
            _c.status == ConnectionStatus.CONNECTED.value,
            _c.consecutive_transient_failures > 0,
            _c.next_attempt_at > at,
            or_(_c.lease_expires_at.is_(None), _c.lease_expires_at < at),
        )
        .values(next_attempt_at=at)
    )
    return connection.execute(statement).rowcount


def back_off(connection: Connection, kind: str, count: int, now: datetime) -> None:
    """The first ``count`` rows by id into a streak, retries spread over the next six hours."""
    if kind == "postgresql":
        spread = "CAST(:now AS timestamptz) + random() * interval '6 hours'"
        parameters: dict[str, object] = {"now": now, "count": count}
    else:  # the column's text form (``types.UTCDateTime``): 'YYYY-MM-DD HH:MM:SS.ffffff'
        spread = "strftime('%Y-%m-%d %H:%M:%f000', :now, '+' || (abs(random()) % 21600) || ' seconds')"
        parameters = {"now": now.replace(tzinfo=None).isoformat(" ", "seconds"), "count": count}
    connection.execute(
        text(
            f"UPDATE connections SET consecutive_transient_failures = 6, next_attempt_at = {spread} "
            "WHERE id IN (SELECT id FROM connections ORDER BY id LIMIT :count)"
        ),
        parameters,
    )


def timed(connection: Connection, call: object) -> tuple[float, int]:
    """One call in a savepoint that is rolled back: (seconds, rows woken)."""
    savepoint = connection.begin_nested()
    started = time.perf_counter()
    woken = call()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    savepoint.rollback()
    return seconds, woken


def measure(kind: str, stored: int, backed_off: int, rounds: int, limit: int) -> dict[str, object]:
    seeded = seed.ensure_seeded(kind, stored, min(DUE, stored), reseed=False)
    engine = seeded.engine()
    at = datetime.now(UTC)
    results: dict[str, list[float]] = {"all": [], "limited": []}
    woken: dict[str, int] = {}
    with engine.connect() as connection:
        provider_id = connection.execute(text("SELECT id FROM providers")).scalar_one()
        started = time.perf_counter()
        back_off(connection, kind, backed_off, at)
        if kind == "postgresql":
            connection.execute(text("ANALYZE connections"))
        print(f"{kind}: {backed_off:,} rows backing off in {time.perf_counter() - started:.1f} s", flush=True)
        arms = {
            "all": lambda: wake_all(connection, provider_id, at),
            "limited": lambda: retry_provider_now(connection, provider_id, at, limit),
        }
        for round_number in range(rounds):
            for name, call in arms.items():
                seconds, count = timed(connection, call)
                results[name].append(seconds)
                woken[name] = count
                line = f"  round {round_number + 1} {name}: {seconds * 1000:,.1f} ms, {count:,} woken"
                print(line, flush=True)
        connection.rollback()
    engine.dispose()
    all_median = statistics.median(results["all"])
    limited_median = statistics.median(results["limited"])
    return {
        "database": kind,
        "stored": stored,
        "backed_off": backed_off,
        "all_ms": all_median * 1000,
        "all_max_ms": max(results["all"]) * 1000,
        "all_woken": woken["all"],
        "limited_ms": limited_median * 1000,
        "limited_max_ms": max(results["limited"]) * 1000,
        "limited_woken": woken["limited"],
        "ratio": all_median / limited_median,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument(
        "--backed-off", type=int, action="append", help="rows in a streak (repeatable; default 100,000)"
    )
    parser.add_argument("--stored", type=int, default=STORED, help="connections stored (seed.py)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=Policy().provider_wake_batch)
    args = parser.parse_args()
    if args.rounds < 1 or args.limit < 1:
        parser.error("--rounds and --limit must be at least 1")
    counts = args.backed_off or [100_000]
    if any(not 1 <= count <= args.stored for count in counts):
        parser.error(f"--backed-off must be between 1 and --stored ({args.stored:,})")
    rows = [
        measure(kind, args.stored, count, args.rounds, args.limit)
        for kind in args.database or ["sqlite", "postgresql"]
        for count in counts
    ]
    for row in rows:
        print(json.dumps(row))
    print(
        "\n| database | backed off | all: median ms (max) | woken "
        "| limited: median ms (max) | woken | all/limited |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['database']} | {row['backed_off']:,} | {row['all_ms']:,.1f} ({row['all_max_ms']:,.1f}) "
            f"| {row['all_woken']:,} | {row['limited_ms']:,.2f} ({row['limited_max_ms']:,.2f}) "
            f"| {row['limited_woken']:,} | {row['ratio']:,.0f} |"
        )


if __name__ == "__main__":
    main()
