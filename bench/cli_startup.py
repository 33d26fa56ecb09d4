"""How long the ``grantkeeper`` command takes to start, per code version, against the interpreter's own start.

    git worktree add /tmp/before <rev>
    .venv/bin/python bench/cli_startup.py --arm before=/tmp/before/src --arm after=src --rounds 15

Every command is a new process, and scripts (cron jobs, CI steps, the test suite) run many of them, so the
imports a command pays before doing anything are paid again and again. Each round runs, for each arm (its
``src`` first on ``PYTHONPATH``) and in turns so all arms see the same machine:

- ``python -c pass``: the interpreter alone, the floor no command can go under;
- ``grantkeeper --version``: start-up and nothing else;
- ``grantkeeper connections list --json``: start-up, settings, opening a SQLite database (made and migrated
  once, untimed, before the rounds) and one query.

Reported per arm and command: the median wall time over the rounds, and its ratio to the interpreter's median
in the same run. Wall times on these shared machines drift; the ratios between arms of one run are what to
compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "grantkeeper --version": ["-m", "grantkeeper", "--version"],
    "grantkeeper connections list --json": ["-m", "grantkeeper", "connections", "list", "--json"],
}


def timed(arguments: list[str], environment: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *arguments], env=environment, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arm", action="append", help="LABEL=PATH to a version's src (default: this src)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    arms = [tuple(arm.split("=", 1)) for arm in args.arm or [f"current={ROOT / 'src'}"]]
    if any(len(arm) != 2 for arm in arms):
        raise SystemExit("--arm takes LABEL=PATH")
    with tempfile.TemporaryDirectory() as tmp:
        environments = {}
        for label, src in arms:
            database = Path(tmp) / f"{label}.db"
            environments[label] = os.environ | {
                "PYTHONPATH": str(Path(src).resolve()),
                "GRANTKEEPER_DATABASE_URL": f"sqlite:///{database}",
            }
            timed(COMMANDS["grantkeeper connections list --json"], environments[label])  # makes the schema
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for label, _src in arms:
                for name, arguments in COMMANDS.items():
                    times.setdefault((label, name), []).append(timed(arguments, environments[label]))
    print(f"load average after: {os.getloadavg()[0]:.2f}; {args.rounds} rounds\n")
    print("| arm | command | median ms | min ms | vs the interpreter |")
    print("|---|---|---|---|---|")
    for label, _src in arms:
        floor = statistics.median(times[label, "python -c pass"])
        for name in COMMANDS:
            values = times[label, name]
            median = statistics.median(values)
            low = min(values)
            print(f"| {label} | `{name}` | {median * 1000:.0f} | {low * 1000:.0f} | {median / floor:.1f}x |")


if __name__ == "__main__":
    main()
