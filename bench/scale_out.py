"""Scale-out and crash safety on PostgreSQL (issue 5): real ``grantkeeper worker`` processes, the sandbox
provider in its own process, connections whose refresh tokens are real, rotating sandbox grants.

    .venv/bin/python bench/scale_out.py concurrency                        # 4 workers, 10,000, 3 rounds
    .venv/bin/python bench/scale_out.py crash --grace-seconds 30           # 200 SIGKILLs, Okta-like client
    .venv/bin/python bench/scale_out.py crash --grace-seconds 0 --concurrency 1   # strict client
    .venv/bin/python bench/scale_out.py crash --grace-seconds 0 --introspection   # strict, RFC 7662
    .venv/bin/python bench/scale_out.py crash --grace-seconds 0            # strict, concurrency 32
    .venv/bin/python bench/scale_out.py db-outage                          # stops PostgreSQL for 30 s!
    .venv/bin/python bench/scale_out.py db-outage --stop-mode immediate    # ... as a crash (ADR 18)
    .venv/bin/python bench/scale_out.py provider-outage                    # 503 for an hour at 60x
    .venv/bin/python bench/scale_out.py limits                             # 50/s, then 10 in flight
    .venv/bin/python bench/scale_out.py revocation                         # half revoked, half 429s

Every scenario creates its own database ``bench_scale_*`` (dropped afterwards unless ``--keep-db``), starts
the sandbox (``python -m grantkeeper.sandbox --port 0``) and N workers (``python -m grantkeeper worker --json
--poll-interval 0.2`` with ``GRANTKEEPER_DATABASE_URL``, ``GRANTKEEPER_ENCRYPTION_KEYS``,
``GRANTKEEPER_LOG_LEVEL=WARNING`` and a 2 s connect / 3 s read timeout, so an attempt's deadline is 10 s),
stops by itself, and prints a JSON summary, then a markdown table row. Traffic stays on 127.0.0.1.

A *round* makes every connected connection due at once (``UPDATE connections SET next_attempt_at = now()``)
and ends when every connected connection has been refreshed since. Connections are seeded through the
store (``admin.add_provider`` / ``admin.import_rows``) with an access token valid for a day, so nothing is
due before the first round. ``crash`` differs: a killed worker's claimed but unstarted rows wait out the
2-minute claim lease, so UPDATE rounds would spend most of a run waiting for those; instead tokens live
2 x ``--period`` seconds with a refresh lead of ``--period`` (each connection is due every ``--period``
seconds, the first times spread evenly), workers refresh continuously while the killer works, and the run
ends once every connected connection has been refreshed after the last kill and ``--rounds`` times in all.
Workers' logs and cycle reports stay in ``$TMPDIR/gk_scale_runs/<scenario>_*``.

The audit at the end decrypts every stored refresh token (``SqlStore.read_tokens``) and compares it with the
sandbox's current refresh token for the connection's grant (``GET /_sandbox/grants/{id}``).
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Any, NoReturn

import scale_faults
import scale_revocation
from scale_db import BenchDb, utcnow
from scale_run import Rig, Round, log, options_from, quantile, report, rig, run_rounds, seed_not_due, yes

from grantkeeper.core.policy import Policy


def _outcomes_per_round(db: BenchDb, rounds: list[Round]) -> list[dict[str, int]]:
    bounds = [rnd.started_at for rnd in rounds]
    return [db.outcomes_between(start, end) for start, end in zip(bounds, [*bounds[1:], None], strict=True)]


def concurrency(args: argparse.Namespace) -> dict[str, Any]:
    """N workers, rounds over every connection: speed, and that nothing is refreshed twice or lost."""
    with rig(options_from(args, "concurrency")) as r:
        seed_not_due(r, args.connections)
        r.workers.start_all()
        log(f"{args.workers} workers ready in {r.wait_ready():.1f}s")
        rounds = run_rounds(r.db, args.rounds, time.monotonic() + args.timeout, [])
        clean = r.workers.stop_all()
        stats = r.sandbox.stats()
        outcomes = _outcomes_per_round(r.db, rounds)
        log("auditing every stored token against the sandbox ...")
        audit = r.db.audit(r.sandbox)
        events = r.workers.log_events()
    n = args.connections
    done = [rnd for rnd in rounds if rnd.wall_s is not None]
    summary = {
        "workers": args.workers, "concurrency": args.concurrency or 32, "connections": n,
        "rounds": [rnd.as_dict() | {"attempts": o} for rnd, o in zip(rounds, outcomes, strict=True)],
        "sandbox_requests": stats["requests"], "reuse_detected": stats["reuse_detected"],
        "false_disconnections": audit.connections - audit.connected,
        "lost_rotations": audit.lost_rotation_rows, "tokens_equal_to_sandbox": audit.tokens_match,
        "audit": audit.as_dict(), "worker_log_events": events, "workers_stopped_cleanly": clean,
    }  # fmt: skip
    bars = {
        "all rounds completed": len(done) == args.rounds,
        "every connection refreshed exactly once per round": all(o == {"success": n} for o in outcomes)
        and stats["requests"] == n * args.rounds,
        "reuse_detected == 0": stats["reuse_detected"] == 0,
        "false disconnections == 0": audit.connections == audit.connected,
        "no token lost (every stored token is the sandbox's current one)": audit.tokens_match == n,
    }
    cells = [f"{rnd.wall_s:.1f} s, {rnd.per_s:,.0f}/s" for rnd in done]
    rounds_head = " | ".join(f"round {i + 1}" for i in range(len(cells)))
    header = (
        f"| workers | connections | {rounds_head} | sandbox requests | reuse | false disconnections "
        "| lost rotations | tokens = sandbox |"
    )
    row = (
        f"| {args.workers} | {n:,} | {' | '.join(cells)} | {stats['requests']:,} | "
        f"{stats['reuse_detected']} | {audit.connections - audit.connected} | {audit.lost_rotation_rows} | "
        f"{audit.tokens_match:,} / {n:,} |"
    )
    return report("concurrency", summary, bars, header, row)


class Killer(threading.Thread):
    """SIGKILLs a random worker at random moments, ``target`` times, restarting each at once.

    A moment is a uniform draw from ``interval`` seconds after the previous kill, counted only while there is
    work (a live worker holds a lease, or a due connection is free to claim): in a round's tail, when all
    that is left are rows leased by killed workers waiting out their claim lease, the killer waits too.
    The victim is drawn uniformly among the workers that are up (their process has a database session, so
    it is past start-up and running its loop), whatever they are doing. What it held is read just before."""

    def __init__(self, r: Rig, target: int, interval: tuple[float, float], seed: int) -> None:
        super().__init__(name="killer", daemon=True)
        self.rig, self.target, self.interval = r, target, interval
        self.rng = random.Random(seed)
        self.kills: list[dict[str, Any]] = []
        self.halt = threading.Event()
        self.idle_s = 0.0  # time spent waiting for work

    def _victims(self) -> list[tuple[int, int]]:
        """The workers that are up, if there is work now; else none."""
        workers, db, now = self.rig.workers, self.rig.db, utcnow()
        live = workers.pids()
        leases = db.leases_by_pid(now) or {}
        if not any(pid in leases for pid in live.values()) and not db.claimable(now):
            return []
        sessions = db.application_names()
        return sorted((slot, pid) for slot, pid in live.items() if workers.names[slot] in sessions)

    def run(self) -> None:
        while len(self.kills) < self.target and not self.halt.wait(self.rng.uniform(*self.interval)):
            while not (up := self._victims()):
                if self.halt.wait(0.05):
                    return
                self.idle_s += 0.05
            slot, pid = self.rng.choice(up)
            leased, in_flight = (self.rig.db.leases_by_pid(utcnow()) or {}).get(pid, (0, 0))
            self.rig.workers.kill_and_restart(slot)
            self.kills.append(
                {"slot": slot, "pid": pid, "leased": leased, "in_flight": in_flight, "at": utcnow()}
            )
            if len(self.kills) % 25 == 0:
                log(f"{len(self.kills)} kills")


def _run_to_completion(r: Rig, killer: Killer, rounds: int, deadline: float) -> tuple[bool, int | None]:
    """Wait for the killer, then until every connected connection has been refreshed since the last kill
    (so every answer a kill lost has been retried) and at least ``rounds`` times in all."""
    done, least, noted = False, None, time.monotonic()
    while time.monotonic() < deadline:
        if not killer.is_alive():
            last_kill = killer.kills[-1]["at"] if killer.kills else utcnow()
            least = r.db.least_successes()
            if r.db.pending(last_kill) == 0 and least is not None and least >= rounds:
                done = True
                break
        time.sleep(1)
        if time.monotonic() - noted > 15:
            noted = time.monotonic()
            log(f"{len(killer.kills)} kills; fewest refreshes of a connection: {r.db.least_successes()}")
    killer.halt.set()
    killer.join()
    return done, least


def crash(args: argparse.Namespace) -> dict[str, Any]:
    """Continuous refreshing while workers are SIGKILLed at random; then every lost rotation must be
    identified. Rounds come from short token lifetimes here, not from UPDATEs (see the module docstring)."""
    label = f"crash-g{args.grace_seconds:g}-c{args.concurrency or 32}{'-i' if args.introspection else ''}"
    period = args.period
    env = {"GRANTKEEPER_REFRESH_LEAD_SECONDS": str(period)}  # token lifetime 2 x period: due every period
    policy = Policy(refresh_lead=timedelta(seconds=period))
    with rig(options_from(args, label, grace_seconds=args.grace_seconds, extra_env=env)) as r:
        seeded_at = utcnow()
        grants = r.sandbox.issue(args.connections, lifetime=2 * period)
        n = args.connections
        r.db.seed(r.sandbox, grants, policy=policy, introspection=args.introspection,
                  expires_at=lambda i: seeded_at + timedelta(seconds=period + period * i / n))  # fmt: skip
        r.workers.start_all()
        r.wait_ready()
        killer = Killer(r, args.kills, (args.kill_min, args.kill_max), args.seed)
        started = time.monotonic()
        killer.start()
        completed, least = _run_to_completion(r, killer, args.rounds, started + args.timeout)
        wall = time.monotonic() - started
        exited = r.workers.exited()
        clean = r.workers.stop_all()
        stats = r.sandbox.stats()
        log("auditing every stored token against the sandbox ...")
        audit = r.db.audit(r.sandbox)
        events = r.workers.log_events()
        worker_reports = r.workers.reports()
        successes = r.db.successes()
        gaps = r.workers.lost_rotation_gaps()
    kills = len(killer.kills)
    # Requests per grant at the sandbox against successes committed for its connection: on a grant whose
    # rotation was lost, the lost refresh is one, and every other uncommitted request is a retry of it.
    by_grant = {g: int(v) for g, v in stats["by_grant"].items()}
    retries_of_lost = sum(by_grant.get(g, 0) - successes[cid][1] - 1 for cid, g in audit.lost_grants.items())
    unrecorded_live = sum(
        by_grant.get(g, 0) - ok for cid, (g, ok) in successes.items() if cid not in audit.lost_grants
    )
    lost = audit.lost_rotation_rows
    strict = args.grace_seconds == 0
    summary = {
        "grace_seconds": args.grace_seconds, "introspection": args.introspection, "workers": args.workers,
        "concurrency": args.concurrency or 32,
        "connections": args.connections, "kills": kills,
        "kills_with_attempts_in_flight": sum(k["in_flight"] > 0 for k in killer.kills),
        "attempts_in_flight_at_kills": sum(k["in_flight"] for k in killer.kills),
        "killer_waited_for_work_s": round(killer.idle_s),
        "kill_log": [k | {"at": k["at"].isoformat()} for k in killer.kills],
        "period_s": period, "token_lifetime_s": 2 * period, "completed": completed,
        "fewest_refreshes_of_a_connection": least, "wall_s": round(wall, 1),
        "refreshes_committed": sum(ok for _, ok in successes.values()),
        "refreshes_per_s": round(sum(ok for _, ok in successes.values()) / wall),
        "sandbox_requests": stats["requests"], "sandbox_by_behaviour": stats["by_behaviour"],
        "sandbox_introspections": stats.get("introspections"),
        "reuse_detected": stats["reuse_detected"], "grace_uses": stats["grace_uses"], "lost_rotations": lost,
        "retries_of_lost_rotations": retries_of_lost,
        "uncommitted_requests_on_live_grants": unrecorded_live,
        "lost_rotations_true": audit.lost_truth, "lost_rotations_identified": audit.lost_identified,
        "lost_rotation_marked_but_token_current": audit.lost_rotation_false,
        "silently_broken": audit.silently_broken, "false_disconnections": audit.other_disconnected,
        "lost_rotation_retry_gap_s": {
            "min": gaps[0] if gaps else None, "p50": quantile(gaps, 0.5), "max": gaps[-1] if gaps else None,
            "under_30": sum(g < 30 for g in gaps), "30_to_100": sum(30 <= g < 100 for g in gaps),
            "100_and_over": sum(g >= 100 for g in gaps),
        },
        "audit": audit.as_dict(), "worker_log_events": events,
        "reported_by_completed_cycles": {
            key: sum(int(rep.get(key, 0)) for rep in worker_reports)
            for key in ("refreshed", "lost_rotations", "recovered_in_flight", "lease_conflicts", "errors")
        },
        "workers_exited_unasked": exited, "workers_stopped_cleanly": clean,
    }  # fmt: skip
    bars = {
        f"{args.kills} kills done": kills == args.kills,
        f"ran to completion (all refreshed after the last kill, >= {args.rounds} times)": completed,
        "silently broken == 0": audit.silently_broken == 0,
        "every lost rotation identified as lost_rotation": audit.lost_truth == audit.lost_identified
        and audit.lost_rotation_false == 0,
        "lost rotations <= kills": lost <= kills,
        "false disconnections == 0": audit.other_disconnected == 0,
    }
    if strict and args.introspection:  # the dead token is named by introspection, never sent again
        bars["reuse_detected == 0"] = stats["reuse_detected"] == 0
    elif strict:
        bars["reuse_detected == retries of lost rotations"] = stats["reuse_detected"] == retries_of_lost
    else:
        bars |= {"reuse_detected == 0": stats["reuse_detected"] == 0, "lost rotations == 0": lost == 0,
                 "grace_uses > 0": stats["grace_uses"] > 0}  # fmt: skip
    header = (
        "| client | worker concurrency | connections | kills (with attempts in flight) | fewest refreshes "
        "| wall "
        "| reuse_detected | grace_uses | lost rotations (identified / true) | silently broken "
        "| false disconnections | lost <= kills |"
    )
    client = "strict (grace 0)" if strict else f"grace {args.grace_seconds:g} s"
    client += ", introspection" if args.introspection else ""
    row = (
        f"| {client} | {args.concurrency or 32} | {args.connections:,} | {kills} "
        f"({summary['kills_with_attempts_in_flight']}) | {least} | {wall:.0f} s "
        f"| {stats['reuse_detected']} | {stats['grace_uses']} "
        f"| {lost} ({audit.lost_identified} / {audit.lost_truth}) | {audit.silently_broken} "
        f"| {audit.other_disconnected} | {yes(lost <= kills)} |"
    )
    return report("crash", summary, bars, header, row)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", required=True)

    def add(name: str, help_text: str, *, connections: int, workers: int, rounds: int = 1,
            timeout: float = 600) -> argparse.ArgumentParser:  # fmt: skip
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--connections", type=int, default=connections)
        p.add_argument("--workers", type=int, default=workers)
        p.add_argument("--rounds", type=int, default=rounds)
        p.add_argument("--concurrency", type=int, default=None, help="worker --concurrency (default 32)")
        p.add_argument("--poll-interval", type=float, default=0.2, help="worker --poll-interval")
        p.add_argument("--timeout", type=float, default=timeout, help="give up on rounds after this long")
        p.add_argument("--keep-db", action="store_true", help="do not drop the bench_scale_* database")
        return p

    add("concurrency", "N workers, every connection refreshed once per round", connections=10_000,
        workers=4, rounds=3)  # fmt: skip
    p = add("crash", "random SIGKILLs while refreshing", connections=10_000, workers=4, rounds=3)
    p.add_argument("--period", type=int, default=20, help="seconds between refreshes of a connection")
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--kill-min", type=float, default=0.3, help="seconds between kills: at least")
    p.add_argument("--kill-max", type=float, default=1.5, help="seconds between kills: at most")
    p.add_argument("--grace-seconds", type=float, default=30.0, help="sandbox rotation grace (0: strict)")
    p.add_argument(
        "--introspection", action="store_true", help="give the provider its RFC 7662 endpoint (ADR 12)"
    )
    p.add_argument("--seed", type=int, default=5)
    p = add("db-outage", "PostgreSQL stopped mid-run and started again", connections=10_000, workers=4,
            rounds=3)  # fmt: skip
    p.add_argument("--outage-after", type=float, default=10.0, help="seconds into the run")
    p.add_argument("--outage-seconds", type=float, default=30.0)
    p.add_argument(
        "--rehearse", action="store_true", help="everything but stopping PostgreSQL (harness test)"
    )
    p.add_argument(
        "--stop-mode", choices=("fast", "immediate"), default="fast",
        help="pg_ctl's shutdown mode: immediate is a crash (claims not yet on disk are lost, ADR 18)",
    )  # fmt: skip
    p = add("provider-outage", "503 for an hour of accelerated time", connections=2_000, workers=3)
    p.add_argument("--speed", type=float, default=60.0, help="accelerated time: real seconds per second x")
    p = add("limits", "provider rate and concurrency limits across workers", connections=1_500, workers=3)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--max-concurrency", type=int, default=10)
    p.add_argument("--latency-ms", type=float, default=200.0, help="sandbox latency for the concurrency run")
    scale_revocation.add_parser(add)
    return parser


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(f"stopped by signal {signum}")  # so every finally runs: PostgreSQL is started again


#: The accelerated scenarios set the worker's cycle to 300 s / ``--speed``, and the setting is a whole number
#: of seconds, at least 1.
MAX_SPEED = 300.0


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sizes and speeds the scenarios cannot run with, before anything starts (exit status 2)."""
    for name in ("connections", "workers", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    speed = getattr(args, "speed", None)
    if speed is not None and not 0 < speed <= MAX_SPEED:
        parser.error(
            f"--speed must be above 0 and at most {MAX_SPEED:g}: the workers' cycle is 300 s / speed, "
            "and the setting takes whole seconds, at least 1"
        )


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    _check(parser, args)
    signal.signal(signal.SIGTERM, _terminate)
    scenarios = {
        "concurrency": concurrency,
        "crash": crash,
        "db-outage": scale_faults.db_outage,
        "provider-outage": scale_faults.provider_outage,
        "limits": scale_faults.limits,
        "revocation": scale_revocation.revocation,
    }
    summary = scenarios[args.scenario](args)
    sys.exit(0 if summary["all_bars_hold"] else 1)


if __name__ == "__main__":
    main()
