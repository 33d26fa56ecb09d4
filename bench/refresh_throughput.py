"""Refresh throughput: N connections due, one ``grantkeeper refresh --due`` against the sandbox provider.

    .venv/bin/python bench/refresh_throughput.py --n 1000 --n 10000 --database sqlite --database postgresql

For each N and database: a fresh database with N due connections (rotating refresh tokens) and the sandbox
provider in a separate process on loopback. Measured in the same run, so ratios survive a noisy machine:

- ``baseline``: the same HTTP client doing N bare refreshes against the same sandbox, no store at all: the
  ceiling the store and policy can approach;
- ``cycle``: the whole refresh cycle in-process (lease, refresh, policy, one commit per connection);
- ``cli``: the ``grantkeeper refresh --due`` command end to end, as a user runs it (process start included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from support import CLIENT_ID, CLIENT_SECRET, fresh_database, sandbox_process

from grantkeeper.adapters.clock import SystemClock
from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db.engine import make_engine
from grantkeeper.adapters.db.schema import migrate
from grantkeeper.adapters.db.store import SqlStore
from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.core.policy import Policy
from grantkeeper.ports import AuthMethod, NewConnection, NewProvider, ProviderConfig
from grantkeeper.service import admin
from grantkeeper.service.cycle import RefreshService


def control(base: str, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"{}")


def issue(base: str, n: int) -> list[dict]:
    grants: list[dict] = []
    while len(grants) < n:
        count = min(5000, n - len(grants))
        body = {"client_id": CLIENT_ID, "count": count, "access_token_lifetime": 3600}
        grants += control(base, "POST", "/_sandbox/grants", body)["grants"]
    return grants


def seed(url: str, keyring: Keyring, token_url: str, grants: list[dict]) -> None:
    engine = make_engine(url)
    migrate(engine)
    store = SqlStore(engine, keyring)
    tenant = store.ensure_tenant("default")
    provider = NewProvider("sandbox", token_url, CLIENT_ID, CLIENT_SECRET, AuthMethod.CLIENT_SECRET_BASIC)
    admin.add_provider(store, tenant, provider)
    rows = [NewConnection("sandbox", f"u{i}", g["refresh_token"]) for i, g in enumerate(grants)]
    admin.import_rows(store, tenant, rows, Policy(), SystemClock())
    engine.dispose()


async def baseline(token_url: str, grants: list[dict], concurrency: int) -> float:
    provider = ProviderConfig("prv", "ten", "sandbox", token_url, CLIENT_ID, CLIENT_SECRET)
    endpoint = HttpTokenEndpoint(SystemClock(), max_connections=concurrency)
    queue = [g["refresh_token"] for g in grants]

    async def work() -> None:
        while queue:
            await endpoint.refresh(provider, queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await endpoint.close()
    return elapsed


async def cycle(url: str, keyring: Keyring, concurrency: int) -> tuple[float, int]:
    engine = make_engine(url)
    store = SqlStore(engine, keyring)
    clock = SystemClock()
    endpoint = HttpTokenEndpoint(clock, max_connections=concurrency)
    service = RefreshService(store, endpoint, clock, Policy(), concurrency=concurrency)
    started = time.perf_counter()
    report = await service.run_cycle()
    elapsed = time.perf_counter() - started
    await endpoint.close()
    engine.dispose()
    return elapsed, report.refreshed


def cli(url: str, key: str, concurrency: int) -> tuple[float, int]:
    env = os.environ | {"GRANTKEEPER_DATABASE_URL": url, "GRANTKEEPER_ENCRYPTION_KEYS": key}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "grantkeeper", "refresh", "--due", "--json",
         "--concurrency", str(concurrency)],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return time.perf_counter() - started, json.loads(out)["refreshed"]


def measure(kind: str, n: int, concurrency: int) -> dict:
    key = generate_key_line("bench")
    keyring = Keyring.parse(key)
    with sandbox_process() as base, tempfile.TemporaryDirectory() as tmp:
        token_url = base + "/oauth/token"
        base_s = asyncio.run(baseline(token_url, issue(base, n), concurrency))
        result = {"database": kind, "n": n, "concurrency": concurrency, "baseline_per_s": n / base_s}
        with fresh_database(kind, Path(tmp), "cycle") as url:
            seed(url, keyring, token_url, issue(base, n))
            cycle_s, refreshed = asyncio.run(cycle(url, keyring, concurrency))
            assert refreshed == n, f"cycle refreshed {refreshed} of {n}"
        with fresh_database(kind, Path(tmp), "cli") as url:
            seed(url, keyring, token_url, issue(base, n))
            cli_s, cli_refreshed = cli(url, key, concurrency)
            assert cli_refreshed == n, f"cli refreshed {cli_refreshed} of {n}"
        reuse = control(base, "GET", "/_sandbox/stats")["reuse_detected"]
    return result | {
        "cycle_per_s": n / cycle_s,
        "cli_per_s": n / cli_s,
        "cycle_vs_baseline": (n / cycle_s) / (n / base_s),
        "reuse_detected": reuse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="connections due (repeatable)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(
        "| database | N | baseline refreshes/s | cycle refreshes/s "
        "| `refresh --due` refreshes/s | cycle/baseline |"
    )
    print("|---|---|---|---|---|---|")
    for kind in args.database or ["sqlite", "postgresql"]:
        for n in args.n or [1000, 10000]:
            r = measure(kind, n, args.concurrency)
            print(
                f"| {kind} | {n:,} | {r['baseline_per_s']:,.0f} | {r['cycle_per_s']:,.0f} | "
                f"{r['cli_per_s']:,.0f} | {r['cycle_vs_baseline']:.2f} |",
                flush=True,
            )
            print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
