"""What committing a recovery costs against a plain refresh: the store's work after a provider's outage.

    .venv/bin/python bench/recovery_commit.py --database sqlite --database postgresql --n 3000
    PYTHONPATH=/tmp/before/src .venv/bin/python bench/recovery_commit.py ...   # another version's src

When a provider comes back after an outage, nearly every refresh is a recovery. The connection had a
rate-limit notice, so the success writes an in-app "recovered" notification, and its transient streak makes
it wake others (``RetryProviderNow``). ``commit_attempts`` groups plain successes into a few executemany
statements, but a commit with a notification or an effect goes on its own path.

This benchmark times ``store.commit_attempts`` on a fresh database, in batches of 64 (a busy worker's tick),
over ``--n`` claimed connections:
- ``plain``: healthy connections, so each success is a plain commit;
- ``recovery``: the same connections first put into a six-failure streak with the rate-limit notice sent,
  so each success carries a notice and a wake;
- ``disconnection``: the same connections with two auth failures and the warning sent, answered with
  ``invalid_grant``, so each attempt disconnects (an email notice and ``PauseWorkflows``): what a provider
  revoking many grants at once costs;
- ``paused``: the same, with each connection linked to a workflow of its own and, two by two, to a shared
  one, so every disconnection pauses workflows (one or two each, ``1.5 n`` in all).

The transitions are the real policy's (``core.machine.step``), and the notices are rendered as the worker
renders them. Reported: the store's time per attempt for each kind, and the ratios to plain. The kinds
alternate within each round.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from support import fresh_database

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, make_engine, migrate
from grantkeeper.core.machine import step
from grantkeeper.core.model import ErrorInfo, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.policy import Policy
from grantkeeper.ports import AttemptCommit, AttemptRecord, NewConnection, NewProvider
from grantkeeper.service.attempt import notification_contents

BATCH = 64
POLICY = Policy()


def one_run(kind: str, n: int, mode: str) -> float:
    """Microseconds of ``commit_attempts`` per attempt, for ``n`` attempts of one kind."""
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp, fresh_database(kind, Path(tmp), "recovery") as url:
        engine = make_engine(url)
        migrate(engine)
        store = SqlStore(engine, Keyring.parse(generate_key_line("bench")))
        tenant_id = store.ensure_tenant("bench")
        store.add_provider(
            tenant_id,
            NewProvider(
                "sandbox", "https://oauth.example.test/token", "app", "app-secret", default_expires_in=3600
            ),
        )
        rows = [
            NewConnection(
                "sandbox",
                f"u{i}",
                f"rt-{i}",
                email=f"u{i}@example.test",
                next_attempt_at=now,
                workflows=(f"own-{i}", f"pair-{i // 2}") if mode == "paused" else (),
            )
            for i in range(n)
        ]
        ids = list(store.import_connections(tenant_id, rows, now - timedelta(days=1)))
        if mode in ("disconnection", "paused"):
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE connections SET consecutive_failures = 2, warning_sent = :t"), {"t": True}
                )
        if mode == "recovery":
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE connections SET consecutive_transient_failures = 6, "
                        "rate_limit_notice_sent = :t"
                    ),
                    {"t": True},
                )
        tokens = TokenSet("at-new", "rt-new", expires_at=now + timedelta(hours=1))
        answer = (
            Outcome(OutcomeClass.AUTH, 400, error=ErrorInfo("invalid_grant"))
            if mode in ("disconnection", "paused")
            else Outcome(OutcomeClass.SUCCESS, 200, tokens=tokens)
        )
        seconds = 0.0
        for start in range(0, n, BATCH):
            commits = []
            for claim in store.claim_ids(
                tenant_id, ids[start : start + BATCH], now, "bench", timedelta(minutes=5)
            ):
                transition = step(claim.state, answer, POLICY, now, random.Random(0))
                record = AttemptRecord(
                    claim.connection_id,
                    now,
                    answer.klass,
                    answer.http_status,
                    None,
                    timedelta(milliseconds=100),
                )
                contents = notification_contents(claim, transition)
                commits.append(AttemptCommit(claim, answer, transition, record, contents))
            started = time.perf_counter()
            answers = store.commit_attempts(commits)
            seconds += time.perf_counter() - started
            if not all(answers):
                raise SystemExit("a commit was refused")
        with engine.connect() as connection:
            notices = connection.execute(text("SELECT count(*) FROM notifications")).scalar_one()
            paused = connection.execute(
                text("SELECT count(*) FROM workflows WHERE status = 'paused'")
            ).scalar_one()
        engine.dispose()
    if notices != (0 if mode == "plain" else n):  # a recovery or a disconnection says so once
        raise SystemExit(f"{mode}: {notices} notifications for {n} attempts")
    if paused != (n + (n + 1) // 2 if mode == "paused" else 0):  # each workflow once
        raise SystemExit(f"{mode}: {paused} workflows paused for {n} attempts")
    return seconds / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, default=3000, help="attempts per run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")
    rows = []
    for kind in args.database or ["sqlite", "postgresql"]:
        times: dict[str, list[float]] = {"plain": [], "recovery": [], "disconnection": [], "paused": []}
        for _ in range(args.rounds):
            for mode in times:
                times[mode].append(one_run(kind, args.n, mode))
                print(f"{kind} {mode}: {times[mode][-1]:,.0f} µs an attempt", flush=True)
        medians = {f"{mode}_us": statistics.median(values) for mode, values in times.items()}
        rows.append({"database": kind, "n": args.n} | medians)
    for row in rows:
        print(json.dumps(row))
    print(
        "\n| database | attempts | µs an attempt: plain | recovery | disconnection | with workflows "
        "| recovery/plain | disconnection/plain | with workflows/plain |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        plain = row["plain_us"]
        print(
            f"| {row['database']} | {row['n']:,} | {plain:,.0f} | {row['recovery_us']:,.0f} "
            f"| {row['disconnection_us']:,.0f} | {row['paused_us']:,.0f} | {row['recovery_us'] / plain:.1f} "
            f"| {row['disconnection_us'] / plain:.1f} | {row['paused_us'] / plain:.1f} |"
        )


if __name__ == "__main__":
    main()
