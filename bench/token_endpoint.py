"""Token endpoint: ``GET /v1/connections/{id}/token`` for fresh tokens (no refresh), against ``/healthz``.

    .venv/bin/python bench/token_endpoint.py --database sqlite --database postgresql --rounds 3

For each database, everything in its own process and over 127.0.0.1 only: the sandbox provider
(``python -m grantkeeper.sandbox``), ``grantkeeper serve --no-scheduler`` on a fresh database (SQLite in a
temporary directory, or a new PostgreSQL database on ``GRANTKEEPER_BENCH_PG``, dropped afterwards), a tenant
key from ``grantkeeper tenants create bench --json``, a provider and N connections whose access tokens
expire in an hour, imported through the API. Then a load generator, also in its own process: an aiohttp
client holding C keep-alive connections, each looping requests for a warm-up, then for D seconds measured:

- ``healthz``: ``GET /healthz`` of the same server, the baseline (HTTP, routing, the access log);
- ``token``: ``GET /v1/connections/{id}/token`` for a random connection each time: API-key lookup, the
  connection and its tokens read from the database, the tokens decrypted, no refresh.

Defaults: N = 1,000, C = 32, D = 10 s after a 2 s warm-up, one round. With ``--rounds R`` the two endpoints
take turns R times and the median round of each is shown. Prints one Markdown table row per database and
endpoint; ``token/healthz`` is the ratio of throughputs, which survives a noisy machine better than the
absolute figures. The sandbox must see no token request at all while the load runs (fresh tokens only), or
the run is refused. Stops by itself; every process it started is terminated on the way out, and the
PostgreSQL database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support import CLIENT_ID, CLIENT_SECRET, free_port, fresh_database, sandbox_process, stop

IMPORT_BATCH = 5000  # the import endpoint takes up to 10,000 connections per request
HEADER = (
    "| database | endpoint | N | concurrency | requests/s | p50 ms | p90 ms | p99 ms | errors "
    "| token/healthz |\n|---|---|---|---|---|---|---|---|---|---|"
)


def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


@contextmanager
def started(args: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def grantkeeper(env: dict[str, str], cwd: Path, *args: str) -> str:
    command = [sys.executable, "-m", "grantkeeper", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout


def wait_until_up(base: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"grantkeeper serve exited with {proc.returncode}")
        try:
            http("GET", base + "/healthz")
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("grantkeeper serve did not answer /healthz in time")


def seed(base: str, api_key: str, sandbox: str, n: int) -> list[str]:
    """A provider and N connections with access tokens valid for an hour more, through the API."""
    auth = {"Authorization": f"Bearer {api_key}"}
    provider = {"name": "sandbox", "token_url": sandbox + "/oauth/token",
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}  # fmt: skip
    http("POST", base + "/v1/providers", provider, auth)
    grants = http("POST", sandbox + "/_sandbox/grants",
                  {"client_id": CLIENT_ID, "count": n, "access_token_lifetime": 3600})["grants"]  # fmt: skip
    expires_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    rows = [
        {
            "provider": "sandbox",
            "user_id": f"u{i}",
            "refresh_token": g["refresh_token"],
            "access_token": g["access_token"],
            "expires_at": expires_at,
        }
        for i, g in enumerate(grants)
    ]
    ids: list[str] = []
    for start in range(0, n, IMPORT_BATCH):
        body = {"connections": rows[start : start + IMPORT_BATCH]}
        ids += http("POST", base + "/v1/connections/import", body, auth)["ids"]
    first = http("GET", f"{base}/v1/connections/{ids[0]}/token", headers=auth)
    assert first["access_token"] == grants[0]["access_token"], "the token endpoint did not vend the import"
    return ids


def load(base: str, paths: list[str], api_key: str, args: argparse.Namespace) -> dict:
    """Run the load generator in its own process; it prints one JSON object."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"base": base, "paths": paths, "api_key": api_key}, f)
    command = [sys.executable, __file__, "--load-generator", f.name,
               "--concurrency", str(args.concurrency), "--duration", str(args.duration),
               "--warmup", str(args.warmup)]  # fmt: skip
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=args.duration * 3 + 60
        )
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout)


