"""One worker against the authorization server's raw capacity, and against a hand-written Authlib refresher.

    .venv/bin/python bench/worker_vs_server.py --database sqlite --rounds 3

The sandbox provider runs pinned to CPU 0; everything that drives it runs pinned to CPU 1, one at a time,
taking turns within each round so they see the same machine:

- ``raw``: wrk (C, one thread, 32 connections) with a Lua script that sends refresh_token grants and puts
  each rotated refresh token back into its pool: what the server can answer when the client costs nearly
  nothing. This is the server's capacity, the ceiling for any client.
- ``aiohttp``: the issue's other load generator, a bare aiohttp loop posting the same grants and keeping each
  rotated token in memory (no crypto, no storage), same concurrency: what a Python client on aiohttp gets
  from the server on this core. The issue allows either; both ratios are reported.
- ``engine``: grantkeeper's whole refresh cycle in one process (claim due rows in batches, record them in
  flight, refresh over aiohttp, run the policy, grouped fenced commits with AES-GCM-encrypted tokens) over N
  due connections with rotating refresh tokens, concurrency 32.
- ``bare``: the issue's reference point, a bare loop with no engine: aiohttp posting refresh grants,
  AES-GCM sealing the new tokens, and SQLite writes in batches of up to 200 rows (``executemany``), same
  concurrency. It shows what any Python client on this machine can reach, so engine/bare says what the
  engine itself costs.
- ``lean`` and ``bare-lean``: the same two loops (``aiohttp`` and ``bare``) on the engine's own HTTP client
  (``adapters/http/lean.py``) instead of aiohttp. The engine is built from these parts, so ``bare-lean`` is
  what the engine could reach with none of its own work (claims, starts, fencing, the policy, the attempt
  log): engine/bare-lean is what that work costs, and bare-lean/raw how close these parts come to wrk.
- ``authlib``: what a user writes by hand: 32 asyncio tasks, each with an Authlib ``AsyncOAuth2Client``
  (httpx), refreshing rows of a SQLite table and writing the AES-GCM-encrypted new tokens back, one
  transaction per refresh (through ``asyncio.to_thread``), concurrency 32.
- ``authlib-inline``: the same with the save written inline, blocking the event loop for each commit, which
  a user may write as well; it was 2-16 % faster, so the ratio is reported against both.

Reported: refreshes per second for each (median of the rounds), engine/raw and engine/aiohttp loop (the bar is
0.6, the aim 0.8) and engine/authlib (the bar is 5) against each Authlib variant; then the lean loops against
wrk and the engine; then each bar's ratio round by round and in how many rounds it was met. The sandbox's
reuse counter must stay 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from refresh_throughput import control, issue, seed
from support import CLIENT_ID, CLIENT_SECRET, free_port, fresh_database, stop

SERVER_CPU, CLIENT_CPU = 0, 1
CONCURRENCY = 32

_LUA = """
local tokens = {%(tokens)s}
local headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = "%(auth)s"}
request = function()
  local token = table.remove(tokens) or "exhausted"
  return wrk.format("POST", "/oauth/token", headers, "grant_type=refresh_token&refresh_token=" .. token)
end
response = function(status, headers, body)
  local token = body:match('"refresh_token":"([^"]+)"')
  if token then table.insert(tokens, token) end
