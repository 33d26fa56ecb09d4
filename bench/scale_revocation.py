"""The mass-revocation scenario of ``bench/scale_out.py``: half the grants revoked while the other half is
rate-limited, every connection due at once, several workers on PostgreSQL, in accelerated time.

A provider that revokes many grants at once (an admin removing the app, a security reset) and a storm of
429s look alike for a moment: both fail every refresh. What the mission asks of grantkeeper is to tell them
apart under load: the revoked half must be warned once, disconnected once, and have their workflows paused,
each exactly once; the rate-limited half must stay connected, get at most the one rate-limit notice, and
recover when the 429s stop. Every connection is linked to a workflow of its own and, two by two, to one it
shares with a connection of the other half, so every shared workflow is paused by the one revoked
connection it has, while rate-limited connections pause nothing; a tenant webhook receives the
``workflow.paused`` events. The disconnections come due together, so the workers commit them in groups
(ADR 28) on one database, pausing shared workflows that other workers' commits may be locking too.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scale_db import not_due, utcnow
from scale_run import log, options_from, quantile, report, rig
from sqlalchemy import text

from grantkeeper.core.routing import DestinationKind


def revocation(args: argparse.Namespace) -> dict[str, Any]:
    """Revoke every other grant, rate-limit the rest, make all due; then audit what each half got."""
    x = args.speed
    cycle = 300 / x
    env = {
        "GRANTKEEPER_CYCLE_INTERVAL_SECONDS": str(round(cycle)),
        "GRANTKEEPER_REFRESH_LEAD_SECONDS": str(round(600 / x)),
        "GRANTKEEPER_TRANSIENT_BACKOFF_BASE_SECONDS": str(15 / x),
        "GRANTKEEPER_MAX_BACKOFF_SECONDS": str(round(6 * 3600 / x)),
        "GRANTKEEPER_REFRESH_SPREAD_SECONDS": str(300 / x),
    }
    n = args.connections
    storm_s = args.storm_minutes * 60 / x
    with ExitStack() as stack, rig(options_from(args, "revocation", extra_env=env)) as r:
        grants = r.sandbox.issue(n)
        r.db.seed(
            r.sandbox, grants, expires_at=not_due,
            workflows=lambda i: (f"own-{i}", f"pair-{i // 2}"),
        )  # fmt: skip
        receiver = Receiver()
        stack.callback(receiver.close)
        r.db.store.add_destination(
            r.db.tenant_id, DestinationKind.WEBHOOK, receiver.url, utcnow(), secret="whsec_" + "R" * 32
        )
        revoked = {g["grant_id"] for i, g in enumerate(grants) if i % 2 == 0}
        for g in grants:
            if g["grant_id"] in revoked:
                r.sandbox.call("POST", f"/_sandbox/grants/{g['grant_id']}/revoke")
            else:
                r.sandbox.call(
                    "PUT", f"/_sandbox/grants/{g['grant_id']}/behaviour", {"behaviour": "rate_limit"}
                )
        r.workers.start_all()
        r.wait_ready()
        start = utcnow()
        r.db.make_due(start)
        log(f"{len(revoked):,} grants revoked, {n - len(revoked):,} rate-limited; all due now")
        deadline = time.monotonic() + storm_s
        while time.monotonic() < deadline:
            time.sleep(0.2)
        storm_end = utcnow()  # before the first grant answers again: a success from here on is a recovery
        for g in grants:
            if g["grant_id"] not in revoked:
                r.sandbox.call("PUT", f"/_sandbox/grants/{g['grant_id']}/behaviour", {"behaviour": "ok"})
        log(f"429s stopped after {(storm_end - start).total_seconds():.0f}s; waiting for the rest to recover")
        deadline = time.monotonic() + 4 * cycle + 60
        while (r.db.pending(storm_end) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        pending_after = r.db.pending(storm_end)
        deadline = time.monotonic() + 30  # the workers' dispatchers deliver the events meanwhile
        while receiver.deliveries < _queued(r.db.engine) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        r.workers.stop_all()
        stats = r.sandbox.stats()
        rows = _audit(r.db.engine)
        attempts = r.db.attempts(start)
    users = {cid: user for cid, user, *_ in rows["connections"]}
    status = {users[cid]: (s, reason) for cid, _, s, reason in rows["connections"]}
    notices: dict[str, Counter[str]] = {user: Counter() for user in users.values()}
    for cid, kind, count in rows["notices"]:
        notices[users[cid]][kind] = count
    flows = {name: (s, reason) for name, s, reason in rows["workflows"]}
    events = Counter(str(name) for (name,) in rows["paused_events"])
    kept = [g["grant_id"] for g in grants if g["grant_id"] not in revoked]
    last_failure = {}
    transient: Counter[str] = Counter()
    for cid, at, outcome, _ in attempts:
        if users[cid] in revoked and outcome in ("auth", "reauth_required"):
            last_failure[cid] = (at - start).total_seconds()
        elif outcome == "transient":
            transient[users[cid]] += 1
    threshold = 5  # Policy.rate_limit_notice_threshold
    back: dict[str, float] = {}
    for cid, at, outcome, ms in attempts:
        if outcome == "success" and at >= storm_end and users[cid] not in back:
            back[users[cid]] = (at - storm_end).total_seconds() + ms / 1000
    recovery = sorted(back.get(u, float("inf")) for u in kept)
    disconnected_after = sorted(last_failure.values())
    per_second = Counter(int(s) for s in disconnected_after)
    expected_paused = {f"own-{i}" for i in range(0, n, 2)} | {f"pair-{i // 2}" for i in range(0, n, 2)}
    summary = {
        "speed": x, "workers": args.workers, "connections": n, "revoked": len(revoked),
        "rate_limited": len(kept), "storm_s": round(storm_s, 1), "cycle_s": cycle,
        "statuses": Counter(f"{s}/{reason or '-'}" for s, reason in status.values()),
        "revoked_disconnected": sum(status[u] == ("needs_reauthorization", "auth_failures") for u in revoked),
        "false_disconnections": sum(status[u][0] != "connected" for u in kept),
        "revoked_notices": dict(Counter(_notice_key(notices[u]) for u in revoked)),
        "rate_limited_notices": dict(Counter(_notice_key(notices[u]) for u in kept)),
        "rate_limited_429s_per_connection": dict(sorted(Counter(transient[u] for u in kept).items())),
        "workflows_paused": sum(s == "paused" for s, _ in flows.values()),
        "workflows_paused_as_expected": {name for name, (s, _) in flows.items() if s == "paused"}
        == expected_paused,
        "workflow_paused_events": sum(events.values()),
        "workflows_with_other_than_one_event": sum(events[name] != 1 for name in expected_paused)
        + sum(1 for name in events if name not in expected_paused),
        "workflow_paused_events_received": sum(receiver.paused.values()),
        "workflows_received_other_than_once": sum(receiver.paused[name] != 1 for name in expected_paused)
        + sum(1 for name in receiver.paused if name not in expected_paused),
        "disconnected_s_after_due_p50": _rounded(quantile(disconnected_after, 0.5)),
        "disconnected_s_after_due_max": _rounded(max(disconnected_after, default=None)),
        "disconnections_peak_per_second": max(per_second.values(), default=0),
        "rate_limited_back_s_p50": _rounded(quantile(recovery, 0.5)),
        "rate_limited_back_s_max": None if pending_after else _rounded(max(recovery, default=None)),
        "reuse_detected": stats["reuse_detected"],
    }  # fmt: skip
    bars = {
        "every revoked connection disconnected (auth_failures)": summary["revoked_disconnected"]
        == len(revoked),
        "revoked: exactly one warning and one disconnection notice each": all(
            notices[u]["integration_warning"] == 1 and notices[u]["integration_disconnected"] == 1
            for u in revoked
        ),
        "0 false disconnections among the rate-limited": summary["false_disconnections"] == 0,
        "rate-limited: no warning or disconnection notice; one rate-limit notice after 5 or more 429s": all(
            notices[u]["integration_warning"] == 0
            and notices[u]["integration_disconnected"] == 0
            and notices[u]["integration_rate_limit"] == (1 if transient[u] >= threshold else 0)
            for u in kept
        ),
        "revoked: no 429 counted, no rate-limit notice": all(
            transient[u] == 0 and notices[u]["integration_rate_limit"] == 0 for u in revoked
        ),
        "exactly the revoked connections' workflows paused": summary["workflows_paused_as_expected"],
        "one workflow.paused event per paused workflow, queued and received": summary[
            "workflows_with_other_than_one_event"
        ]
        == 0
        and summary["workflows_received_other_than_once"] == 0,
        "the rate-limited all refreshed after the storm": pending_after == 0,
        "0 reuses": stats["reuse_detected"] == 0,
    }
    header = (
        "| speed | workers | connections | revoked: disconnected | false disconnections | workflows paused "
        "| paused events | disconnected after due p50 / max | peak disconnections a second "
        "| rate-limited back p50 / max |"
    )
    row = (
        f"| {x:g}x | {args.workers} | {n:,} | {summary['revoked_disconnected']:,} of {len(revoked):,} "
        f"| {summary['false_disconnections']} | {summary['workflows_paused']:,} "
        f"| {summary['workflow_paused_events']:,} "
        f"| {summary['disconnected_s_after_due_p50']} / {summary['disconnected_s_after_due_max']} s "
        f"| {summary['disconnections_peak_per_second']:,} "
        f"| {summary['rate_limited_back_s_p50']} / {summary['rate_limited_back_s_max']} s |"
    )
    return report("revocation", summary, bars, header, row)


class Receiver:
    """A webhook endpoint on loopback that takes every delivery (204) and counts the workflows paused.

    A receiver that refused them would have the tenant's destination disabled after a few failures, and a
    disabled destination gets no more events queued: the count would then say nothing about the commits."""

    def __init__(self) -> None:
        self.paused: Counter[str] = Counter()
        self.deliveries = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = json.loads(body or b"{}")
                with lock:
                    receiver.deliveries += 1
                    if event.get("type") == "workflow.paused":
                        receiver.paused[str(event["data"]["name"])] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/gk"
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def _notice_key(counts: Counter[str]) -> str:
    """A connection's notices as one comparable string, e.g. ``integration_warning:1 ...``."""
    return " ".join(f"{kind.removeprefix('integration_')}:{n}" for kind, n in sorted(counts.items()) if n)