def measure(kind: str, args: argparse.Namespace) -> list[dict]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sandbox = stack.enter_context(sandbox_process())
        url = stack.enter_context(fresh_database(kind, tmp, "token"))
        env = os.environ | {"GRANTKEEPER_DATABASE_URL": url, "GRANTKEEPER_LOG_LEVEL": args.log_level}
        env["GRANTKEEPER_ENCRYPTION_KEYS"] = grantkeeper(env, tmp, "keys", "generate").strip()
        api_key = json.loads(grantkeeper(env, tmp, "tenants", "create", "bench", "--json"))["api_key"]
        port = free_port()
        log = stack.enter_context(open(tmp / "serve.log", "w"))
        command = [sys.executable, "-m", "grantkeeper", "serve", "--no-scheduler", "--port", str(port)]
        server = stack.enter_context(started(command, env=env, cwd=tmp, stdout=log, stderr=log))
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base, server)
        ids = seed(base, api_key, sandbox, args.n)
        http("POST", sandbox + "/_sandbox/stats/reset")
        rounds: dict[str, list[dict]] = {"healthz": [], "token": []}
        for _ in range(args.rounds):  # alternating, so a burst of noise from elsewhere hits both
            rounds["healthz"].append(load(base, ["/healthz"], api_key, args))
            rounds["token"].append(load(base, [f"/v1/connections/{i}/token" for i in ids], api_key, args))
        healthz, token = median_round(rounds["healthz"]), median_round(rounds["token"])
        refreshes = http("GET", sandbox + "/_sandbox/stats")["requests"]
        if refreshes:
            raise RuntimeError(f"the sandbox saw {refreshes} token requests: tokens were not fresh")
    common = {"database": kind, "n": args.n, "concurrency": args.concurrency}
    ratio = token["requests_per_s"] / healthz["requests_per_s"]
    return [
        common | healthz | {"endpoint": "healthz"},
        common | token | {"endpoint": "token", "ratio": ratio},
    ]


def median_round(results: list[dict]) -> dict:
    """The round with the median throughput, with the errors of all rounds."""
    median = sorted(results, key=lambda r: r["requests_per_s"])[len(results) // 2]
    return median | {"errors": sum(r["errors"] for r in results), "rounds": len(results)}


def row(r: dict) -> str:
    ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
    return (
        f"| {r['database']} | {r['endpoint']} | {r['n']:,} | {r['concurrency']} | {r['requests_per_s']:,.0f} "
        f"| {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {ratio} |"
    )


# --- the load generator (its own process) ----------------------------------------------------------------


async def generate(
    base: str, paths: list[str], api_key: str, concurrency: int, warmup: float, duration: float
):
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"}
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup
    measure_until = measure_from + duration

    async def worker(session: aiohttp.ClientSession, rng: random.Random) -> None:
        nonlocal errors
        while (started_at := loop.time()) < measure_until:
            try:
                async with session.get(base + rng.choice(paths), headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if started_at >= measure_from:
                latencies.append(loop.time() - started_at)
                errors += not ok

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, random.Random(i)) for i in range(concurrency)))
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / duration,
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "errors": errors,
    }


def load_generator(spec_file: str, args: argparse.Namespace) -> None:
    spec = json.loads(Path(spec_file).read_text())
    result = asyncio.run(
        generate(spec["base"], spec["paths"], spec["api_key"], args.concurrency, args.warmup, args.duration)
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, default=1000, help="connections (default 1,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per endpoint; the median is shown")
    parser.add_argument(
        "--log-level", default="INFO", help="the server's GRANTKEEPER_LOG_LEVEL (default INFO)"
    )
    parser.add_argument("--load-generator", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: stop the processes, drop the database
    if args.load_generator:
        load_generator(args.load_generator, args)
        return
    print(HEADER, flush=True)
    for kind in args.database or ["sqlite", "postgresql"]:
        for result in measure(kind, args):
            print(row(result), flush=True)
            print(json.dumps(result), file=sys.stderr)


if __name__ == "__main__":
    main()
