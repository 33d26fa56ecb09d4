"""What the engine's SQL alone costs, and the ceiling that and its HTTP client put on one worker.

    .venv/bin/python bench/store_floor.py --database sqlite --database postgresql --n 20000 --rounds 3

The engine's refresh cycle runs once over ``--n`` due connections (the sandbox provider on CPU 0, rotating
refresh tokens, concurrency 32) with every statement it sends to the database recorded in order: SQLite's
refresh path straight on the driver (``engine.watch_statements``), everything that goes through SQLAlchemy
(``before_cursor_execute``: all of it on PostgreSQL), and each transaction's BEGIN, COMMIT and ROLLBACK.
Then, pinned to CPU 1, the recording is replayed on a copy of the database as it was seeded, back to back on
one driver connection with the engine's settings: the same statements with the same values, as ``execute``
or ``executemany``, results fetched, and no Python of the engine's in between. The replay must leave every
connection row and the attempt log exactly as the engine did (checked), so it is the engine's SQL and
nothing else.

Reported per database, median of the rounds: the replay's CPU µs per refresh and its elapsed time, in all and
by statement kind (on PostgreSQL that adds the server's work and the round trips, which the store thread
waits for); the lean loop's CPU per refresh (the engine's HTTP client posting grants, nothing else;
``worker_vs_server.py``'s ``lean`` role) and wrk's rate against the same server. From them, the most one
worker could do if the engine's own work cost nothing: one core runs the HTTP client and the SQL's driver
side, and the store thread also waits for the database, so the floor per refresh is the larger of
(lean CPU + SQL CPU) and the SQL's elapsed time; its inverse is the ceiling, also as a share of wrk's rate.
Beside it, the engine in a run of its own (on grants of its own, pinned to CPU 1, not recorded;
``worker_vs_server.py``'s ``engine`` role): its rate, its CPU per refresh, what it spends beyond the lean
loop and the SQL (its own work: claims and their objects, the policy, AES-GCM, the commit's values, the
orchestration), and what that work may cost for the issue's bar, one worker at 0.6 of wrk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from refresh_throughput import control, issue, seed
from support import fresh_database, stop
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

    def hot(sql: str, parameters: Any) -> None:  # SQLite's refresh path, straight on the driver
        if sql.startswith("BEGIN"):
            steps.append(("begin", sql, None, False))
        else:
            steps.append(("sql", sql, parameters, isinstance(parameters, list)))

    def core(_conn: Any, _cursor: Any, sql: str, parameters: Any, _context: Any, is_many: bool) -> None:
        steps.append(("sql", sql, parameters, is_many))

    event.listen(engine, "before_cursor_execute", core)
    if engine.dialect.name == "postgresql":  # psycopg opens a transaction by itself; SQLite's BEGIN is sent
        event.listen(engine, "begin", lambda _conn: steps.append(("begin", "BEGIN", None, False)))
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


def replay(url: str, steps: list[Step]) -> dict[str, float]:
    """Send the recorded statements to a copy of the seeded database, back to back on one connection.

    Returns CPU seconds by statement kind, and ``wall``: the elapsed time of them all. On SQLite the two are
    nearly the same; on PostgreSQL the wall time includes the server's work and the round trips, which is
    what the engine's store thread waits for."""
    engine = make_engine(url)  # the engine's connection settings (WAL, synchronous, time zone, ...)
    pooled = engine.raw_connection()
    db = pooled.driver_connection
    is_sqlite = engine.dialect.name == "sqlite"
    cursor = db.cursor()
    kinds = {sql: kind_of(sql) for _, sql, _, _ in steps}
    seconds: dict[str, float] = {}
    clock, wall_clock = time.process_time, time.perf_counter
    wall = wall_clock()
    for step, sql, parameters, is_many in steps:
        started, wall_started = clock(), wall_clock()
        if step == "sql":
            if is_many:
                cursor.executemany(sql, parameters)
            else:
                cursor.execute(sql, parameters if parameters is not None else ())
                if cursor.description is not None:
                    cursor.fetchall()
            kind = kinds[sql]
        else:
            kind = "COMMIT" if step == "commit" else "transaction"
            if not is_sqlite:  # psycopg: a transaction begins with its first statement
                if step != "begin":
                    db.commit() if step == "commit" else db.rollback()
            elif db.in_transaction or step == "begin":
                cursor.execute(sql)
        seconds[kind] = seconds.get(kind, 0.0) + clock() - started
        seconds["wall " + kind] = seconds.get("wall " + kind, 0.0) + wall_clock() - wall_started
    seconds["wall"] = wall_clock() - wall
    cursor.close()
    pooled.close()
    engine.dispose()
    return seconds


