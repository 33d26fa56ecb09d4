"""Key rotation at scale: how long ``grantkeeper keys reseal`` takes to move every stored secret of N
connections from the old key to a new one.

    .venv/bin/python bench/reseal_cost.py --database sqlite --n 1000000

The seeded database of ``seed.py`` (N connections, each with a sealed refresh and access token, all under
``BENCH_KEY``) is copied first (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL), so
the cached seed keeps its key. On the copy, a store configured with a new key first and the bench key second
runs ``SqlStore.reseal_secrets`` (what the command runs), timed from the call to its return; then
``SqlStore.key_usage`` must count no value under the old key, and one token per kind is read back with the
new key alone. Reported: seconds, secrets resealed per second, and the worker-visible cost per connection.
To compare two code versions, run it with ``PYTHONPATH=<worktree>/src`` for the other one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from seed import BENCH_KEY, database_name, ensure_seeded
from sqlalchemy import select
from support import fresh_database

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.adapters.db.tables import connections


def measure(kind: str, n: int, batch_size: int) -> dict[str, object]:
    due = min(max(n // 20, 1000), n)  # the seed needs 1 <= due <= n
    seeded = ensure_seeded(kind, n, due)
    template = seeded.url.removeprefix("sqlite:///") if kind == "sqlite" else database_name(n, due)
    with tempfile.TemporaryDirectory() as tmp, fresh_database(kind, Path(tmp), "reseal", template) as url:
        new_key = generate_key_line("rotated")
        engine = make_engine(url)
        store = SqlStore(engine, Keyring.parse(f"{new_key},{BENCH_KEY}"), create_schema=False)
        started = time.perf_counter()
        report = store.reseal_secrets(batch_size=batch_size)
        seconds = time.perf_counter() - started
        usage = store.key_usage()
        left = {column: {kid: count for kid, count in counts.items() if kid != "rotated" and count}
                for column, counts in usage.items()}  # fmt: skip
        engine.dispose()
        # the new key alone must open what was moved
        alone = make_engine(url)
        alone_store = SqlStore(alone, Keyring.parse(new_key), create_schema=False)
        with alone.connect() as connection:
            first = connection.execute(select(connections.c.tenant_id, connections.c.id).limit(1)).one()
        tokens = alone_store.read_tokens(first[0], first[1])
        alone.dispose()
    resealed = sum(report.resealed.values())
    return {
        "database": kind,
        "connections": n,
        "batch_size": batch_size,
        "seconds": round(seconds, 1),
        "resealed": resealed,
        "per_second": round(resealed / seconds),
        "unreadable": sum(len(ids) for ids in report.unreadable.values()),
        "left_under_other_keys": {column: counts for column, counts in left.items() if counts},
        "readable_with_the_new_key_alone": tokens is not None and tokens.refresh_token is not None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    result = measure(args.database, args.n, args.batch_size)
    print(json.dumps(result))
    print(
        f"| {result['database']} | {result['connections']:,} | {result['batch_size']} "
        f"| {result['seconds']} s "
        f"| {result['resealed']:,} | {result['per_second']:,}/s | {result['unreadable']} "
        f"| {'none' if not result['left_under_other_keys'] else result['left_under_other_keys']} "
        f"| {'yes' if result['readable_with_the_new_key_alone'] else 'no'} |"
    )


if __name__ == "__main__":
    main()
