"""What the engine's SQL alone costs on SQLite, and the ceiling that and its HTTP client put on one worker.

    .venv/bin/python bench/store_floor.py --n 20000 --rounds 3

The engine's refresh cycle runs once over ``--n`` due connections (the sandbox provider on CPU 0, rotating
refresh tokens, concurrency 32) with every statement it sends to SQLite recorded in order: the refresh
path's own (``engine.watch_statements``), SQLAlchemy Core's (``before_cursor_execute``), and each
transaction's BEGIN, COMMIT and ROLLBACK. Then, pinned to CPU 1, the recording is replayed on a copy of the
database as it was seeded, straight on a ``sqlite3`` connection with the engine's settings: the same
statements with the same values, as ``execute`` or ``executemany``, results fetched, and no Python of the
engine's in between. The replay must leave the database exactly as the engine did (checked), so it is the
engine's SQL and nothing else.

Reported, median of the rounds: the replay's CPU µs per refresh, in all and by statement kind; the lean
loop's (the engine's HTTP client posting grants, nothing else; ``worker_vs_server.py``'s ``lean`` role) and
wrk's rate against the same server. From them, the most one worker could reach on this core if the engine's
own work cost nothing: 1 / (lean loop's CPU + the SQL's CPU) a second, and that as a share of wrk's rate.
Beside it, the engine's CPU µs per refresh in a run of its own on another copy, pinned to CPU 1 and not
recorded (``worker_vs_server.py``'s ``engine`` role); what it spends beyond the lean loop and the SQL is its
own work (claims and their objects, the policy, AES-GCM, the commit's values, the orchestration); and what
that work may cost for the issue's bar, one worker at 0.6 of wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from refresh_throughput import control, issue, seed
from support import stop
from worker_vs_server import CLIENT_CPU, child, raw_capacity, start_sandbox

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db.engine import make_engine, watch_statements

#: One recorded step: ("sql", statement, parameters, is_many) or ("begin" | "commit" | "rollback", ...).
Step = tuple[str, str, Any, bool]
CONCURRENCY = 32


def kind_of(sql: str) -> str:
    """A statement's place in the refresh path, for the breakdown."""
    text = " ".join(sql.split())
    if text.startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK TO")):
        return "transaction"
    if text.startswith("UPDATE connections SET lease_owner") or text.startswith("WITH rescued_connections"):
        return "claim"
    if text.startswith("SELECT id FROM connections") and "in_flight_since IS NOT NULL" in text:
        return "claim"
    if text.startswith("UPDATE connections SET in_flight_since"):
        return "start"
    if text.startswith("UPDATE connections SET") and "fence_id" in text:
        return "commit_update"
    if text.startswith("INSERT INTO refresh_attempts"):
        return "attempt_log"
    return "other"


async def recorded_cycle(url: str, key: str) -> tuple[list[Step], dict[str, float]]:
    """The engine's cycle over every due connection, with each statement it sends recorded in order."""
    from sqlalchemy import event

    from grantkeeper.adapters.clock import SystemClock
    from grantkeeper.adapters.db.store import SqlStore
    from grantkeeper.adapters.http import HttpTokenEndpoint
    from grantkeeper.core.policy import Policy
    from grantkeeper.service.cycle import RefreshService

    engine = make_engine(url)
    steps: list[Step] = []

    def hot(sql: str, parameters: Any) -> None:
        if sql.startswith("BEGIN"):
            steps.append(("begin", sql, None, False))
        else:
            steps.append(("sql", sql, parameters, isinstance(parameters, list)))

    def core(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, is_many: bool) -> None:
        steps.append(("sql", sql, parameters, is_many))

    event.listen(engine, "before_cursor_execute", core)
    event.listen(engine, "commit", lambda _conn: steps.append(("commit", "COMMIT", None, False)))
    event.listen(engine, "rollback", lambda _conn: steps.append(("rollback", "ROLLBACK", None, False)))
    store = SqlStore(engine, Keyring.parse(key))
    clock = SystemClock()
    endpoint = HttpTokenEndpoint(clock, max_connections=CONCURRENCY)
    service = RefreshService(store, endpoint, clock, Policy(), concurrency=CONCURRENCY)
    with watch_statements(engine, hot):
        cpu = time.process_time()
        report = await service.run_cycle()
        cpu = time.process_time() - cpu
    await endpoint.close()
    service.runner.close()
    engine.dispose()
    return steps, {"refreshed": report.refreshed, "cpu_seconds": cpu}


def replay(path: Path, steps: list[Step]) -> dict[str, float]:
    """Send the recorded statements to a copy of the seeded database; CPU seconds by statement kind."""
    engine = make_engine(f"sqlite:///{path}")  # the engine's connection settings (WAL, synchronous, ...)
    pooled = engine.raw_connection()
    db: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
    kinds = {sql: kind_of(sql) for _, sql, _, _ in steps}
    seconds: dict[str, float] = {}
    clock = time.process_time
    for step, sql, parameters, is_many in steps:
        started = clock()
        if step == "sql":
            if is_many:
                db.executemany(sql, parameters)
            else:
                db.execute(sql, parameters if parameters is not None else ()).fetchall()
            kind = kinds[sql]
        else:
            if db.in_transaction or step == "begin":
                db.execute(sql)
            kind = "transaction" if step != "commit" else "COMMIT"
        seconds[kind] = seconds.get(kind, 0.0) + clock() - started
    pooled.close()
    engine.dispose()
    return seconds


