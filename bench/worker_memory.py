"""Worker memory (issue 5): the peak RSS of a ``grantkeeper worker`` process, 1,000,000 connections stored.

    .venv/bin/python bench/worker_memory.py --database sqlite --database postgresql --n 1000000 --due 20000

The bar: a worker's peak RSS stays under 200 MB with 1,000,000 connections stored. A worker must only ever
hold a batch of due rows, never the table, so its memory should not depend on how many connections exist.

Set-up: a database from ``seed.py`` with N connections of which ``--due`` are due (the rest due over the
next day; any that have come due since the seed was made are pushed back a day first, so exactly ``--due``
are due), every row restored to its seeded state. The sandbox provider runs in its own process; every due
row gets a real sandbox grant (its refresh and access tokens sealed into the row as the store would), and the
provider's token URL points at the sandbox, so the refreshes succeed, as they would in production. Then
``grantkeeper worker --concurrency 32 --max-cycles 2 --poll-interval 1 --json`` runs as a subprocess, as an
operator runs it (``GRANTKEEPER_DATABASE_URL`` and ``GRANTKEEPER_ENCRYPTION_KEYS`` in its environment, its
own working directory so no ``.env`` file is read): the first cycle refreshes every due connection, the
second finds none. The worker's RSS is sampled from ``/proc/<pid>/status`` every ``--sample-interval``
seconds, and its peak is the kernel's high-water mark of the worker's own memory (``VmHWM``) at the last
sample, which also catches spikes between samples. Only the worker process is measured: not the PostgreSQL
server, not the sandbox.

Not ``ru_maxrss`` from ``os.wait4``: Linux carries the high-water mark of the memory a process had before
``exec`` into it, and ``subprocess`` starts the worker with ``vfork``, so that figure is at least this
script's own RSS at the moment of the start (300 MB with 200,000 grants in memory; a trivial ``python -c
pass`` started from a process holding 300 MB reports 311 MB). It is kept in the output as
``kernel_ru_maxrss_mb`` for reference.
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
from sqlalchemy import Engine, bindparam, select, update
from support import sandbox_process, stop

from grantkeeper.adapters.db.rows import FieldCipher
from grantkeeper.adapters.db.tables import connections, providers
from grantkeeper.core.model import ConnectionStatus

MAX_PEAK_MB = 200.0
_c = connections.c


def rss_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB, or None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (KeyError, ValueError):
        return None


def json_documents(text: str) -> list[dict[str, Any]]:
    """The worker's ``--json`` cycle reports: one pretty-printed JSON object per cycle that found work."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) != -1:
        document, position = decoder.raw_decode(text, start)
        documents.append(document)
    return documents


def hwm_steps(samples: list[tuple[float, int, int]]) -> list[tuple[float, float, float]]:
    """When the high-water mark jumped by over 2 MB between two samples: (seconds, RSS MB, new HWM MB)."""
    steps, previous = [], 0
    for t, rss, hwm in samples:
        if hwm - previous > 2048 and previous:
            steps.append((round(t, 2), round(rss / 1024, 1), round(hwm / 1024, 1)))
        previous = hwm
    return steps


def prepare(seeded: Seeded, engine: Engine, token_url: str, base: str) -> int:
    """Exactly ``seeded.due`` rows due now, each holding a fresh sandbox grant; returns that count."""
    now = datetime.now(UTC)
    horizon = now + timedelta(minutes=30)  # nothing else may come due while the worker runs
    matured = select(_c.id, _c.next_attempt_at, _c.expires_at).where(
        _c.next_attempt_at > seeded.anchor, _c.next_attempt_at <= horizon
    )
    defer = (
        update(connections)
        .where(_c.id == bindparam("row_id"))
        .values(
            next_attempt_at=bindparam("due_at", type_=_c.next_attempt_at.type),
            expires_at=bindparam("expires", type_=_c.expires_at.type),
        )
    )
    due_query = (
        select(_c.id)
        .where(_c.status == ConnectionStatus.CONNECTED.value, _c.next_attempt_at <= now)
        .order_by(_c.next_attempt_at)
    )
    with engine.begin() as connection:
        pushed = [
            {
                "row_id": row.id,
                "due_at": row.next_attempt_at + LATER_SPREAD,
                "expires": row.expires_at + LATER_SPREAD,
            }
            for row in connection.execute(matured)
        ]
        if pushed:
            connection.execute(defer, pushed)
        deferred = len(pushed)
        due_ids = list(connection.scalars(due_query))
    if len(due_ids) != seeded.due:
        raise RuntimeError(f"{len(due_ids)} rows due, expected {seeded.due}")
    grants = issue(base, len(due_ids))
    cipher = FieldCipher(keyring())
    values = [
        {
            "row_id": row_id,
            "rt": cipher.seal("connections", row_id, "refresh_token", grant["refresh_token"]),
            "at": cipher.seal("connections", row_id, "access_token", grant["access_token"]),
        }
        for row_id, grant in zip(due_ids, grants, strict=True)
    ]
    tokens = (
        update(connections)
        .where(_c.id == bindparam("row_id"))
        .values(refresh_token_enc=bindparam("rt"), access_token_enc=bindparam("at"))
    )
    with engine.begin() as connection:
        connection.execute(update(providers).values(token_url=token_url))
        for start in range(0, len(values), 5000):
            connection.execute(tokens, values[start : start + 5000])
    vacuum_analyze(engine)
    print(
        f"{seeded.kind}: {len(due_ids):,} due with sandbox grants ({deferred:,} rows pushed back a day)",
        file=sys.stderr,
    )
    return len(due_ids)