end
"""


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    command = ["taskset", "-c", str(SERVER_CPU), sys.executable, "-m", "grantkeeper.sandbox",
               "--port", str(port), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}"


def wrk(base: str, tmp: Path, seconds: int, concurrency: int) -> str:
    """One wrk run with grants of its own (a run rotates its tokens; reusing them would be reuse)."""
    tokens = [g["refresh_token"] for g in issue(base, concurrency * 4)]
    auth = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    script = tmp / "refresh.lua"
    script.write_text(_LUA % {"tokens": ", ".join(f'"{t}"' for t in tokens), "auth": auth})
    command = ["taskset", "-c", str(CLIENT_CPU), "wrk", "-t1", f"-c{concurrency}", "-s", str(script)]
    out = subprocess.run([*command, f"-d{seconds}s", base], check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return out


def raw_capacity(base: str, tmp: Path, seconds: int, concurrency: int) -> float:
    """wrk on the client CPU; a warm-up run first, then the measured one."""
    wrk(base, tmp, 2, concurrency)
    out = wrk(base, tmp, seconds, concurrency)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match is not None, out
    return float(match.group(1))


def child(role: str, concurrency: int, args: list[str]) -> dict[str, float]:
    """Run one measured client in its own process, pinned to the client CPU."""
    command = ["taskset", "-c", str(CLIENT_CPU), sys.executable, __file__, "--role", role,
               "--concurrency", str(concurrency), *args]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:  # say why: a bare CalledProcessError hid the child's traceback
        raise RuntimeError(f"the {role} client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def thread_cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) of each thread of this process so far, by thread name (Linux ``/proc``):
    the store thread and the event loop share one core, and which of them grew is what an A/B must tell."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        name = names.get(int(tid), f"thread-{tid}")
        seconds[name] = seconds.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return seconds


async def engine_cycle(url: str, key: str, concurrency: int) -> dict[str, float]:
    from grantkeeper.adapters.clock import SystemClock
    from grantkeeper.adapters.crypto import Keyring
    from grantkeeper.adapters.db.engine import make_engine
    from grantkeeper.adapters.db.store import SqlStore
    from grantkeeper.adapters.http import HttpTokenEndpoint
    from grantkeeper.core.policy import Policy
    from grantkeeper.service.cycle import RefreshService

    try:
        from grantkeeper.entrypoints.collector import settle_after_start
    except ImportError:  # an older version's src (an arm of bench/engine_ab.py): it set nothing
        settle_after_start = None

    engine = make_engine(url)
    store = SqlStore(engine, Keyring.parse(key))
    clock = SystemClock()
    endpoint = HttpTokenEndpoint(clock, max_connections=concurrency)
    service = RefreshService(store, endpoint, clock, Policy(), concurrency=concurrency)
    if settle_after_start is not None and os.environ.get("GRANTKEEPER_BENCH_DEFAULT_GC") != "1":
        settle_after_start()  # as `grantkeeper worker` does once started (bench/collector_time.py: both)
    collector = CollectorClock()
    gc.callbacks.append(collector)
    started, cpu = time.perf_counter(), time.process_time()
    report = await service.run_cycle()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.callbacks.remove(collector)
    threads = thread_cpu_seconds()  # before the store thread goes (it was made by the cycle's runner)
    await endpoint.close()
    engine.dispose()
    store = sum(seconds for name, seconds in threads.items() if name.startswith("grantkeeper-store"))
    return {
        "refreshed": report.refreshed,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "store_thread_cpu_seconds": store,
        "loop_thread_cpu_seconds": threads.get("MainThread", 0.0),
        "collector_seconds": collector.seconds,
        "collections": collector.collections,
    }


class CollectorClock:
    """A ``gc.callbacks`` entry that adds up the time spent in garbage collections, and counts them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1


def authlib_table(path: Path, key: bytes, tokens: list[str]) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE tokens (id INTEGER PRIMARY KEY, refresh BLOB, access BLOB, expires_at REAL)")
        rows = []
        for i, token in enumerate(tokens):
            nonce = os.urandom(12)
            rows.append((i, nonce + aead.encrypt(nonce, token.encode(), str(i).encode()), None, 0.0))
        db.executemany("INSERT INTO tokens VALUES (?, ?, ?, ?)", rows)


async def authlib_refresher(
    path: Path, key: bytes, token_url: str, concurrency: int, *, inline_save: bool = False
) -> dict[str, float]:
    """The refresher a user would write: Authlib's async client, AES-GCM, one SQLite commit per refresh, in
    a worker thread or (``inline_save``) on the event loop itself."""
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA synchronous=NORMAL")
    # one connection shared by the worker threads of asyncio.to_thread: a sqlite3 connection must not be used
    # by two threads at once (without the lock the child failed now and then at concurrency 128); SQLite
    # takes one writer at a time anyway
    db_lock = threading.Lock()
    rows = db.execute("SELECT id, refresh FROM tokens").fetchall()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for row in rows:
        queue.put_nowait(row)
    done = 0

    def save(row_id: int, token: dict[str, object]) -> None:
        aad = str(row_id).encode()
        sealed = []
        for name in ("refresh_token", "access_token"):
            nonce = os.urandom(12)
            sealed.append(nonce + aead.encrypt(nonce, str(token[name]).encode(), aad))
        with db_lock, db:
            db.execute(
                "UPDATE tokens SET refresh = ?, access = ?, expires_at = ? WHERE id = ?",
                (sealed[0], sealed[1], float(str(token["expires_at"])), row_id),
            )

    async def work() -> None:
        nonlocal done
        async with AsyncOAuth2Client(
            CLIENT_ID, CLIENT_SECRET, token_endpoint_auth_method="client_secret_basic"
        ) as client:
            while not queue.empty():
                row_id, stored = queue.get_nowait()
                refresh = aead.decrypt(stored[:12], stored[12:], str(row_id).encode()).decode()
                token = await client.refresh_token(token_url, refresh_token=refresh)
                if inline_save:
                    save(row_id, dict(token))
                else:
                    await asyncio.to_thread(save, row_id, dict(token))
                done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    db.close()
    return {"refreshed": done, "seconds": elapsed, "cpu_seconds": cpu}


