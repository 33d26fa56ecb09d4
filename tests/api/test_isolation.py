"""Tenant isolation: every ``/v1`` path and method, called with another tenant's key, behaves as if acme's
resources did not exist (404, never 403), never lists them, cannot build on them, and changes nothing of
acme's.

``ROUTES`` is the table: a new ``/v1`` route gets a row here, and ``test_the_table_covers_every_v1_route``
fails until it does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from grantkeeper.sandbox.behaviour import Behaviour

ACME_USER = "acme-user-7f3a"
ACME_WORKFLOW = "acme-workflow-7f3a"
GLOBEX_PROVIDER = "globex-oauth"
GLOBEX_WORKFLOW = "globex-workflow"
PREFS_USER = "shared-user"  # both tenants may have a user of that id; each has its own preferences
ACME_ADDRESS = "acme-address-7f3a@example.test"


@dataclass(frozen=True)
class Route:
    """One call globex makes against acme's resources.

    ``path`` is the OpenAPI path template (plus an optional query string); its placeholders are filled with
    acme's resources, ``use`` maps a placeholder to another of acme's values. A row with ``slug`` must answer
    that problem; a row without one must answer ``status``, and a listing (200) must show none of acme's
    items and globex's ``own`` one.
    """

    method: str
    path: str
    status: int = 404
    slug: str | None = "not-found"
    body: Callable[[dict[str, str]], Any] | None = None
    use: dict[str, str] = field(default_factory=dict)
    own: str | None = None  # a globex value a listing must show

    @property
    def id(self) -> str:
        suffix = "".join(f" {k}={v}" for k, v in self.use.items())
        return f"{self.method} {self.path}{suffix}"

    @property
    def template(self) -> str:
        return self.path.split("?")[0]


def _connection_body(acme: dict[str, str]) -> dict:
    return {"provider": acme["name"], "user_id": "globex-user", "refresh_token": "sbx-rt-globex"}


ROUTES = [
    # one resource of acme's, by id or name: 404, as if it did not exist
    Route("GET", "/v1/connections/{connection_id}"),
    Route("DELETE", "/v1/connections/{connection_id}"),
    Route("GET", "/v1/connections/{connection_id}/token"),
    Route("GET", "/v1/connections/{connection_id}/attempts"),
    Route("GET", "/v1/connections/{connection_id}/token", use={"connection_id": "disconnected_id"}),
    Route("GET", "/v1/providers/{name}"),
    Route("PATCH", "/v1/providers/{name}", body=lambda acme: {"client_secret": "stolen-secret"}),
    Route("DELETE", "/v1/providers/{name}?with_connections=true"),
    Route("GET", "/v1/workflows/{workflow_id}"),
    Route("POST", "/v1/notifications/{notification_id}/read"),
    Route("DELETE", "/v1/webhooks/{webhook_id}"),
    Route("POST", "/v1/webhooks/{webhook_id}/enable"),
    Route("DELETE", "/v1/channels/{channel_id}"),
    Route("POST", "/v1/channels/{channel_id}/enable"),
    Route("GET", "/v1/deliveries?destination_id={channel_id}", 422, "invalid-input"),
    Route("POST", "/v1/connections/{connection_id}/reconnect-link", body=lambda acme: {}),
    # building on acme's resources
    Route("POST", "/v1/connections", 422, "unknown-provider", body=_connection_body),
    Route(
        "POST",
        "/v1/connections/import",
        422,
        "unknown-provider",
        body=lambda acme: {"connections": [_connection_body(acme)]},
    ),
    Route(
        "POST",
        "/v1/workflows",
        404,
        "not-found",
        body=lambda acme: {"name": "stolen", "connection_ids": [acme["connection_id"]]},
    ),
    Route(
        "POST",
        "/v1/connect-sessions",
        422,
        "unknown-provider",
        body=lambda acme: {"provider": acme["name"], "user_id": "stolen"},
    ),
    # names are per tenant: globex may take acme's provider name for a provider of its own
    Route(
        "POST",
        "/v1/providers",
        201,
        None,
        body=lambda acme: {
            "name": acme["name"],
            "token_url": "https://globex.example.test/token",
            "client_id": "globex",
            "client_secret": "globex-secret",
        },
    ),
    # listings: only globex's own items
    Route("GET", "/v1/connections", 200, None, own="connection_id"),
    Route("GET", "/v1/connections?provider={name}&user_id=" + ACME_USER, 200, None),
    Route("GET", "/v1/connections?cursor={cursor}", 200, None),
    Route("GET", "/v1/providers", 200, None, own="name"),
    Route("GET", "/v1/workflows", 200, None, own="workflow_id"),
    Route("GET", "/v1/notifications", 200, None),
    Route("GET", "/v1/webhooks", 200, None, own="webhook_id"),
    Route("GET", "/v1/channels", 200, None),
    Route("GET", "/v1/deliveries", 200, None),
    # preferences are per tenant: globex reads and sets its own user of the same id
    Route("GET", "/v1/users/{user_id}/preferences", 200, None),
    Route("PATCH", "/v1/users/{user_id}/preferences", 200, None, body=lambda acme: {"slack": True}),
    # creating a destination builds on nothing of acme's; it must not show acme's
    Route("POST", "/v1/webhooks", 201, None, body=lambda acme: {"url": "https://globex.example.test/new"}),
    Route(
        "POST",
        "/v1/channels",
        201,
        None,
        body=lambda acme: {"kind": "slack", "url": "https://hooks.slack.com/services/G/G/g"},
    ),
]


@dataclass
class World:
    acme: dict[str, str]  # placeholder values: acme's ids and names
    globex: dict[str, str]
    acme_markers: list[str]  # strings that only acme's resources contain
    grant_ids: list[str]


@pytest.fixture
def world(acme, globex, sandbox, sandbox_provider, add_provider, connect) -> World:
    fresh = connect(acme, ACME_USER)  # no access token on file: a token request would refresh it
    spare = connect(acme, ACME_USER + "-2")
    broken = connect(acme, ACME_USER + "-3", behaviour=Behaviour.CONSENT_REQUIRED)
    assert acme.get(f"/v1/connections/{broken.id}/token").status_code == 409  # disconnected, notified
    workflow = acme.post(
        "/v1/workflows", json={"name": ACME_WORKFLOW, "connection_ids": [fresh.id, broken.id]}
    ).json()
    [notification] = acme.get("/v1/notifications").json()
    page = acme.get("/v1/connections", params={"limit": 1}).json()
    assert page["next_cursor"]
    webhook = acme.post("/v1/webhooks", json={"url": "https://acme.example.test/hook"}).json()
    channel = acme.post(
        "/v1/channels",
        json={"kind": "slack", "url": "https://hooks.slack.com/services/A/A/a", "user_id": ACME_USER},
    ).json()
    prefs = {"slack": False, "email_address": ACME_ADDRESS}
    assert acme.patch(f"/v1/users/{PREFS_USER}/preferences", json=prefs).status_code == 200

    add_provider(globex, GLOBEX_PROVIDER)
    own = connect(globex, "globex-user", provider=GLOBEX_PROVIDER)
    own_workflow = globex.post("/v1/workflows", json={"name": GLOBEX_WORKFLOW, "connection_ids": [own.id]})
    assert own_workflow.status_code == 201
    own_webhook = globex.post("/v1/webhooks", json={"url": "https://globex.example.test/hook"}).json()
    sandbox.reset_stats()

    ids = [fresh.id, spare.id, broken.id, workflow["id"], notification["id"], webhook["id"], channel["id"]]
    return World(
        acme={
            "connection_id": fresh.id,
            "disconnected_id": broken.id,
            "name": "sandbox",
            "workflow_id": workflow["id"],
            "notification_id": notification["id"],
            "cursor": page["next_cursor"],
            "webhook_id": webhook["id"],
            "channel_id": channel["id"],
            "user_id": PREFS_USER,
        },
        globex={
            "connection_id": own.id,
            "name": GLOBEX_PROVIDER,
            "workflow_id": own_workflow.json()["id"],
            "webhook_id": own_webhook["id"],
        },
        acme_markers=[*ids, ACME_USER, ACME_WORKFLOW, '"sandbox"', ACME_ADDRESS, "acme.example.test"],
        grant_ids=[fresh.grant.grant_id, spare.grant.grant_id, broken.grant.grant_id],
    )


def acme_view(client) -> dict[str, Any]:
    """Everything acme can see of its own data (reading changes nothing)."""
    return {
        path: client.get(path).json()
        for path in (
            "/v1/connections",
            "/v1/providers",
            "/v1/workflows",
            "/v1/notifications",
            "/v1/webhooks",
            "/v1/channels",
            "/v1/deliveries",
            f"/v1/users/{PREFS_USER}/preferences",
        )
    }


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.id)
def test_another_tenant_cannot_see_use_or_change_acme_resources(route, acme, globex, world, sandbox, problem):
    before = acme_view(acme)
    values = world.acme | {placeholder: world.acme[key] for placeholder, key in route.use.items()}
    path = route.path.format(**values)
    kwargs = {"json": route.body(values)} if route.body else {}

    response = globex.request(route.method, path, **kwargs)

    if route.slug is not None:
        problem(response, route.status, route.slug)
    else:
        assert response.status_code == route.status, response.text
        assert response.headers["content-type"] == "application/json"
    if route.status == 200:
        for marker in world.acme_markers:
            assert marker not in response.text, (marker, response.text)
        if route.own is not None:
            assert world.globex[route.own] in response.text
    # nothing of acme's changed, nothing reached the provider, no grant was revoked
    assert acme_view(acme) == before
    assert sandbox.stats().requests == 0
    assert not any(sandbox.describe(grant_id)["revoked"] for grant_id in world.grant_ids)
    assert acme.get(f"/v1/connections/{world.acme['connection_id']}/token").status_code == 200


def test_every_route_needs_an_api_key(api, world, problem):
    with api.client(None) as anonymous:
        for route in ROUTES:
            path = route.path.format(**world.acme)
            kwargs = {"json": route.body(world.acme)} if route.body else {}
            response = anonymous.request(route.method, path, **kwargs)
            assert response.status_code == 401, (route.id, response.text)
            problem(response, 401, "unauthorized")


def test_the_table_covers_every_v1_route(acme):
    spec = acme.get("/openapi.json").json()
    served = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    covered = {(route.method, route.template) for route in ROUTES}
    assert served - covered == set(), "add a row to ROUTES for every new /v1 route"
    assert covered - served == set()


def test_names_are_per_tenant(acme, globex, world, add_provider, connect):
    """globex may use the names acme uses; each tenant's name means its own resource."""
    twin = add_provider(globex, "sandbox", revocation=False)
    assert twin["revocation_url"] is None
    mine = connect(globex, ACME_USER)  # on globex's own "sandbox"
    listed = globex.get("/v1/connections", params={"provider": "sandbox"}).json()["items"]
    assert [c["id"] for c in listed] == [mine.id]
    named = globex.post("/v1/workflows", json={"name": ACME_WORKFLOW, "connection_ids": [mine.id]})
    assert named.status_code == 201
    assert named.json()["id"] != world.acme["workflow_id"]

    acme_provider = acme.get("/v1/providers/sandbox").json()
    assert acme_provider["revocation_url"] is not None  # untouched by globex's twin
    acme_ids = {c["id"] for c in acme.get("/v1/connections", params={"provider": "sandbox"}).json()["items"]}
    assert mine.id not in acme_ids
    assert len(acme_ids) == 3
    assert [w["name"] for w in acme.get("/v1/workflows").json()] == [ACME_WORKFLOW]
