""".venv/bin/python bench/http_client_choice.py [--refreshes 5000] [--concurrency 32] [--rounds 3]

Which HTTP client should the token endpoint adapter use? aiohttp (ours) against httpx, same work, same server.

The sandbox provider runs in a separate process (``python -m grantkeeper.sandbox``), so the server's CPU does
not compete with the client's event loop. Each refresh uses its own freshly issued grant with rotation on, as
in production: build the RFC 6749 section 6 request, POST it form-encoded with Basic client authentication,
read the body and classify it. Both clients get one pooled session of 100 connections and the same timeouts;
each round runs aiohttp then httpx after a warm-up, and the median of the rounds is reported.

httpx's gap grows with concurrency (its connection pool hands connections to waiters slowly, see
encode/httpx#3215); ``--concurrency 1`` shows the per-request cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.core.classify import classify_response
from grantkeeper.core.model import Outcome, OutcomeClass
from grantkeeper.core.oauth_wire import RawResponse, build_refresh_request
from grantkeeper.ports import AuthMethod, ProviderConfig

CLIENT_ID = "bench"
CLIENT_SECRET = "bench-secret"
Refresh = Callable[[str], Awaitable[Outcome]]


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@contextmanager
def sandbox_process() -> Iterator[str]:
    """Start ``python -m grantkeeper.sandbox`` on a free port; yields its token URL."""
    command = [sys.executable, "-m", "grantkeeper.sandbox", "--port", "0"]
    command += ["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        token_url = process.stdout.readline().strip()
        if not token_url.startswith("http"):
            raise RuntimeError(f"sandbox did not start (said {token_url!r})")
        yield token_url
    finally:
        process.terminate()
        process.wait(10)


def control(token_url: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    base = token_url.split("/oauth/")[0]
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(base + "/_sandbox/" + path, data=data, method=method)
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def issue_refresh_tokens(token_url: str, count: int) -> list[str]:
    answer = control(token_url, "POST", "grants", {"client_id": CLIENT_ID, "count": count})
    return [grant["refresh_token"] for grant in answer["grants"]]


def provider(token_url: str) -> ProviderConfig:
    return ProviderConfig(
        provider_id="bench",
        tenant_id="bench",
        name="sandbox",
        token_url=token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
    )


async def run(refresh: Refresh, tokens: list[str], concurrency: int) -> float:
    """Refresh every token with ``concurrency`` workers; returns refreshes per second (all must succeed)."""
    remaining = iter(tokens)
    failures: list[Outcome] = []

    async def worker() -> None:
        for token in remaining:  # a shared iterator: each token is taken by exactly one worker
            outcome = await refresh(token)
            if outcome.klass is not OutcomeClass.SUCCESS:
                failures.append(outcome)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} refreshes failed, first: {failures[0]}")
    return len(tokens) / elapsed


async def bench_aiohttp(
    config: ProviderConfig, tokens: list[str], warmup: list[str], concurrency: int
) -> float:
    async with HttpTokenEndpoint(WallClock(), max_connections=100) as endpoint:

        async def refresh(token: str) -> Outcome:
            return await endpoint.refresh(config, token)

        await run(refresh, warmup, concurrency)
        return await run(refresh, tokens, concurrency)


async def bench_httpx(
    config: ProviderConfig, tokens: list[str], warmup: list[str], concurrency: int
) -> float:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    timeout = httpx.Timeout(15.0, connect=5.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=False) as client:

        async def refresh(token: str) -> Outcome:
            request = build_refresh_request(
                client_id=config.client_id,
                client_secret=config.client_secret,
                refresh_token=token,
                use_basic_auth=True,
            )
            now = datetime.now(UTC)
            response = await client.post(config.token_url, data=request.form, headers=request.headers)
            raw = RawResponse(
                response.status_code,
                response.headers.get("content-type", ""),
                response.content,
                response.headers.get("retry-after"),
            )
            return classify_response(raw, now=now, default_expires_in=3600, redact=(token, CLIENT_SECRET))

        await run(refresh, warmup, concurrency)
        return await run(refresh, tokens, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--refreshes", type=int, default=5000, help="timed refreshes per client and round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warmup_count = min(500, args.refreshes)
    results: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    with sandbox_process() as token_url:
        config = provider(token_url)
        benches = {"aiohttp": bench_aiohttp, "httpx": bench_httpx}
        for round_number in range(1, args.rounds + 1):
            for name, bench in benches.items():
                tokens = issue_refresh_tokens(token_url, args.refreshes + warmup_count)
                rate = asyncio.run(
                    bench(config, tokens[warmup_count:], tokens[:warmup_count], args.concurrency)
                )
                results[name].append(rate)
                print(f"round {round_number}: {name:8} {rate:8.0f} refreshes/s", flush=True)
        stats = control(token_url, "GET", "stats")
    aiohttp_rate = statistics.median(results["aiohttp"])
    httpx_rate = statistics.median(results["httpx"])
    print(f"\n{args.refreshes} refreshes x {args.rounds} rounds, concurrency {args.concurrency}, median:")
    print(f"  aiohttp {aiohttp_rate:8.0f} refreshes/s")
    print(f"  httpx   {httpx_rate:8.0f} refreshes/s")
    print(f"  aiohttp / httpx = {aiohttp_rate / httpx_rate:.2f}")
    print(f"  sandbox answered {stats['requests']} requests, {stats['refreshes_ok']} ok")


if __name__ == "__main__":
    main()