#: Posts one refresh grant and returns the token response's JSON.
Post = Callable[[str], Awaitable[dict[str, Any]]]


@contextlib.asynccontextmanager
async def poster(client: str, token_url: str, concurrency: int) -> AsyncIterator[Post]:
    """A refresh-grant POST on aiohttp (``client`` "aiohttp") or on the engine's own HTTP client ("lean")."""
    if client == "aiohttp":
        import aiohttp

        auth = aiohttp.BasicAuth(CLIENT_ID, CLIENT_SECRET)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def post_aiohttp(refresh: str) -> dict[str, Any]:
                form = {"grant_type": "refresh_token", "refresh_token": refresh}
                async with session.post(token_url, data=form, auth=auth) as response:
                    return dict(await response.json())

            yield post_aiohttp
        return
    from grantkeeper.adapters.http.lean import LeanClient
    from grantkeeper.adapters.http.token_client import MAX_BODY_BYTES

    lean = LeanClient(  # as ``HttpTokenEndpoint`` makes it, with its default timeouts
        connect_timeout=5.0,
        read_timeout=10.0,
        max_connections=concurrency,
        max_connections_per_host=concurrency,
        max_body_bytes=MAX_BODY_BYTES,
        user_agent="grantkeeper/0.1",
    )
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}"}

    async def post_lean(refresh: str) -> dict[str, Any]:
        body = b"grant_type=refresh_token&refresh_token=" + refresh.encode()  # sandbox tokens need no quoting
        return dict(json.loads((await lean.post(token_url, headers, body)).body))

    try:
        yield post_lean
    finally:
        await lean.close()


