"""The fault scenarios of ``bench/scale_out.py``: PostgreSQL stopped mid-run, the provider answering 503
for an hour of accelerated time, and provider limits (rate, concurrency) across workers."""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from scale_db import utcnow
from scale_rig import Postgres
from scale_run import (
    Round,
    log,
    mean,
    options_from,
    quantile,
    report,
    rig,
    run_rounds,
    seconds_series,
    seed_not_due,
)

from grantkeeper.core.policy import Policy


class DbOutage(threading.Thread):
    """Stops PostgreSQL, waits, starts it again (always: the start is in a ``finally``)."""

    def __init__(self, pg: Postgres, seconds: float, *, rehearse: bool = False, mode: str = "fast") -> None:
        super().__init__(name="db-outage", daemon=True)
        self.pg, self.seconds, self.rehearse, self.mode = pg, seconds, rehearse, mode
        self.times: dict[str, datetime] = {}
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.times["stop_requested"] = utcnow()
            if self.rehearse:
                log("REHEARSAL: PostgreSQL is NOT stopped")
            else:
                self.pg.stop(self.mode)
            self.times["stopped"] = utcnow()
            time.sleep(self.seconds)
        finally:
            self.times["start_requested"] = utcnow()
            if not self.pg.is_online():
                self.pg.start()
            self.times["started"] = utcnow()
            self.done.set()


