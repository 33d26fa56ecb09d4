"""On-demand tokens are single-flight: a burst of requests for one expiring connection makes exactly one
request to the provider, within one server, and across the scheduler and a second server process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from grantkeeper.service.tenants import issue_api_key
from tests.api.conftest import free_port

REQUESTS = 100


def expiring_connection(client: httpx.Client, sandbox, user_id: str) -> tuple[str, str]:
    """A connection whose access token expires in 30 s: inside any min_validity of a minute or more."""
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    body = {
        "provider": "sandbox",
        "user_id": user_id,
        "refresh_token": grant.refresh_token,
        "access_token": grant.access_token,
        "expires_at": (datetime.now(UTC) + timedelta(seconds=30)).isoformat(),
    }
    response = client.post("/v1/connections", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], grant.grant_id


async def burst(urls_and_keys: list[tuple[str, str]], path: str) -> list[httpx.Response]:
    """REQUESTS concurrent GETs of ``path``, spread over the given servers."""
    clients = [
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for url, key in urls_and_keys
    ]
    try:
        calls = [clients[i % len(clients)].get(path, params={"min_validity": 300}) for i in range(REQUESTS)]
        return list(await asyncio.gather(*calls))
    finally:
        for client in clients:
            await client.aclose()


def test_hundred_concurrent_requests_make_one_provider_request(api, acme, sandbox, sandbox_provider):
    connection_id, grant_id = expiring_connection(acme, sandbox, "u1")
    responses = asyncio.run(
        burst([(api.base_url, api.keys["acme"])], f"/v1/connections/{connection_id}/token")
    )
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    tokens = {r.json()["access_token"] for r in responses}
    assert len(tokens) == 1
    assert sandbox.stats().by_grant[grant_id] == 1
    assert sandbox.stats().reuse_detected == 0
    assert tokens == {acme.get(f"/v1/connections/{connection_id}/token").json()["access_token"]}


@pytest.fixture
def second_server(api, database_url, key_line, tmp_path):
    """``grantkeeper serve`` in its own process on the same database, with its scheduler on."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTKEEPER_")} | {
        "GRANTKEEPER_DATABASE_URL": database_url,
        "GRANTKEEPER_ENCRYPTION_KEYS": key_line,
        "GRANTKEEPER_POLL_INTERVAL_SECONDS": "0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "grantkeeper", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"second server did not start: {process.stderr.read() if process.stderr else ''}"
            )
        time.sleep(0.1)
    yield base_url
    process.terminate()
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.slow
def test_burst_races_the_scheduler_and_a_second_server_process_without_a_double_refresh(
    api_factory, sandbox, sandbox_server, second_server
):
    first = api_factory(run_scheduler=True)
    with first.client("acme") as acme:
        provider = {"name": "sandbox", "token_url": sandbox_server.token_url, "client_id": "app",
                    "client_secret": "app-secret"}  # fmt: skip
        assert acme.post("/v1/providers", json=provider).status_code == 201
        connections = [expiring_connection(acme, sandbox, f"user-{i}") for i in range(10)]
    key = first.keys["acme"]
    servers = [(first.base_url, key), (second_server, key)]

    async def all_bursts() -> list[list[httpx.Response]]:
        return await asyncio.gather(
            *(burst(servers, f"/v1/connections/{connection_id}/token") for connection_id, _ in connections)
        )

    results = asyncio.run(all_bursts())
    for (connection_id, grant_id), responses in zip(connections, results, strict=True):
        assert all(r.status_code == 200 for r in responses), [
            r.text for r in responses if r.status_code != 200
        ]
        assert len({r.json()["access_token"] for r in responses}) == 1, connection_id
        assert sandbox.stats().by_grant[grant_id] == 1, connection_id
    assert sandbox.stats().reuse_detected == 0


def test_keys_are_per_tenant(api):
    """Issuing a key for one tenant never changes another's (the fixture's two keys both work)."""
    tenant, _ = issue_api_key(api.runtime.store, "initech")
    with api.client("acme") as acme, api.client("globex") as globex:
        assert acme.get("/v1/providers").status_code == 200
        assert globex.get("/v1/providers").status_code == 200
    assert tenant.name == "initech"
