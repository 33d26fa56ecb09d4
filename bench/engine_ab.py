"""The refresh engine of two (or more) code versions, in one run, rounds alternating: did a change make it
faster or slower? Only the engine runs (no wrk, bare loop or Authlib), so a round takes seconds.

    git worktree add /tmp/before f671139
    .venv/bin/python bench/engine_ab.py --arm before=/tmp/before/src --arm after=src --rounds 3

Each arm's round runs in a process whose ``PYTHONPATH`` puts that version's ``src`` first: it starts the
sandbox provider on CPU 0 (``worker_vs_server.start_sandbox``), seeds ``--n`` due connections with rotating
refresh tokens into a fresh SQLite file with that version's schema, and runs one refresh cycle in a child
pinned to CPU 1 (``worker_vs_server.child``, role ``engine``). Reported per arm: refreshes per second and CPU
µs per refresh (the child's ``time.process_time``), and that CPU split between the store thread and the event
loop (from ``/proc``, so Linux only), median and range over the rounds. These machines are
shared and noisy: only differences larger than the spread within an arm mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_round(n: int, concurrency: int) -> dict[str, float]:
    """In the arm's process: seed, run the engine, return its rate and CPU per refresh."""
    sys.path.insert(0, str(HERE))
    from refresh_throughput import issue, seed
    from support import fresh_database, stop
    from worker_vs_server import child, start_sandbox

    from grantkeeper.adapters.crypto import Keyring, generate_key_line

    proc, base = start_sandbox()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            key = generate_key_line("bench")
            with fresh_database("sqlite", Path(tmp), f"ab{time.monotonic_ns()}") as url:
                seed(url, Keyring.parse(key), base + "/oauth/token", issue(base, n))
                result = child("engine", concurrency, ["--url", url, "--key", key])
    finally:
        stop(proc)
    if result["refreshed"] != n:
        raise SystemExit(f"refreshed {result['refreshed']} of {n}")
    return {
        "per_s": n / result["seconds"],
        "cpu_us": result["cpu_seconds"] / n * 1e6,
        "store_us": result["store_thread_cpu_seconds"] / n * 1e6,
        "loop_us": result["loop_thread_cpu_seconds"] / n * 1e6,
        "collector_s": result.get("collector_seconds", 0.0),  # absent from an older arm's child
        "collections": result.get("collections", 0),
    }


def round_in_child(label: str, n: int, concurrency: int, environment: dict[str, str]) -> dict[str, float]:
    """``one_round`` in a new process with ``environment`` added to this one's (an arm's ``PYTHONPATH``,
    ``bench/collector_time.py``'s collector switch); exits with the child's error if it fails."""
    command = [sys.executable, __file__, "--one-round", "--n", str(n), "--concurrency", str(concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | environment, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arm", action="append", required=False, help="LABEL=PATH to a version's src")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=20_000, help="due connections per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.n, args.concurrency)))
        return
    arms = [tuple(arm.split("=", 1)) for arm in args.arm or []]
    if len(arms) < 2 or any(len(arm) != 2 for arm in arms):
        raise SystemExit("give at least two --arm LABEL=PATH")
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in arms}
    for round_number in range(1, args.rounds + 1):
        for label, src in arms:
            result = round_in_child(label, args.n, args.concurrency, {"PYTHONPATH": str(Path(src).resolve())})
            results[label].append(result)
            print(
                f"round {round_number} {label}: {result['per_s']:,.0f}/s, {result['cpu_us']:.0f} µs "
                f"(store thread {result['store_us']:.0f}, event loop {result['loop_us']:.0f})",
                flush=True,
            )
    print(
        "\n| arm | rounds | refreshes/s median (range) | CPU µs/refresh median (range) "
        "| store thread µs | event loop µs |"
    )
    print("|---|---|---|---|---|---|")
    for label, rows in results.items():
        cells = [_spread([r["per_s"] for r in rows], ",.0f")]
        cells += [_spread([r[key] for r in rows], ".0f") for key in ("cpu_us", "store_us", "loop_us")]
        print(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")


def _spread(values: list[float], spec: str) -> str:
    """Median and range."""
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


if __name__ == "__main__":
    main()