async def bare_loop(
    path: Path, key: bytes, token_url: str, concurrency: int, client: str
) -> dict[str, float]:
    """An HTTP client + AES-GCM + batched SQLite writes, nothing else: the floor a Python refresher on that
    client stands on."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA synchronous=NORMAL")
    rows = db.execute("SELECT id, refresh FROM tokens").fetchall()
    pending: list[tuple[bytes, bytes, float, int]] = []
    done = 0

    def flush(batch: list[tuple[bytes, bytes, float, int]]) -> None:
        with db:
            db.executemany("UPDATE tokens SET refresh = ?, access = ?, expires_at = ? WHERE id = ?", batch)

    async def work(post: Post) -> None:
        nonlocal done, pending
        while rows:
            row_id, stored = rows.pop()
            aad = str(row_id).encode()
            refresh = aead.decrypt(stored[:12], stored[12:], aad).decode()
            token = await post(refresh)
            sealed = []
            for name in ("refresh_token", "access_token"):
                nonce = os.urandom(12)
                sealed.append(nonce + aead.encrypt(nonce, token[name].encode(), aad))
            pending.append((sealed[0], sealed[1], time.time() + token["expires_in"], row_id))
            done += 1
            if len(pending) >= 200:
                batch, pending = pending, []
                await asyncio.to_thread(flush, batch)

    started, cpu = time.perf_counter(), time.process_time()
    async with poster(client, token_url, concurrency) as post:
        await asyncio.gather(*(work(post) for _ in range(concurrency)))
    flush(pending)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    db.close()
    return {"refreshed": done, "seconds": elapsed, "cpu_seconds": cpu}


async def load_loop(path: Path, token_url: str, concurrency: int, client: str) -> dict[str, float]:
    """The issue's other load generator: a bare loop that posts refresh grants and keeps each rotated token in
    memory, with no crypto and no storage: the most a Python client on that HTTP client gets from the server
    on this core."""
    tokens: list[str] = json.loads(path.read_text())  # noqa: ASYNC240 - before the clock starts
    done = 0

    async def work(post: Post) -> None:
        nonlocal done
        while tokens:
            token = await post(tokens.pop())
            assert token["refresh_token"], token
            done += 1

    started, cpu = time.perf_counter(), time.process_time()
    async with poster(client, token_url, concurrency) as post:
        await asyncio.gather(*(work(post) for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"refreshed": done, "seconds": elapsed, "cpu_seconds": cpu}


def run_role(args: argparse.Namespace) -> None:
    """Both clients run on uvloop, as ``grantkeeper worker`` does (``cli.app.run_async``)."""
    from grantkeeper.entrypoints.cli.app import run_async

    if args.role == "engine":
        result = run_async(engine_cycle(args.url, args.key, args.concurrency))
    elif args.role in ("aiohttp", "lean"):
        result = run_async(load_loop(Path(args.url), args.token_url, args.concurrency, args.role))
    elif args.role in ("bare", "bare-lean"):
        path, key = Path(args.url), bytes.fromhex(args.key)
        client = "aiohttp" if args.role == "bare" else "lean"
        result = run_async(bare_loop(path, key, args.token_url, args.concurrency, client))
    else:
        path, key = Path(args.url), bytes.fromhex(args.key)
        inline_save = args.role == "authlib-inline"
        result = run_async(
            authlib_refresher(path, key, args.token_url, args.concurrency, inline_save=inline_save)
        )
    print(json.dumps(result))


def one_round(kind: str, n: int, seconds: int, base: str, tmp: Path, concurrency: int) -> dict[str, float]:
    """One turn of each client; ``seconds`` 0 leaves wrk out (its figure and ratio are then NaN)."""
    from grantkeeper.adapters.crypto import Keyring, generate_key_line

    token_url = base + "/oauth/token"
    raw = raw_capacity(base, tmp, seconds, concurrency) if seconds > 0 else math.nan
    key = generate_key_line("bench")
    with fresh_database(kind, tmp, f"engine{time.monotonic_ns()}") as url:
        seed(url, Keyring.parse(key), token_url, issue(base, n))
        engine = child("engine", concurrency, ["--url", url, "--key", key])
    assert engine["refreshed"] == n, engine
    table, aes_key = tmp / f"bare{time.monotonic_ns()}.db", os.urandom(32)
    authlib_table(table, aes_key, [g["refresh_token"] for g in issue(base, n)])
    loops: dict[str, dict[str, float]] = {}
    for role in ("aiohttp", "lean"):
        token_file = tmp / f"tokens{time.monotonic_ns()}.json"
        token_file.write_text(json.dumps([g["refresh_token"] for g in issue(base, n)]))
        loops[role] = child(role, concurrency, ["--url", str(token_file), "--token-url", token_url])
        assert loops[role]["refreshed"] == n, loops[role]
    loop = loops["aiohttp"]
    bare = child("bare", concurrency, ["--url", str(table), "--key", aes_key.hex(), "--token-url", token_url])
    assert bare["refreshed"] == n, bare
    table, aes_key = tmp / f"bare-lean{time.monotonic_ns()}.db", os.urandom(32)
    authlib_table(table, aes_key, [g["refresh_token"] for g in issue(base, n)])
    bare_lean = child(
        "bare-lean", concurrency, ["--url", str(table), "--key", aes_key.hex(), "--token-url", token_url]
    )
    assert bare_lean["refreshed"] == n, bare_lean
    authlibs = {}
    for role in ("authlib", "authlib-inline"):
        table, aes_key = tmp / f"{role}{time.monotonic_ns()}.db", os.urandom(32)
        authlib_table(table, aes_key, [g["refresh_token"] for g in issue(base, n // 4)])
        authlibs[role] = child(
            role, concurrency, ["--url", str(table), "--key", aes_key.hex(), "--token-url", token_url]
        )
        assert authlibs[role]["refreshed"] == n // 4, authlibs[role]
    authlib, inline = authlibs["authlib"], authlibs["authlib-inline"]
    return {
        "raw_per_s": raw,
        "aiohttp_per_s": n / loop["seconds"],
        "engine_per_s": n / engine["seconds"],
        "engine_cpu_us": engine["cpu_seconds"] / n * 1e6,
        "bare_per_s": n / bare["seconds"],
        "bare_cpu_us": bare["cpu_seconds"] / n * 1e6,
        "lean_per_s": n / loops["lean"]["seconds"],
        "bare_lean_per_s": n / bare_lean["seconds"],
        "bare_lean_cpu_us": bare_lean["cpu_seconds"] / n * 1e6,
        "authlib_per_s": authlib["refreshed"] / authlib["seconds"],
        "authlib_cpu_us": authlib["cpu_seconds"] / authlib["refreshed"] * 1e6,
        "authlib_inline_per_s": inline["refreshed"] / inline["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--n", type=int, default=20_000, help="due connections per engine run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--seconds", type=int, default=10, help="length of each wrk run; 0 runs no wrk (a quick check)"
    )
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="every client's, wrk's too")
    parser.add_argument(
        "--role",
        choices=("engine", "aiohttp", "lean", "bare", "bare-lean", "authlib", "authlib-inline"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--token-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_role(args)
        return
    if args.seconds > 0 and shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    print(
        "| database | concurrency | raw (wrk) /s | raw (aiohttp loop) /s | engine /s | engine CPU µs "
        "| bare loop /s | bare CPU µs | Authlib /s | Authlib inline /s | engine/raw | engine/aiohttp loop "
        "| bare/raw | engine/bare | engine/Authlib | engine/Authlib inline |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.database or ["sqlite"]:
        proc, base = start_sandbox()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                rounds = [
                    one_round(kind, args.n, args.seconds, base, Path(tmp), args.concurrency)
                    for _ in range(args.rounds)
                ]
            reuse = control(base, "GET", "/_sandbox/stats")["reuse_detected"]
        finally:
            stop(proc)
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        m = median
        print(
            f"| {kind} | {args.concurrency} | {m['raw_per_s']:,.0f} | {m['aiohttp_per_s']:,.0f} | "
            f"{m['engine_per_s']:,.0f} | "
            f"{m['engine_cpu_us']:.0f} | {m['bare_per_s']:,.0f} | {m['bare_cpu_us']:.0f} | "
            f"{m['authlib_per_s']:,.0f} | {m['authlib_inline_per_s']:,.0f} | "
            f"{m['engine_per_s'] / m['raw_per_s']:.2f} | {m['engine_per_s'] / m['aiohttp_per_s']:.2f} | "
            f"{m['bare_per_s'] / m['raw_per_s']:.2f} | {m['engine_per_s'] / m['bare_per_s']:.2f} | "
            f"{m['engine_per_s'] / m['authlib_per_s']:.1f} | "
            f"{m['engine_per_s'] / m['authlib_inline_per_s']:.1f} |",
            flush=True,
        )
        print_parts(kind, m)
        print_rounds(kind, rounds)
        print(json.dumps({"database": kind, "rounds": rounds, "reuse_detected": reuse}), file=sys.stderr)
        if reuse:
            raise SystemExit(f"the sandbox saw {reuse} refresh-token reuses")


#: The issue's bars: each ratio, the figure it must reach, and the pair it divides.
BARS = (
    ("engine/raw (wrk)", 0.6, "engine_per_s", "raw_per_s"),
    ("engine/aiohttp loop", 0.6, "engine_per_s", "aiohttp_per_s"),
    ("engine/Authlib", 5.0, "engine_per_s", "authlib_per_s"),
    ("engine/Authlib inline", 5.0, "engine_per_s", "authlib_inline_per_s"),
)


def print_parts(kind: str, m: dict[str, float]) -> None:
    """The engine against loops on its own HTTP client (medians): how close its parts come to the server's
    capacity, and what the engine's own work costs on top of them."""
    print(f"\n{kind}: the engine's own parts, without the engine")
    print("| lean loop /s | lean/raw | bare-lean /s | bare-lean CPU µs | bare-lean/raw | engine/bare-lean |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {m['lean_per_s']:,.0f} | {m['lean_per_s'] / m['raw_per_s']:.2f} | {m['bare_lean_per_s']:,.0f} | "
        f"{m['bare_lean_cpu_us']:.0f} | {m['bare_lean_per_s'] / m['raw_per_s']:.2f} | "
        f"{m['engine_per_s'] / m['bare_lean_per_s']:.2f} |",
        flush=True,
    )


def print_rounds(kind: str, rounds: list[dict[str, float]]) -> None:
    """Each bar's ratio round by round, and in how many rounds it was met: on a noisy machine the median
    of the rounds hides whether a bar holds in every one or in half of them."""
    print(f"\n{kind}: each round's ratios")
    columns = " | ".join(f"round {i + 1}" for i in range(len(rounds)))
    print(f"| ratio | bar | {columns} | rounds at or above |")
    print("|---|---|" + "---|" * len(rounds) + "---|")
    for label, bar, numerator, denominator in BARS:
        ratios = [r[numerator] / r[denominator] for r in rounds]
        met = sum(ratio >= bar for ratio in ratios)  # a NaN (no wrk) is never met
        cells = " | ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"| {label} | {bar:g} | {cells} | {met} of {len(rounds)} |", flush=True)


if __name__ == "__main__":
    main()
