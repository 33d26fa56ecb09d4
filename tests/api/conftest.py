"""The API served for real: uvicorn on a loopback port in a background thread, SQLite and PostgreSQL, the
sandbox provider behind it, and two tenants with their own API keys."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from grantkeeper.bootstrap import Runtime, build_runtime
from grantkeeper.config import Settings
from grantkeeper.entrypoints.api.app import create_app
from grantkeeper.service.tenants import issue_api_key

if TYPE_CHECKING:
    from tests.api.connect_support import ConnectRig

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
        "authorize_url": sandbox_server.authorize_url,  # so connect links can be made for it
    }
    response = acme.post("/v1/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


# --- helpers shared by the API test modules ------------------------------------------------------------

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:grantkeeper:problem:"


def check_problem(response: httpx.Response, status: int, slug: str) -> dict:
    """Assert an RFC 9457 problem document with a stable ``type``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["type"] == PROBLEM_TYPE_PREFIX + slug, body
    assert body["status"] == status, body
    assert body["title"], body
    assert isinstance(body["detail"], str), body
    assert body["instance"] == response.request.url.path, body  # the path only, never the query string
    return body


@pytest.fixture
def problem():
    """``problem(response, status, slug)``: assert a problem document and return its body."""
    return check_problem


@dataclass
class Connected:
    """A connection created over the API, with the sandbox grant behind it."""

    id: str
    body: dict
    grant: object  # grantkeeper.sandbox.model.GrantTokens


@pytest.fixture
def add_provider(sandbox_server):
    """``add_provider(client, name="sandbox", revocation=True, **fields)``: register the sandbox as a provider
    of the client's tenant; returns the 201 body."""

    def add(client: httpx.Client, name: str = "sandbox", *, revocation: bool = True, **fields) -> dict:
        body = {
            "name": name,
            "token_url": sandbox_server.token_url,
            "client_id": "app",
            "client_secret": "app-secret",
        }
        if revocation:
            body["revocation_url"] = sandbox_server.revocation_url
        response = client.post("/v1/providers", json=body | fields)
        assert response.status_code == 201, response.text
        return response.json()

    return add


@pytest.fixture
def connect(sandbox):
    """``connect(client, user_id, provider="sandbox", with_access_token=False, expires_in=None,
    behaviour=None, lifetime=3600, **fields)``: a new sandbox grant stored as a connection over the API.

    Without an access token on file the first token request refreshes; with one, ``expires_in`` seconds from
    now (default: the grant's lifetime) is its ``expires_at``."""

    def create(
        client: httpx.Client,
        user_id: str = "u1",
        *,
        provider: str = "sandbox",
        with_access_token: bool = False,
        expires_in: float | None = None,
        behaviour=None,
        lifetime: int = 3600,
        **fields,
    ) -> Connected:
        grant = sandbox.issue_grant(client_id="app", access_token_lifetime=lifetime)
        if behaviour is not None:
            sandbox.set_behaviour(grant.grant_id, behaviour)
        body = {"provider": provider, "user_id": user_id, "refresh_token": grant.refresh_token}
        if with_access_token:
            body["access_token"] = grant.access_token
            body["expires_at"] = int(time.time() + (lifetime if expires_in is None else expires_in))
        response = client.post("/v1/connections", json=body | fields)
        assert response.status_code == 201, response.text
        created = response.json()
        return Connected(created["id"], created, grant)

    return create


@pytest.fixture
def rig(database_url, key_line, sandbox, sandbox_server) -> Iterator[ConnectRig]:
    """The API and the sandbox provider set up for connecting in a browser (``connect_support``)."""
    from tests.api.connect_support import running_rig  # it builds on this module's helpers

    with running_rig(database_url, key_line, sandbox, sandbox_server) as built:
        yield built
