"""What SQLite's ``temp_store`` setting costs a large sort: the peak RSS of building an index over N rows.

    .venv/bin/python bench/sqlite_sort_memory.py --rows 1000000

Every grantkeeper SQLite connection keeps temporary files in memory (``temp_store=MEMORY``), which spares the
refresh path a temporary file per tick. SQLite's sorter then never spills to disk, so a statement that sorts
a whole table holds the sort in memory. Migrations build indexes, so they run with temporary files on disk
(``engine.migration_transaction``); this measures why. Each setting runs in its own process, which fills a
fresh database file with rows shaped like connections (two ids, a status, 400 bytes of other columns), sets
``temp_store``, and creates an index on (tenant, status, id); reported: the process's peak RSS
(``ru_maxrss``) before and after the index.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path


def one(setting: str, rows: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "sort.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, tenant TEXT, status TEXT, other TEXT)")
        fill = ((str(uuid.uuid4()), str(uuid.uuid4()), "connected", "x" * 400) for _ in range(rows))
        db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", fill)
        db.commit()
        db.execute(f"PRAGMA temp_store={setting}")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        db.execute("CREATE INDEX ix_t ON t (tenant, status, id)")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        db.close()
    return {"before_mb": before, "after_mb": after}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--one", choices=("FILE", "MEMORY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.rows)))
        return
    print("| temp_store | rows | peak RSS before the index MB | peak RSS after MB |\n|---|---|---|---|")
    for setting in ("FILE", "MEMORY"):
        command = [sys.executable, __file__, "--one", setting, "--rows", str(args.rows)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print(f"| {setting} | {args.rows:,} | {result['before_mb']:.0f} | {result['after_mb']:.0f} |")


if __name__ == "__main__":
    main()
