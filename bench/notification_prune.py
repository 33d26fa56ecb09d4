"""Pruning in-app notifications at scale (``GRANTKEEPER_NOTIFICATION_RETENTION_DAYS``): what one batch costs.

    .venv/bin/python bench/notification_prune.py --database sqlite --database postgresql \\
        --old 200000 --pending 50000

A fresh database per kind (a SQLite file, or a throwaway PostgreSQL database dropped at the end), migrated,
with one tenant holding ``--old`` notifications from 100 days ago and ``--pending`` from yesterday, each of
those with an email still waiting in the outbox (a digest or a slow mail server). Rows go straight into the
tables (set-up). Then ``store.prune_notifications`` runs with a 30-day cutoff, batch after batch, until it
says it is done. Reported: how many went, how many batches, and each batch's median and longest time. Each
batch is one write transaction, and on SQLite it holds the database's one write lock for that long.

The pending rows are what once made a batch slow. Each notification's check for a pending delivery could
be planned on ``ix_outbox_due`` (status first), reading every pending row for each notification. It now
reads ``ix_outbox_notification_id`` (``adapters/db/retention.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, insert
from support import fresh_database

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, make_engine, migrate
from grantkeeper.adapters.db.tables import notifications, outbox

CHUNK = 10_000
KEEP = timedelta(days=30)


def fill(engine: Engine, tenant_id: str, old: int, pending: int, now: datetime) -> None:
    """``old`` notifications from 100 days ago, then ``pending`` from yesterday with an email waiting."""
    total = old + pending
    with engine.begin() as connection:
        for start in range(0, total, CHUNK):
            rows = [
                {
                    "id": f"ntf_{i:012d}",
                    "tenant_id": tenant_id,
                    "connection_id": None,
                    "user_id": f"u{i}",
                    "type": "integration_rate_limit",
                    "title": "title",
                    "message": "message",
                    "is_read": False,
                    "created_at": now - timedelta(days=100 if i < old else 1, seconds=i),
                    "metadata": {},
                }
                for i in range(start, min(start + CHUNK, total))
            ]
            connection.execute(insert(notifications), rows)
        for start in range(old, total, CHUNK):
            emails = [
                {
                    "id": f"obx_{i:012d}",
                    "notification_id": f"ntf_{i:012d}",
                    "channel": "email",
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now + timedelta(days=1),
                    "created_at": now,
                    "tenant_id": tenant_id,
                }
                for i in range(start, min(start + CHUNK, total))
            ]
            connection.execute(insert(outbox), emails)
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def measure(kind: str, old: int, pending: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp, fresh_database(kind, Path(tmp), "prune") as url:
        engine = make_engine(url)
        migrate(engine)
        store = SqlStore(engine, Keyring.parse(generate_key_line("bench")))
        tenant_id = store.ensure_tenant("bench")
        now = datetime.now(UTC)
        started = time.perf_counter()
        fill(engine, tenant_id, old, pending, now)
        filled = time.perf_counter() - started
        print(f"{kind}: {old:,} old and {pending:,} pending in {filled:.1f} s", flush=True)
        seconds: list[float] = []
        deleted = 0
        while True:
            started = time.perf_counter()
            batch = store.prune_notifications(now - KEEP)
            seconds.append(time.perf_counter() - started)
            deleted += batch.deleted
            if batch.is_done:
                break
        left = len(store.list_notifications(tenant_id, limit=pending + 1))
        engine.dispose()
    return {
        "database": kind,
        "old": old,
        "pending": pending,
        "deleted": deleted,
        "left": left,
        "batches": len(seconds),
        "batch_median_ms": statistics.median(seconds) * 1000,
        "batch_max_ms": max(seconds) * 1000,
        "total_s": sum(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--old", type=int, default=200_000, help="notifications past the retention")
    parser.add_argument("--pending", type=int, default=50_000, help="recent ones with an email waiting")
    args = parser.parse_args()
    if args.old < 0 or args.pending < 0:
        parser.error("--old and --pending must be at least 0")
    rows = [measure(kind, args.old, args.pending) for kind in args.database or ["sqlite", "postgresql"]]
    for row in rows:
        print(json.dumps(row))
    print(
        "\n| database | old | pending | deleted | left | batches | batch median ms | batch max ms | total s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['database']} | {row['old']:,} | {row['pending']:,} | {row['deleted']:,} "
            f"| {row['left']:,} | {row['batches']} | {row['batch_median_ms']:.1f} "
            f"| {row['batch_max_ms']:.1f} | {row['total_s']:.1f} |"
        )


if __name__ == "__main__":
    os.environ.setdefault("GRANTKEEPER_LOG_LEVEL", "WARNING")
    main()