def db_outage(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds; mid-round PostgreSQL goes away for ``--outage-seconds``; the same workers must carry on."""
    pg = Postgres()
    if not pg.is_online():
        raise SystemExit(f"PostgreSQL {pg.version}/main is not online")
    outage = DbOutage(pg, args.outage_seconds, rehearse=args.rehearse, mode=args.stop_mode)
    rounds: list[Round] = []
    with rig(options_from(args, "db-outage")) as r, pg.always_started():
        seed_not_due(r, args.connections)
        r.workers.start_all()
        r.wait_ready()
        began = time.monotonic()

        def tick(rnd: Round, pending: int | None) -> None:
            mid_round = pending is not None and 0.1 * rnd.due < pending < 0.9 * rnd.due
            is_time = time.monotonic() - began >= args.outage_after
            if not outage.is_alive() and not outage.done.is_set() and mid_round and is_time:
                log(f"round {rnd.number}: {pending} of {rnd.due} to go; stopping PostgreSQL")
                outage.start()

        def more() -> bool:  # until a whole round has started (and ended) after PostgreSQL is back
            started = outage.times.get("started")
            return started is None or not any(rnd.started_at > started for rnd in rounds)

        run_rounds(r.db, args.rounds, began + args.timeout, rounds, more=more, tick=tick)
        if outage.is_alive():
            outage.join()
        exited = r.workers.exited()
        spawns = dict(r.workers.spawns)
        clean = r.workers.stop_all()
        stats = r.sandbox.stats()
        log("auditing every stored token against the sandbox ...")
        audit = r.db.audit(r.sandbox)
        events = r.workers.log_events()
        per_worker = [r.workers.reports(slot) for slot in range(args.workers)]
    t = outage.times
    down_from, up_at = t["stopped"], t["started"]
    series = seconds_series(stats, rounds[0].started_at, rounds[-1].started_at + timedelta(seconds=60))
    # The sandbox counts requests per whole wall-clock second, so only seconds wholly inside the outage count
    # as "while down"; the second in which the start command was given straddles it (the server accepts
    # connections a fraction of a second after the command) and is reported apart, as the resumption's.
    start_at = t["start_requested"].timestamp()
    inside = [n for s, n in series.items() if down_from.timestamp() + 1 <= s and s + 1 <= start_at]
    resumed = [s for s, n in series.items() if s >= int(start_at) and n > 0]
    resume_s = round(max(resumed[0], start_at) - start_at, 1) if resumed else None
    hit = [rnd for rnd in rounds if rnd.started_at < down_from]
    hit_round = hit[-1] if hit else None
    hit_end = (
        hit_round.started_at + timedelta(seconds=hit_round.wall_s) if hit_round and hit_round.wall_s else None
    )
    after = [
        sum(int(rep["refreshed"]) for rep in reps if datetime.fromisoformat(rep["started_at"]) > up_at)
        for reps in per_worker
    ]
    n = args.connections
    summary = {
        "workers": args.workers, "concurrency": args.concurrency or 32, "connections": n,
        "stop_mode": args.stop_mode, "outage": {k: v.isoformat() for k, v in t.items()},
        "outage_seconds": round((up_at - down_from).total_seconds(), 1),
        "rounds": [rnd.as_dict() for rnd in rounds],
        "round_hit": None if hit_round is None else hit_round.number,
        "round_hit_finished_s_after_start": _since(hit_end, up_at),
        "requests_while_down": sum(inside), "requests_resumed_s_after_start_command": resume_s,
        "requests_in_the_second_of_the_start_command": series.get(int(start_at), 0),
        "requests_by_second_around_outage": {
            datetime.fromtimestamp(s, UTC).strftime("%H:%M:%S"): n for s, n in series.items()
            if down_from.timestamp() - 3 <= s <= up_at.timestamp() + 3
        },
        "start_command_took_s": _since(up_at, t["start_requested"]),
        "refreshed_per_worker_in_cycles_started_after_restart": after,
        "cycles_per_worker_started_after_restart": [
            sum(datetime.fromisoformat(rep["started_at"]) > up_at for rep in reps) for reps in per_worker
        ],
        "last_cycle_report_per_worker": [reps[-1]["finished_at"] if reps else None for reps in per_worker],
        "workers_exited": exited, "worker_spawns": spawns, "workers_stopped_cleanly": clean,
        "reuse_detected": stats["reuse_detected"], "lost_rotations": audit.lost_rotation_rows,
        "false_disconnections": audit.connections - audit.connected,
        "tokens_equal_to_sandbox": audit.tokens_match,
        "audit": audit.as_dict(), "worker_log_events": events,
    }  # fmt: skip
    bars = {
        "no worker exited or was restarted": not exited and all(v == 1 for v in spawns.values()),
        "refreshes resumed: a whole round after the restart completed": not more()
        and all(rnd.wall_s is not None for rnd in rounds),
        "every worker refreshed again after the restart": all(a > 0 for a in after),
        "workers stop on SIGTERM": all(clean.values()),
        "reuse_detected == 0": stats["reuse_detected"] == 0,
        "no token lost (every stored token is the sandbox's current one)": audit.tokens_match == n,
        "false disconnections == 0": audit.connections == audit.connected,
    }
    header = ("| workers | connections | outage | round hit ends after restart | requests while down | "
              "requests resume after the start command | per-worker refreshes after | reuse | "
              "lost rotations | tokens = sandbox | false disconnections |")  # fmt: skip
    row = (f"| {args.workers} | {n:,} | {summary['outage_seconds']} s | "
           f"{summary['round_hit_finished_s_after_start']} s | {sum(inside)} | {resume_s} s | "
           f"{' / '.join(str(a) for a in after)} | {stats['reuse_detected']} | {audit.lost_rotation_rows} | "
           f"{audit.tokens_match:,} / {n:,} | {audit.connections - audit.connected} |")  # fmt: skip
    return report("db-outage", summary, bars, header, row)


def provider_outage(args: argparse.Namespace) -> dict[str, Any]:
    """An hour of 503s in accelerated time; every figure of the policy is divided by ``--speed``."""
    x = args.speed
    cycle, lead, lifetime, outage_s = 300 / x, 600 / x, round(3600 / x), 3600 / x
    env = {
        "GRANTKEEPER_CYCLE_INTERVAL_SECONDS": str(round(cycle)),
        "GRANTKEEPER_REFRESH_LEAD_SECONDS": str(round(lead)),
        "GRANTKEEPER_TRANSIENT_BACKOFF_BASE_SECONDS": str(15 / x),
        "GRANTKEEPER_MAX_BACKOFF_SECONDS": str(round(6 * 3600 / x)),
        "GRANTKEEPER_REFRESH_SPREAD_SECONDS": str(300 / x),
    }
    policy = Policy(
        refresh_lead=timedelta(seconds=round(lead)), cycle_interval=timedelta(seconds=round(cycle)),
        schedule_tolerance=timedelta(seconds=round(cycle) / 10), refresh_spread=timedelta(seconds=300 / x),
    )  # fmt: skip
    n = args.connections
    with rig(options_from(args, "provider-outage", extra_env=env)) as r:
        seeded_at = utcnow()
        grants = r.sandbox.issue(n, lifetime=lifetime)
        # expiries spread over one lifetime, from a quarter of a lifetime on: due from then on, evenly
        spread = timedelta(seconds=lifetime)
        r.db.seed(r.sandbox, grants, policy=policy,
                  expires_at=lambda i: seeded_at + spread / 4 + spread * i / n)  # fmt: skip
        r.workers.start_all()
        r.wait_ready()
        log("warm-up: until every connection has been refreshed once")
        while (r.db.pending(seeded_at) or 0) > 0:
            time.sleep(0.5)
        start = utcnow()
        r.sandbox.call("PUT", "/_sandbox/outage", {"behaviour": "unavailable"})
        log(f"provider outage: 503 to everything for {outage_s:.0f}s")
        time.sleep(outage_s)
        r.sandbox.call("DELETE", "/_sandbox/outage")
        end = utcnow()
        log("provider back; waiting until every connection has refreshed since")
        deadline = time.monotonic() + 4 * cycle + 30
        while (r.db.pending(end) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        pending_after = r.db.pending(end)
        last = r.db.last_refreshed(end)
        time.sleep(1)
        r.workers.stop_all()
        stats = r.sandbox.stats()
        statuses = r.db.status_counts()
        notices = r.db.notices()
        attempts = r.db.attempts(start)
        ids = r.db.connection_ids()
        probes = sum(int(rep.get("probes", 0)) for rep in r.workers.reports())
    transient: Counter[str] = Counter(
        cid for cid, at, outcome, _ in attempts if outcome == "transient" and at < end
    )
    first_ok: dict[str, float] = {}
    for cid, at, outcome, ms in attempts:
        if outcome == "success" and at >= end and cid not in first_ok:
            first_ok[cid] = (at - end).total_seconds() + ms / 1000
    recovery = [round(first_ok.get(cid, float("inf")), 2) for cid in ids if transient[cid]]
    half_seconds = Counter(int(v * 2) for v in recovery if math.isfinite(v))
    rate_notices = notices["integration_rate_limit"]
    threshold = 5
    affected = [cid for cid in ids if transient[cid] >= threshold]
    notice_histogram = Counter(rate_notices[cid] for cid in ids)
    disconnected = n - statuses.get("connected/-", 0)
    all_back_s = None if last is None or pending_after else (last - end).total_seconds()
    during = seconds_series(stats, start, end)
    summary = {
        "speed": x, "workers": args.workers, "connections": n, "token_lifetime_s": lifetime,
        "outage_s": round((end - start).total_seconds(), 1), "worker_env": env, "statuses": statuses,
        "disconnections": disconnected, "requests_during_outage": sum(during.values()),
        "mean_requests_per_s_during_outage": round(sum(during.values()) / max(len(during), 1), 1),
        "probes": probes,
        "connections_with_a_failure_in_the_outage": sum(1 for cid in ids if transient[cid]),
        "affected_5_or_more_failures": len(affected),
        "rate_limit_notices_per_connection_histogram": dict(notice_histogram),
        "affected_with_exactly_one_notice": sum(rate_notices[cid] == 1 for cid in affected),
        "recovered_notices": sum(notices["integration_recovered"].values()),
        "all_refreshed_s_after_outage": None if all_back_s is None else round(all_back_s, 2),
        "recovery_s_min": min(recovery, default=None),
        "recovery_s_p50": quantile(recovery, 0.5), "recovery_s_p99": quantile(recovery, 0.99),
        "recovered_per_half_second": {
            f"{b / 2:g}-{b / 2 + 0.5:g}": n for b, n in sorted(half_seconds.items())
        },
        "recovery_s_max": max(recovery, default=None), "cycle_s": cycle,
        "reuse_detected": stats["reuse_detected"],
    }  # fmt: skip
    bars = {
        "0 disconnections": disconnected == 0,
        "exactly one rate-limit notice per affected connection": len(affected) > 0
        and all(rate_notices[cid] == 1 for cid in affected)
        and all(rate_notices[cid] == 0 for cid in ids if transient[cid] < threshold),
        "every connection refreshed within one cycle after the outage": all_back_s is not None
        and all_back_s <= cycle,
        "reuse_detected == 0": stats["reuse_detected"] == 0,
    }
    header = (
        "| speed | workers | connections | outage | disconnections | affected (>= 5 failures) | "
        "notices per connection (count: connections) | all refreshed after the outage | recovery p50 / max |"
    )
    row = (
        f"| {x:g}x | {args.workers} | {n:,} | {summary['outage_s']} s | {disconnected} | {len(affected):,} | "
        f"{', '.join(f'{k}: {v}' for k, v in sorted(notice_histogram.items()))} | "
        f"{summary['all_refreshed_s_after_outage']} s (cycle {cycle:g} s) | "
        f"{_s(summary['recovery_s_p50'])} / {_s(summary['recovery_s_max'])} |"
    )
    return report("provider-outage", summary, bars, header, row)


def _since(at: datetime | None, origin: datetime) -> float | None:
    return None if at is None else round((at - origin).total_seconds(), 1)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def limits(args: argparse.Namespace) -> dict[str, Any]:
    """One round of N due connections with a rate limit, then another with a concurrency limit."""
    runs: list[dict[str, Any]] = []
    for mode in ("rate", "concurrency"):
        limit = (
            {"rate_limit_per_second": args.rate}
            if mode == "rate"
            else {"max_concurrency": args.max_concurrency}
        )
        latency = 0.0 if mode == "rate" else args.latency_ms
        with rig(options_from(args, f"limits-{mode}", latency_ms=latency)) as r:
            grants = r.sandbox.issue(args.connections)
            r.db.seed(r.sandbox, grants, expires_at=lambda _: utcnow() + timedelta(days=1), **limit)
            r.workers.start_all()
            r.wait_ready()
            r.sandbox.call("POST", "/_sandbox/stats/reset")
            rounds = run_rounds(r.db, 1, time.monotonic() + args.timeout, [])
            r.workers.stop_all()
            stats = r.sandbox.stats()
        (rnd,) = rounds
        series = seconds_series(
            stats, rnd.started_at, rnd.started_at + timedelta(seconds=(rnd.wall_s or 0) + 2)
        )
        active = [s for s, v in series.items() if v]
        full = [v for s, v in series.items() if active and active[0] < s < active[-1]]
        runs.append({
            "mode": mode, "limit": limit, "sandbox_latency_ms": latency, "connections": args.connections,
            "workers": args.workers, "wall_s": None if rnd.wall_s is None else round(rnd.wall_s, 2),
            "requests": stats["requests"],
            "max_requests_in_a_second": max(series.values(), default=0),
            "mean_requests_per_full_second": None if not full else round(mean(full) or 0, 1),
            "max_in_flight": stats["max_in_flight"], "reuse_detected": stats["reuse_detected"],
            "all_refreshed": rnd.wall_s is not None,
        })  # fmt: skip
    rate, conc = runs
    cap = args.rate * 1.1
    bars = {
        f"rate run: never more than {cap:g} requests in any second": rate["max_requests_in_a_second"] <= cap,
        f"concurrency run: never more than {args.max_concurrency} in flight": conc["max_in_flight"]
        <= args.max_concurrency,
        "every connection refreshed, reuse_detected == 0": all(
            run["all_refreshed"] and run["reuse_detected"] == 0 for run in runs
        ),
    }
    header = (
        "| limit | workers | connections | sandbox latency | wall | max requests in a second | "
        "mean per full second | max in flight | reuse |"
    )
    rows = [
        f"| {next(iter(run['limit'].values())):g} {'req/s' if run['mode'] == 'rate' else 'in flight'} "
        f"| {run['workers']} | {run['connections']:,} | {run['sandbox_latency_ms']:g} ms "
        f"| {run['wall_s']:.1f} s | {run['max_requests_in_a_second']} "
        f"| {run['mean_requests_per_full_second']} | {run['max_in_flight']} | {run['reuse_detected']} |"
        for run in runs
    ]
    return report("limits", {"runs": runs}, bars, header, "\n".join(rows))
