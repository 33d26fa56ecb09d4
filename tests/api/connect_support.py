"""The connect flow driven over real HTTP: the API on a loopback port whose public URL is itself, the sandbox
provider with its consent page, and browsers as httpx clients with their own cookie jars."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

from grantkeeper.bootstrap import Runtime, build_runtime
from grantkeeper.entrypoints.api.app import create_app
from grantkeeper.sandbox import Sandbox
from grantkeeper.sandbox.server import SandboxServer
from grantkeeper.service.tenants import issue_api_key
from grantkeeper.testing import FrozenClock
from tests.api.conftest import CRON_SECRET, api_settings, free_port, serve_in_thread

ALLOWED_RETURN = "https://app.example.test/integrations"
_CONSENT = re.compile(r'name="consent"[^>]*\svalue="([^"]+)"')


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


@dataclass
class Browser:
    """One user agent: its own cookies; redirects are followed by hand so each hop can be looked at."""

    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.client.get(url, **kwargs)

    def open_link(self, url: str) -> httpx.Response:
        """GET a connect link: a 303 to the provider (or a refusal page)."""
        return self.get(url)

    def consent(self, authorize_location: str, decision: str = "allow", user: str = "sandbox-user") -> str:
        """At the provider: load the consent page, sign in as ``user`` and click Allow or Deny; the provider's
        redirect back."""
        page = self.get(authorize_location)
        assert page.status_code == 200, page.text
        consent_id = _CONSENT.search(page.text)
        assert consent_id is not None, page.text
        base = authorize_location.split("?")[0]
        form = {"consent": consent_id.group(1), "decision": decision, "user": user}
        answer = self.client.post(base, data=form)
        assert answer.status_code == 302, answer.text
        return answer.headers["location"]

    def close(self) -> None:
        self.client.close()


@dataclass
class ConnectRig:
    base_url: str
    runtime: Runtime
    sandbox: Sandbox
    server: SandboxServer
    acme: httpx.Client
    globex: httpx.Client
    clock: FrozenClock
    browsers: list[Browser] = field(default_factory=list)

    def signed_link(self, connection_id: str) -> str:
        """The kind of link an email carries (``/connect/{id}?token=``), signed with the server's key."""
        flow = self.runtime.connect_flow(None)  # type: ignore[arg-type] - signing redeems no code
        link = flow.signed_reconnect_link(connection_id)
        assert link is not None
        return link.url

    def browser(self) -> Browser:
        browser = Browser()
        self.browsers.append(browser)
        return browser

    def add_provider(self, client: httpx.Client | None = None, **fields) -> dict:
        body = {
            "name": "sandbox",
            "token_url": self.server.token_url,
            "authorize_url": self.server.authorize_url,
            "client_id": "app",
            "client_secret": "app-secret",
            "scopes": "files.read offline",
            "authorize_params": {"prompt": "consent"},
        } | fields
        response = (client or self.acme).post("/v1/providers", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def broken_connection(self, user_id: str = "u1", workflows: tuple[str, ...] = ("daily-sync",)) -> str:
        """A connection whose grant the provider stopped honouring: disconnected, its workflows paused."""
        from grantkeeper.sandbox import Behaviour

        grant = self.sandbox.issue_grant(client_id="app")
        self.sandbox.set_behaviour(grant.grant_id, Behaviour.CONSENT_REQUIRED)
        body = {
            "provider": "sandbox",
            "user_id": user_id,
            "refresh_token": grant.refresh_token,
            "email": f"{user_id}@example.test",
            "workflows": list(workflows),
        }
        created = self.acme.post("/v1/connections", json=body)
        assert created.status_code == 201, created.text
        connection_id = created.json()["id"]
        cycle = self.acme.post("/api/cron/token-refresh", headers={"Authorization": f"Bearer {CRON_SECRET}"})
        assert cycle.status_code == 200, cycle.text
        assert self.connection(connection_id)["status"] == "needs_reauthorization"
        return connection_id

    def connection(self, connection_id: str, client: httpx.Client | None = None) -> dict:
        response = (client or self.acme).get(f"/v1/connections/{connection_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def stored_refresh_token(self, connection_id: str) -> str | None:
        tenant_id = self.runtime.store.ensure_tenant("acme")
        return self.runtime.store.read_tokens(tenant_id, connection_id).refresh_token

    def snapshot(self, connection_id: str) -> tuple[dict, str | None, list[dict]]:
        """Everything a refused step must leave as it was: the record, the stored token, the workflows."""
        workflows = self.acme.get("/v1/workflows").json()
        return self.connection(connection_id), self.stored_refresh_token(connection_id), workflows

    def reconnect_link(self, connection_id: str, **body) -> str:
        response = self.acme.post(f"/v1/connections/{connection_id}/reconnect-link", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["url"])

    def to_callback(self, browser: Browser, link: str, user: str = "sandbox-user") -> str:
        """Open the link and consent as ``user``: the callback URL the provider sends the browser to (not yet
        visited)."""
        started = browser.open_link(link)
        assert started.status_code == 303, started.text
        callback = browser.consent(started.headers["location"], user=user)
        assert callback.startswith(self.base_url + "/oauth/callback?"), callback
        return callback


@contextmanager
def running_rig(
    database_url: str, key_line: str, sandbox: Sandbox, server: SandboxServer, **settings: object
) -> Iterator[ConnectRig]:
    """The API serving on a loopback port that is also its public URL, so the provider's redirect back
    reaches it; the sandbox's client ``app`` registers that callback. ``settings`` override the API's."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    values = {"public_url": base_url, "return_url_allowlist": ALLOWED_RETURN} | settings
    clock = FrozenClock()
    runtime = build_runtime(api_settings(database_url, key_line, **values), clock=clock)
    keys = {name: issue_api_key(runtime.store, name, replace=True)[1] for name in ("acme", "globex")}
    api_server, thread = serve_in_thread(create_app(runtime, run_scheduler=False), port)
    sandbox.add_client(
        "app", "app-secret", rotate_refresh_tokens=True, redirect_uris=[base_url + "/oauth/callback"]
    )
    clients = {
        name: httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for name, key in keys.items()
    }
    built = ConnectRig(base_url, runtime, sandbox, server, clients["acme"], clients["globex"], clock)
    try:
        yield built
    finally:
        for browser in built.browsers:
            browser.close()
        for client in clients.values():
            client.close()
        api_server.should_exit = True
        thread.join(timeout=30)
        runtime.close()


def page_of(response: httpx.Response, status: int, kind: str) -> str:
    """The connect page a step answered with: its status, HTML, its ``data-kind``, never cached; its text."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html"), response.text
    assert f'data-kind="{kind}"' in response.text, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.text