def state_of(path: Path) -> tuple[list[tuple[Any, ...]], int]:
    """What a replay must reproduce: every connection's row, and the attempt log's size."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT * FROM connections ORDER BY id").fetchall()
        (attempts,) = db.execute("SELECT count(*) FROM refresh_attempts").fetchone()
    return rows, attempts


def one_round(n: int, seconds: int, base: str, tmp: Path) -> dict[str, float]:
    from grantkeeper.entrypoints.cli.app import run_async

    token_url = base + "/oauth/token"
    raw = raw_capacity(base, tmp, seconds, CONCURRENCY) if seconds > 0 else float("nan")
    key = generate_key_line("bench")
    label = time.monotonic_ns()
    engine_db, replay_db = tmp / f"engine{label}.db", tmp / f"replay{label}.db"
    seed(f"sqlite:///{engine_db}", Keyring.parse(key), token_url, issue(base, n))
    shutil.copyfile(engine_db, replay_db)  # the seed closed its connections: the WAL is checkpointed
    pinned_url = f"sqlite:///{tmp / f'pinned{label}.db'}"
    seed(pinned_url, Keyring.parse(key), token_url, issue(base, n))  # grants of its own: they rotate
    pinned = child("engine", CONCURRENCY, ["--url", pinned_url, "--key", key])
    assert pinned["refreshed"] == n, pinned
    steps, engine = run_async(recorded_cycle(f"sqlite:///{engine_db}", key))
    if engine["refreshed"] != n:
        raise SystemExit(f"the engine refreshed {engine['refreshed']} of {n}")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        by_kind = replay(replay_db, steps)
    finally:
        os.sched_setaffinity(0, affinity)
    if state_of(replay_db) != state_of(engine_db):
        raise SystemExit("the replay did not leave the database as the engine did: not the same SQL")
    token_file = tmp / f"tokens{label}.json"
    token_file.write_text(json.dumps([g["refresh_token"] for g in issue(base, n)]))
    lean = child("lean", CONCURRENCY, ["--url", str(token_file), "--token-url", token_url])
    assert lean["refreshed"] == n, lean
    result = {f"sql_{kind}_us": value / n * 1e6 for kind, value in by_kind.items()}
    result["sql_us"] = sum(by_kind.values()) / n * 1e6
    result["statements_per_refresh"] = sum(step == "sql" for step, *_ in steps) / n
    result["engine_cpu_us"] = pinned["cpu_seconds"] / n * 1e6
    result["lean_cpu_us"] = lean["cpu_seconds"] / n * 1e6
    result["raw_per_s"] = raw
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="due connections per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run; 0 runs no wrk")
    args = parser.parse_args()
    if args.seconds > 0 and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    proc, base = start_sandbox()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rounds = [one_round(args.n, args.seconds, base, Path(tmp)) for _ in range(args.rounds)]
        reuse = control(base, "GET", "/_sandbox/stats")["reuse_detected"]
    finally:
        stop(proc)
    keys = sorted({key for r in rounds for key in r})
    m = {key: statistics.median(r.get(key, 0.0) for r in rounds) for key in keys}
    kinds = sorted(key for key in keys if key.startswith("sql_") and key != "sql_us")
    print(
        "| SQL µs a refresh | " + " | ".join(k.removeprefix("sql_").removesuffix("_us") for k in kinds) + " |"
    )
    print("|---|" + "---|" * len(kinds))
    print(f"| {m['sql_us']:.1f} | " + " | ".join(f"{m[k]:.1f}" for k in kinds) + " |")
    floor = m["lean_cpu_us"] + m["sql_us"]
    ceiling = 1e6 / floor
    budget = 1e6 / (0.6 * m["raw_per_s"]) - floor  # what the engine's own work may cost for the 0.6 bar
    print(
        "\n| statements a refresh | lean loop CPU µs | lean + SQL µs | ceiling /s | wrk /s | ceiling/wrk "
        "| engine CPU µs | the engine's own work µs | its budget for 0.6 of wrk µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {m['statements_per_refresh']:.2f} | {m['lean_cpu_us']:.0f} | {floor:.0f} | {ceiling:,.0f} | "
        f"{m['raw_per_s']:,.0f} | {ceiling / m['raw_per_s']:.2f} | {m['engine_cpu_us']:.0f} | "
        f"{m['engine_cpu_us'] - floor:.0f} | {budget:.0f} |",
        flush=True,
    )
    print(json.dumps({"rounds": rounds, "reuse_detected": reuse}), file=sys.stderr)
    if reuse:
        raise SystemExit(f"the sandbox saw {reuse} refresh-token reuses")


if __name__ == "__main__":
    main()
