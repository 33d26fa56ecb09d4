"""How much of a worker's CPU the garbage collector takes, with CPython's defaults and with the settings
``grantkeeper worker`` and ``serve`` apply once started (``entrypoints/collector.py``), rounds alternating.

    .venv/bin/python bench/collector_time.py --rounds 3 --n 30000

Each round runs ``bench/engine_ab.py``'s round (sandbox on CPU 0, ``--n`` due connections seeded into a fresh
SQLite file, one refresh cycle in a child pinned to CPU 1) once per arm; the child times every collection
with ``gc.callbacks``. That time is measured directly, so it is steadier than the CPU per refresh around it
on a noisy machine. Reported per arm: collector seconds, collections, CPU µs per refresh (medians).
"""

from __future__ import annotations

import argparse
import statistics

from engine_ab import round_in_child

ARMS = {"defaults": "1", "settled": "0"}  # GRANTKEEPER_BENCH_DEFAULT_GC for the engine child


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=30_000, help="due connections per round")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for round_number in range(1, args.rounds + 1):
        for arm, flag in ARMS.items():
            result = round_in_child(arm, args.n, args.concurrency, {"GRANTKEEPER_BENCH_DEFAULT_GC": flag})
            results[arm].append(result)
            print(
                f"round {round_number} {arm}: collector {result['collector_s']:.3f} s in "
                f"{result['collections']:.0f} collections, {result['cpu_us']:.0f} µs a refresh",
                flush=True,
            )
    print("\n| collector | rounds | collector s (median) | collections | CPU µs/refresh median (range) |")
    print("|---|---|---|---|---|")
    for arm, rows in results.items():
        cpu = [row["cpu_us"] for row in rows]
        print(
            f"| {arm} | {len(rows)} | {statistics.median(row['collector_s'] for row in rows):.3f} "
            f"| {statistics.median(row['collections'] for row in rows):.0f} "
            f"| {statistics.median(cpu):.0f} ({min(cpu):.0f}-{max(cpu):.0f}) |"
        )


if __name__ == "__main__":
    main()
