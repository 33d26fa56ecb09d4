"""The API served for real: uvicorn on a loopback port in a background thread, SQLite and PostgreSQL, the
sandbox provider behind it, and two tenants with their own API keys."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from grantkeeper.bootstrap import Runtime, build_runtime
from grantkeeper.config import Settings
from grantkeeper.entrypoints.api.app import create_app
from grantkeeper.service.tenants import issue_api_key

CRON_SECRET = "cron-secret-for-tests"


@dataclass
class ServedApi:
    base_url: str
    runtime: Runtime
    keys: dict[str, str]  # tenant name -> API key

    def client(self, tenant: str | None = "acme", **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_thread(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    return server, thread


def api_settings(database_url: str, key_line: str, **overrides) -> Settings:
    values = {
        "database_url": database_url,
        "encryption_keys": SecretStr(key_line),
        "cron_secret": SecretStr(CRON_SECRET),
        "public_url": "https://app.example.test",
        "connect_timeout_seconds": 2.0,
        "read_timeout_seconds": 2.0,
        "poll_interval_seconds": 0.2,
    } | overrides
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def api_factory(database_url, key_line):
    """Start API servers on the test database; all are stopped at teardown."""
    started: list[tuple[uvicorn.Server, threading.Thread, Runtime]] = []

    def start(*, run_scheduler: bool = False, **overrides) -> ServedApi:
        runtime = build_runtime(api_settings(database_url, key_line, **overrides))
        keys = {name: issue_api_key(runtime.store, name, replace=True)[1] for name in ("acme", "globex")}
        port = free_port()
        server, thread = serve_in_thread(create_app(runtime, run_scheduler=run_scheduler), port)
        started.append((server, thread, runtime))
        return ServedApi(f"http://127.0.0.1:{port}", runtime, keys)

    yield start
    for server, thread, runtime in started:
        server.should_exit = True
        thread.join(timeout=30)
        runtime.close()


@pytest.fixture
def api(api_factory) -> ServedApi:
    return api_factory()


@pytest.fixture
def acme(api) -> Iterator[httpx.Client]:
    with api.client("acme") as client:
        yield client


@pytest.fixture
def globex(api) -> Iterator[httpx.Client]:
    with api.client("globex") as client:
        yield client


@pytest.fixture
def sandbox_provider(acme, sandbox_server) -> dict:
    body = {
        "name": "sandbox",
        "token_url": sandbox_server.token_url,
        "client_id": "app",
        "client_secret": "app-secret",
        "revocation_url": sandbox_server.revocation_url,
    }
    response = acme.post("/v1/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()
