"""Capacity planning: the real policy and scheduler over virtual time, against a simulated provider.

Each connection's state is evolved only by ``core.machine.step`` with the real ``Policy``; the provider is a
fault model (``simulation_faults``) and the clock is virtual, so a week of one-hour tokens for 100,000
connections (21 million attempts) takes about two CPU-minutes and never touches HTTP, a database or the
settings.

The scheduler is modelled as the continuous worker runs: every ``poll_interval`` it claims the connections
whose ``next_attempt_at`` has passed and refreshes them. The fleet refreshes at most
``workers * concurrency`` at once; an attempt holds its slot for the provider latency (a timeout for the
read timeout), so when more are due than that allows they queue, and the report shows the lag from due to
attempted. A worker also handles at most ``worker_rate`` refreshes a second, however short the latency (its
CPU and database session), and the provider's limits (a rate, a concurrency) cap the whole fleet, as the
workers hold to them together. Without a worker count the fleet is unlimited and the report says how many
workers the busiest minute needs. The simulator knows each grant's truth, so it tells false disconnections
(the grant was fine) from true ones (it was revoked).

Modules: ``simulation_config`` (what to simulate), ``simulation_faults`` (the provider),
``simulation_engine`` (the event loop), ``simulation_tally`` (the counters), ``simulation_report`` (what it
found).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

from grantkeeper.service.simulation_config import DEFAULT_WORKER_RATE, SimulationConfig
from grantkeeper.service.simulation_engine import Simulation
from grantkeeper.service.simulation_faults import FaultModel, Outage
from grantkeeper.service.simulation_report import SimulationReport
from grantkeeper.service.simulation_tally import Tally, Truth, build_report

__all__ = ["DEFAULT_WORKER_RATE", "FaultModel", "Outage", "SimulationConfig", "SimulationReport", "simulate"]

#: Connections per shard. Fixed, so a report depends on the seed and never on how many CPUs produced it.
SHARD_CONNECTIONS = 25_000


def simulate(config: SimulationConfig, *, processes: int | None = None) -> SimulationReport:
    """Run the simulation to the end of ``config.duration`` and report; deterministic for a given seed.

    Connections are independent but for the fleet's capacity, so large runs are cut into shards of
    ``SHARD_CONNECTIONS`` (each with its share of the fleet) and run on up to ``processes`` CPUs
    (default: all of them).
    """
    wall_started = time.perf_counter()
    results = _run_shards(config, shard_sizes(config), processes or os.cpu_count() or 1)
    tally, truth = results[0]
    for other_tally, other_truth in results[1:]:
        tally.merge(other_tally)
        truth = truth + other_truth
    return build_report(config, tally, truth, wall_seconds=time.perf_counter() - wall_started)


def shard_sizes(config: SimulationConfig) -> list[int]:
    """Shards end at user boundaries, so per-user counts never straddle two shards."""
    per_user = config.connections_per_user
    size = math.ceil(SHARD_CONNECTIONS / per_user) * per_user
    total = config.simulated_connections
    return [min(size, total - start) for start in range(0, total, size)]


def run_shard(config: SimulationConfig, shard: int, count: int) -> tuple[Tally, Truth]:
    run = Simulation(config, shard, count)
    run.execute()
    return run.result()


def _run_shards(config: SimulationConfig, sizes: list[int], processes: int) -> list[tuple[Tally, Truth]]:
    """In this process when one will do; else forked children (spawning would rerun ``python -m``'s main)."""
    workers = min(len(sizes), processes)
    shards = list(range(len(sizes)))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [run_shard(config, shard, count) for shard, count in zip(shards, sizes, strict=True)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(run_shard, [config] * len(sizes), shards, sizes))