def state_of(url: str) -> tuple[list[tuple[Any, ...]], int]:
    """What a replay must reproduce: every connection's row, and the attempt log's size."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM connections ORDER BY id")]
            attempts = connection.exec_driver_sql("SELECT count(*) FROM refresh_attempts").scalar_one()
    finally:
        engine.dispose()
    return rows, int(attempts)


def one_round(kind: str, n: int, seconds: int, base: str, tmp: Path) -> dict[str, float]:
    from grantkeeper.entrypoints.cli.app import run_async

    token_url = base + "/oauth/token"
    raw = raw_capacity(base, tmp, seconds, CONCURRENCY) if seconds > 0 else float("nan")
    key = generate_key_line("bench")
    label = f"floor{time.monotonic_ns()}"
    with contextlib.ExitStack() as stack:
        engine_url = stack.enter_context(fresh_database(kind, tmp, label))
        seed(engine_url, Keyring.parse(key), token_url, issue(base, n))
        # a copy as seeded (the seed closed its connections: SQLite's WAL is checkpointed, and PostgreSQL's
        # template has no session); then the engine's own run, on grants of its own, since they rotate
        template = str(tmp / f"{label}.db") if kind == "sqlite" else engine_url.rsplit("/", 1)[1]
        replay_url = stack.enter_context(fresh_database(kind, tmp, label + "r", template=template))
        pinned_url = stack.enter_context(fresh_database(kind, tmp, label + "p"))
        seed(pinned_url, Keyring.parse(key), token_url, issue(base, n))
        pinned = child("engine", CONCURRENCY, ["--url", pinned_url, "--key", key])
        assert pinned["refreshed"] == n, pinned
        steps, engine = run_async(recorded_cycle(engine_url, key))
        if engine["refreshed"] != n:
            raise SystemExit(f"the engine refreshed {engine['refreshed']} of {n}")
        affinity = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {CLIENT_CPU})
        try:
            by_kind = replay(replay_url, steps)
        finally:
            os.sched_setaffinity(0, affinity)
        if state_of(replay_url) != state_of(engine_url):
            raise SystemExit("the replay did not leave the database as the engine did: not the same SQL")
    token_file = tmp / f"tokens{label}.json"
    token_file.write_text(json.dumps([g["refresh_token"] for g in issue(base, n)]))
    lean = child("lean", CONCURRENCY, ["--url", str(token_file), "--token-url", token_url])
    assert lean["refreshed"] == n, lean
    wall = by_kind.pop("wall")
    walls = {
        name.removeprefix("wall "): by_kind.pop(name) for name in list(by_kind) if name.startswith("wall ")
    }
    result = {f"sql_{kind}_us": value / n * 1e6 for kind, value in by_kind.items()}
    result |= {f"elapsed_{kind}_us": value / n * 1e6 for kind, value in walls.items()}
    result["sql_us"] = sum(by_kind.values()) / n * 1e6
    result["sql_wall_us"] = wall / n * 1e6
    result["statements_per_refresh"] = sum(step == "sql" for step, *_ in steps) / n
    result["engine_cpu_us"] = pinned["cpu_seconds"] / n * 1e6
    result["engine_per_s"] = n / pinned["seconds"]
    result["lean_cpu_us"] = lean["cpu_seconds"] / n * 1e6
    result["raw_per_s"] = raw
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, default=20_000, help="due connections per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run; 0 runs no wrk")
    args = parser.parse_args()
    if args.seconds > 0 and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    for kind in args.database or ["sqlite"]:
        proc, base = start_sandbox()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rounds = [one_round(kind, args.n, args.seconds, base, Path(tmp)) for _ in range(args.rounds)]
            reuse = control(base, "GET", "/_sandbox/stats")["reuse_detected"]
        finally:
            stop(proc)
        report(kind, rounds)
        print(json.dumps({"database": kind, "rounds": rounds, "reuse_detected": reuse}), file=sys.stderr)
        if reuse:
            raise SystemExit(f"the sandbox saw {reuse} refresh-token reuses")


def report(kind: str, rounds: list[dict[str, float]]) -> None:
    """Medians of the rounds: the SQL by statement kind, then the ceiling it and the lean loop allow."""
    keys = sorted({key for r in rounds for key in r})
    m = {key: statistics.median(r.get(key, 0.0) for r in rounds) for key in keys}
    kinds = sorted(key for key in keys if key.startswith("sql_") and key not in ("sql_us", "sql_wall_us"))
    names = " | ".join(k.removeprefix("sql_").removesuffix("_us") for k in kinds)
    print(f"\n{kind}: the engine's SQL replayed alone, µs a refresh")
    print(f"| database | µs a refresh | SQL | {names} |")
    print("|---|---|---|" + "---|" * len(kinds))
    cells = " | ".join(f"{m[k]:.1f}" for k in kinds)
    print(f"| {kind} | CPU | {m['sql_us']:.1f} | {cells} |")
    cells = " | ".join(f"{m.get('elapsed_' + k.removeprefix('sql_'), 0.0):.1f}" for k in kinds)
    print(f"| {kind} | elapsed | {m['sql_wall_us']:.1f} | {cells} |")
    # one core runs the event loop (the HTTP client) and the store thread's Python; the store thread also
    # waits for the database, which on PostgreSQL works elsewhere: whichever is longer bounds the worker
    floor = max(m["lean_cpu_us"] + m["sql_us"], m["sql_wall_us"])
    ceiling = 1e6 / floor
    budget = 1e6 / (0.6 * m["raw_per_s"]) - floor  # what the engine's own work may cost for the 0.6 bar
    own = m["engine_cpu_us"] - m["lean_cpu_us"] - m["sql_us"]  # the CPU the engine adds to its parts
    print(
        f"\n{kind}: one worker's ceiling if the engine's own work cost nothing\n"
        "| database | statements a refresh | lean loop CPU µs | floor µs | ceiling /s | wrk /s | ceiling/wrk "
        "| engine /s | engine/ceiling | engine CPU µs | the engine's own CPU µs "
        "| its budget for 0.6 of wrk µs |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {kind} | {m['statements_per_refresh']:.2f} | {m['lean_cpu_us']:.0f} | {floor:.0f} | "
        f"{ceiling:,.0f} | {m['raw_per_s']:,.0f} | {ceiling / m['raw_per_s']:.2f} | "
        f"{m['engine_per_s']:,.0f} | {m['engine_per_s'] / ceiling:.2f} | {m['engine_cpu_us']:.0f} | "
        f"{own:.0f} | {budget:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
