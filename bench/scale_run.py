"""What every scenario of ``bench/scale_out.py`` shares: the rig (sandbox + fresh database + worker pool, torn
down in reverse order whatever happens), rounds, and the report (JSON summary plus one markdown table row)."""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scale_db import BenchDb, not_due, utcnow
from scale_rig import SandboxProc, Workers

SRC = Path(__file__).resolve().parent.parent / "src" / "grantkeeper"
#: The code the first rig of this process started its workers with (see ``src_fingerprint``).
SRC_AT_START: dict[str, str] = {}


def src_fingerprint() -> dict[str, str]:
    """What code the workers run: a hash of every ``src/grantkeeper`` Python file, and the newest file's
    modification time. The tree may change while a run goes on (restarted workers would load the new
    code), so reports carry it from the start and the end of the run."""
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(SRC.rglob("*.py")):
        digest.update(path.relative_to(SRC).as_posix().encode() + b"\0" + path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    stamp = datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds")
    return {"sha256": digest.hexdigest()[:12], "newest_file": stamp}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Rig:
    run_dir: Path
    sandbox: SandboxProc
    db: BenchDb
    workers: Workers

    def wait_ready(self, timeout: float = 120) -> float:
        """Wait until every worker has a database session (it has started and migrated); seconds taken."""
        wanted = set(self.workers.names.values())
        started = time.monotonic()
        while not wanted <= self.db.application_names():
            if self.workers.exited() or time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"workers did not start: exited {self.workers.exited()}; see {self.run_dir}"
                )
            time.sleep(0.1)
        return time.monotonic() - started


@dataclass(frozen=True)
class RigOptions:
    label: str
    workers: int
    concurrency: int | None
    poll_interval: float = 0.2
    grace_seconds: float = 0.0
    latency_ms: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_db: bool = False
    run_root: Path = Path(tempfile.gettempdir()) / "gk_scale_runs"


@contextmanager
def rig(options: RigOptions) -> Iterator[Rig]:
    """Sandbox, database and workers (not started yet); everything is stopped and dropped on the way out."""
    if not SRC_AT_START:
        SRC_AT_START.update(src_fingerprint())
    options.run_root.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{options.label}_", dir=options.run_root))
    log(f"{options.label}: logs in {run_dir}")
    with ExitStack() as stack:
        sandbox = SandboxProc(run_dir, grace_seconds=options.grace_seconds, latency_ms=options.latency_ms)
        stack.callback(sandbox.close)
        db = BenchDb(options.label.replace("-", "_"), keep=options.keep_db)
        stack.callback(db.close)
        workers = Workers(
            options.workers, run_dir, db.worker_url, db.key_line,
            concurrency=options.concurrency, poll_interval=options.poll_interval, extra_env=options.extra_env,
        )  # fmt: skip
        stack.callback(workers.stop_all, 10)
        yield Rig(run_dir, sandbox, db, workers)


@dataclass
class Round:
    number: int
    started_at: datetime
    due: int
    wall_s: float | None = None  # None: not finished before the deadline

    @property
    def per_s(self) -> float | None:
        return self.due / self.wall_s if self.wall_s else None

    def as_dict(self) -> dict[str, Any]:
        per_s = self.per_s
        return {"round": self.number, "started_at": self.started_at.isoformat(), "due": self.due,
                "wall_s": _round(self.wall_s), "refreshes_per_s": _round(per_s, 0)}  # fmt: skip


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def run_rounds(
    db: BenchDb,
    rounds: int,
    deadline: float,
    into: list[Round],
    *,
    more: Callable[[], bool] = lambda: False,
    tick: Callable[[Round, int | None], None] | None = None,
) -> list[Round]:
    """Rounds until ``rounds`` are done and ``more()`` is false: each makes every connected connection due
    (``UPDATE connections SET next_attempt_at = now``) and ends when all of them have been refreshed since.

    Its wall time runs from that UPDATE to the newest ``last_refreshed_at`` (set just before the commit).
    Queries that fail (the database is down) are retried; past ``deadline`` (monotonic) it stops."""
    while (len(into) < rounds or more()) and time.monotonic() < deadline:
        start = utcnow()
        due = db.make_due(start)
        if due is None:
            time.sleep(0.5)
            continue
        current = Round(len(into) + 1, start, due)
        into.append(current)
        last_note = time.monotonic()
        while time.monotonic() < deadline:
            pending = db.pending(start)
            if tick is not None:
                tick(current, pending)
            if pending == 0 and (last := db.last_refreshed(start)) is not None:
                current.wall_s = (last - start).total_seconds()
                break
            if time.monotonic() - last_note > 10:
                log(f"round {current.number}: {pending} of {due} still to refresh")
                last_note = time.monotonic()
            time.sleep(0.2)
        if current.wall_s is None:
            log(f"round {current.number} did not finish before the deadline")
            break
        log(f"round {current.number}: {due} refreshed in {current.wall_s:.1f}s ({current.per_s:,.0f}/s)")
    return into


def seconds_series(stats: dict[str, Any], start: datetime, end: datetime) -> dict[int, int]:
    """The sandbox's requests per wall-clock second between two instants (empty seconds included)."""
    by_second = {int(k): int(v) for k, v in stats["requests_by_second"].items()}
    first, last = int(start.timestamp()), int(end.timestamp())
    return {second: by_second.get(second, 0) for second in range(first, last + 1)}


def quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def report(
    name: str, summary: dict[str, Any], bars: dict[str, bool], header: str, row: str
) -> dict[str, Any]:
    """Print the JSON summary and the markdown row; returns the summary with the bars and verdict."""
    at_end = src_fingerprint()
    summary = summary | {
        "src_at_start": dict(SRC_AT_START), "src_at_end": at_end,
        "src_changed_during_run": SRC_AT_START.get("sha256") != at_end["sha256"],
        "bars": bars, "all_bars_hold": all(bars.values()),
    }  # fmt: skip
    print(json.dumps({"scenario": name} | summary, indent=2, default=str))
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    print(row, flush=True)
    return summary


def yes(value: bool) -> str:
    return "yes" if value else "**no**"


def options_from(args: argparse.Namespace, label: str, **extra: Any) -> RigOptions:
    return RigOptions(
        label, args.workers, args.concurrency, args.poll_interval, keep_db=args.keep_db, **extra
    )


def seed_not_due(r: Rig, connections: int) -> float:
    """``connections`` fresh sandbox grants (rotating refresh tokens), imported; none due yet."""
    started = time.monotonic()
    r.db.seed(r.sandbox, r.sandbox.issue(connections), expires_at=not_due)
    log(f"seeded {connections} connections in {time.monotonic() - started:.1f}s")
    return time.monotonic() - started