def run_worker(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the worker to completion, sampling its RSS; its peak from the kernel when it is reaped."""
    env = os.environ | {
        "GRANTKEEPER_DATABASE_URL": url,
        "GRANTKEEPER_ENCRYPTION_KEYS": BENCH_KEY,
    }
    command = [str(Path(sys.executable).parent / "grantkeeper"), "worker", "--json",
               "--concurrency", str(args.concurrency), "--max-cycles", str(args.max_cycles),
               "--poll-interval", str(args.poll_interval)]  # fmt: skip
    out_path, err_path = workdir / "worker.out", workdir / "worker.err"
    samples: list[tuple[float, int, int]] = []
    with out_path.open("w") as out, err_path.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=err)
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.perf_counter() - started > args.timeout:
                    peak = max((rss for _, rss, _ in samples), default=0) / 1024
                    raise RuntimeError(
                        f"worker still running after {args.timeout:.0f} s (max RSS {peak:.0f} MB)"
                    )
                reading = rss_kb(proc.pid)
                if reading is not None:
                    samples.append((time.perf_counter() - started, reading[0], reading[1]))
                time.sleep(args.sample_interval)
        finally:
            stop(proc)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"worker exited {proc.returncode}: {err_path.read_text()[-2000:]}")
    cycles = json_documents(out_path.read_text())
    return {
        "peak_mb": samples[-1][2] / 1024 if samples else 0.0,  # VmHWM: the worker's own high-water mark
        "kernel_ru_maxrss_mb": usage.ru_maxrss / 1024,  # includes this script's RSS at vfork (docstring)
        "max_sampled_mb": max(rss for _, rss, _ in samples) / 1024,
        "last_hwm_mb": samples[-1][2] / 1024 if samples else 0.0,
        "hwm_steps": hwm_steps(samples),
        "last_sample_mb": samples[-1][1] / 1024 if samples else 0.0,
        "samples": len(samples),
        "seconds": elapsed,
        "due": sum(int(c["due"]) for c in cycles),
        "refreshed": sum(int(c["refreshed"]) for c in cycles),
        "errors": sum(int(c["errors"]) for c in cycles),
        "by_outcome": cycles[0]["by_outcome"] if cycles else {},
        "stderr_lines": len(err_path.read_text().splitlines()),
        "timeline_mb": [
            (round(t, 1), round(kb / 1024, 1)) for t, kb, _ in samples[:: max(1, len(samples) // 20)]
        ],
    }


def measure(kind: str, n: int, due: int, args: argparse.Namespace) -> dict[str, Any]:
    seeded = ensure_seeded(kind, n, due, reseed=args.reseed, log=lambda line: print(line, file=sys.stderr))
    if datetime.now(UTC) - seeded.anchor > LATER_SPREAD - timedelta(hours=1):
        seeded = ensure_seeded(kind, n, due, reseed=True, log=lambda line: print(line, file=sys.stderr))
    engine = seeded.engine()
    try:
        restore(seeded, engine)
        with sandbox_process() as base, tempfile.TemporaryDirectory() as tmp:
            prepared = prepare(seeded, engine, base + "/oauth/token", base)
            engine.dispose()
            result = run_worker(seeded.url, args, Path(tmp))
            stats = control(base, "GET", "/_sandbox/stats")
        sandbox = {"sandbox_ok": stats.get("refreshes_ok"), "reuse_detected": stats.get("reuse_detected")}
        return {"database": kind, "n": n, "due": prepared, **result, **sandbox}
    finally:
        restore(seeded, engine)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, action="append", help="connections stored (repeatable)")
    parser.add_argument("--due", type=int, default=20_000, help="connections due (capped at n)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-cycles", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--sample-interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the worker is stopped")
    parser.add_argument("--reseed", action="store_true", help="seed again even when a cached seed matches")
    args = parser.parse_args()
    results = []
    for kind in args.database or ["sqlite", "postgresql"]:
        for n in args.n or [1_000_000]:
            result = measure(kind, n, min(args.due, n), args)
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
    print(
        "| database | stored | due | refreshed | worker s | RSS at exit MB "
        f"| peak RSS MB | < {MAX_PEAK_MB:.0f} MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['database']} | {r['n']:,} | {r['due']:,} | {r['refreshed']:,} | {r['seconds']:.1f} "
            f"| {r['last_sample_mb']:.0f} | {r['peak_mb']:.0f} "
            f"| {'yes' if r['peak_mb'] < MAX_PEAK_MB else 'no'} |"
        )


if __name__ == "__main__":
    main()