def _queued(engine: Any) -> int:
    """Webhook deliveries queued so far (each event once, whatever its state)."""
    with engine.begin() as conn:
        return int(conn.scalar(text("SELECT count(*) FROM outbox WHERE channel = 'webhook'")) or 0)


def _audit(engine: Any) -> dict[str, list[Any]]:
    """Every connection's status, every notification count, every workflow, every queued pause event."""
    queries = {
        "connections": "SELECT id, user_id, status, disconnect_reason FROM connections",
        "notices": "SELECT connection_id, type, count(*) FROM notifications GROUP BY connection_id, type",
        "workflows": "SELECT name, status, paused_reason FROM workflows",
        "paused_events": "SELECT payload -> 'data' ->> 'name' FROM outbox WHERE event = 'workflow.paused'",
    }
    with engine.begin() as conn:
        return {key: [tuple(row) for row in conn.execute(text(sql))] for key, sql in queries.items()}


def add_parser(add: Any) -> None:
    """Register the scenario's options on ``scale_out.py``'s parser (``add`` makes the subcommand)."""
    p = add("revocation", "half the grants revoked, half rate-limited, all due at once", connections=4_000,
            workers=4)  # fmt: skip
    p.add_argument("--speed", type=float, default=60.0, help="accelerated time: real seconds per second x")
    # the sandbox's 429 asks for 7 s (real) with Retry-After: 45 accelerated minutes give each connection
    # six or seven 429s, past the rate-limit notice's threshold of five
    p.add_argument("--storm-minutes", type=float, default=45.0, help="how long the 429s last (accelerated)")
