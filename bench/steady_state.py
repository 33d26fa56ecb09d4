"""Steady state: 1,000,000 connections with one-hour tokens kept fresh, and how late each refresh starts.

    .venv/bin/python bench/steady_state.py --database postgresql --minutes 5 --workers 1

One-hour tokens refreshed ten minutes before expiry mean each of N connections comes due once every
50 minutes: N / 3000 refreshes a second, about 333 for a million (the issue's "about 280" counts a full
hour). The database is seeded with N connections (``seed.py``, cached between runs); for the measured window
the connections that come due in it are given real sandbox grants and due times spread evenly at that rate
from the start of the window, and every other connection is moved past the window, exactly as a live
million-connection database looks for those minutes. Then ``grantkeeper worker`` processes run with their
default settings (poll every 5 s, concurrency 32) until every connection due in the window is refreshed.

Reported: the rate asked for and achieved, the lag from due to the attempt's start (from the attempt log)
as p50, p99 and max, the workers' CPU use, failures, and the sandbox's reuse count (must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from refresh_throughput import control, issue
from seed import BENCH_KEY, LATER_SPREAD, Seeded, ensure_seeded, keyring, restore, vacuum_analyze
from sqlalchemy import Engine, bindparam, func, literal_column, select, update
from support import sandbox_process, stop

from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import connections, providers, refresh_attempts

_c = connections.c
_a = refresh_attempts.c
PERIOD = timedelta(minutes=50)  # one-hour tokens, refreshed ten minutes early
START_DELAY = 20.0  # seconds: the window opens this long after the schedule is written (workers start)
# interval arithmetic for PostgreSQL's UPDATE (SQLite rows are moved in Python)
_LATER = literal_column(f"interval '{int(LATER_SPREAD.total_seconds())} seconds'")


def schedule_window(
    seeded: Seeded, engine: Engine, base: str, minutes: float, start_delay: float = START_DELAY
) -> tuple[datetime, dict[str, datetime]]:
    """Give the connections due in the window real grants and evenly spread due times; park the rest."""
    rate = seeded.n / PERIOD.total_seconds()
    count = int(rate * minutes * 60)
    start_at = datetime.now(UTC) + timedelta(seconds=start_delay)
    gap = timedelta(seconds=1 / rate)
    horizon = start_at + timedelta(minutes=minutes) + timedelta(hours=2)
    with engine.begin() as connection:
        ids = list(connection.scalars(select(_c.id).order_by(_c.id)))
    step = max(len(ids) // max(count, 1), 1)
    chosen = ids[::step][:count]  # scattered over the table, as due rows are in a live database
    due = {row_id: start_at + gap * i for i, row_id in enumerate(chosen)}
    grants = issue(base, len(chosen))
    cipher = FieldCipher(keyring())
    values = [
        {
            "row_id": row_id,
            "rt": cipher.seal("connections", row_id, "refresh_token", grant["refresh_token"]),
            "at": cipher.seal("connections", row_id, "access_token", grant["access_token"]),
            "due_at": due[row_id],
            "expires": due[row_id] + timedelta(minutes=10),
        }
        for row_id, grant in zip(chosen, grants, strict=True)
    ]
    move = (
        update(connections)
        .where(_c.next_attempt_at < horizon)
        .values(
            next_attempt_at=_c.next_attempt_at + _LATER,
            expires_at=_c.expires_at + _LATER,
            version=_c.version + 1,  # marks the row touched, so ``seed.restore`` puts it back afterwards
        )
    )
    place = (
        update(connections)
        .where(_c.id == bindparam("row_id"))
        .values(
            refresh_token_enc=bindparam("rt"),
            access_token_enc=bindparam("at"),
            next_attempt_at=bindparam("due_at", type_=_c.next_attempt_at.type),
            expires_at=bindparam("expires", type_=_c.expires_at.type),
            version=_c.version + 1,
        )
    )
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # interval arithmetic in SQL keeps the column's type
            connection.execute(move)
        else:  # SQLite stores text: move in Python so the stored format stays the column type's
            rows = connection.execute(
                select(_c.id, _c.next_attempt_at, _c.expires_at).where(_c.next_attempt_at < horizon)
            )
            later = [
                {
                    "row_id": r.id,
                    "due_at": r.next_attempt_at + LATER_SPREAD,
                    "expires": r.expires_at + LATER_SPREAD,
                }
                for r in rows
            ]
            shift = (
                update(connections)
                .where(_c.id == bindparam("row_id"))
                .values(
                    next_attempt_at=bindparam("due_at", type_=_c.next_attempt_at.type),
                    expires_at=bindparam("expires", type_=_c.expires_at.type),
                    version=_c.version + 1,
                )
            )
            for start in range(0, len(later), 20_000):
                connection.execute(shift, later[start : start + 20_000])
        connection.execute(update(providers).values(token_url=base + "/oauth/token"))
        for start in range(0, len(values), 5000):
            connection.execute(place, values[start : start + 5000])
    vacuum_analyze(engine)
    return start_at, due


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(
    url: str, workers: int, concurrency: int, end_at: datetime, workdir: Path, engine: Engine, due: int
) -> dict[str, Any]:
    env = os.environ | {"GRANTKEEPER_DATABASE_URL": url, "GRANTKEEPER_ENCRYPTION_KEYS": BENCH_KEY,
                        "GRANTKEEPER_LOG_LEVEL": "WARNING"}  # fmt: skip
    command = [str(Path(sys.executable).parent / "grantkeeper"), "worker", "--concurrency", str(concurrency)]
    procs = [
        subprocess.Popen(
            command,
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"worker{i}.err").open("w"),
        )
        for i in range(workers)
    ]
    cpu: dict[int, float] = {}
    started = time.monotonic()
    try:
        while True:
            time.sleep(2)
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited: {(workdir / 'worker0.err').read_text()[-2000:]}")
                cpu[proc.pid] = cpu_seconds(proc.pid)
            with engine.connect() as connection:
                done = connection.scalar(select(func.count(func.distinct(_a.connection_id))))
            if datetime.now(UTC) >= end_at and done >= due:
                break
            if time.monotonic() - started > 3 * 3600:
                raise RuntimeError("the workers did not catch up within three hours")
    finally:
        for proc in procs:
            stop(proc)
    return {"seconds": time.monotonic() - started, "worker_cpu_seconds": sum(cpu.values())}


def lags(engine: Engine, due: dict[str, datetime]) -> list[float]:
    query = select(_a.connection_id, func.min(_a.attempted_at)).group_by(_a.connection_id)
    with engine.connect() as connection:
        first = dict(connection.execute(query).all())
    return sorted((first[row_id] - at).total_seconds() for row_id, at in due.items() if row_id in first)


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    seeded = ensure_seeded(kind, args.n, 1, reseed=args.reseed, log=lambda line: print(line, file=sys.stderr))
    engine = seeded.engine()
    try:
        restore(seeded, engine)
        with sandbox_process() as base, tempfile.TemporaryDirectory() as tmp:
            start_at, due = schedule_window(seeded, engine, base, args.minutes, args.start_delay)
            end_at = start_at + timedelta(minutes=args.minutes)
            print(f"{kind}: {len(due):,} due from {start_at:%H:%M:%S} to {end_at:%H:%M:%S}", file=sys.stderr)
            run = run_workers(seeded.url, args.workers, args.concurrency, end_at, Path(tmp), engine, len(due))
            stats = control(base, "GET", "/_sandbox/stats")
        measured = lags(engine, due)
        with engine.connect() as connection:
            outcomes = dict(connection.execute(select(_a.outcome, func.count()).group_by(_a.outcome)).all())
        window = args.minutes * 60
        return {
            "database": kind,
            "n": args.n,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "due_in_window": len(due),
            "asked_per_s": len(due) / window,
            "refreshed": len(measured),
            "attempts_by_outcome": outcomes,
            "lag_p50_s": percentile(measured, 0.5),
            "lag_p99_s": percentile(measured, 0.99),
            "lag_max_s": measured[-1],
            "worker_cpu_share": run["worker_cpu_seconds"] / run["seconds"],
            "reuse_detected": stats.get("reuse_detected"),
        }
    finally:
        restore(seeded, engine)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, default=1_000_000, help="connections stored")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the measured window")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument(
        "--start-delay", type=float, default=START_DELAY, help="seconds from the schedule to the window"
    )
    args = parser.parse_args()
    print("| database | stored | workers | due in window | asked /s | lag p50 s | lag p99 s | lag max s "
          "| worker CPU (share of a core) | failures | reuse |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.database or ["postgresql"]:
        r = measure(kind, args)
        failures = sum(v for k, v in r["attempts_by_outcome"].items() if k != "success")
        print(
            f"| {kind} | {r['n']:,} | {r['workers']} | {r['due_in_window']:,} | {r['asked_per_s']:.0f} | "
            f"{r['lag_p50_s']:.2f} | {r['lag_p99_s']:.2f} | {r['lag_max_s']:.2f} | "
            f"{r['worker_cpu_share']:.2f} | {failures} | {r['reuse_detected']} |",
            flush=True,
        )
        print(json.dumps(r, default=str), file=sys.stderr)


if __name__ == "__main__":
    main()
