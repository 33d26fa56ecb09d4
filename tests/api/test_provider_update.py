"""``PATCH /v1/providers/{name}``: an operator rotates a client secret, names an issuer or sets limits without
re-creating the provider (which would take its connections with it). Over real HTTP against the sandbox
provider, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import CRON_SECRET

WRONG_SECRET = "expired-secret-0001"


def _provider(acme: httpx.Client, sandbox_server, secret: str) -> dict:
    body = {
        "name": "sandbox",
        "token_url": sandbox_server.token_url,
        "client_id": "app",
        "client_secret": secret,
    }
    response = acme.post("/v1/providers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _stale_connection(acme: httpx.Client, sandbox) -> str:
    grant = sandbox.issue_grant(client_id="app")
    body = {"provider": "sandbox", "user_id": "u1", "refresh_token": grant.refresh_token}
    created = acme.post("/v1/connections", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _refresh_due(acme: httpx.Client) -> dict:
    response = acme.post("/api/cron/token-refresh", headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_rotating_the_client_secret_lets_the_flagged_provider_refresh_again(acme, sandbox, sandbox_server):
    _provider(acme, sandbox_server, WRONG_SECRET)  # the secret the provider no longer takes
    connection_id = _stale_connection(acme, sandbox)
    _refresh_due(acme)
    flagged = acme.get("/v1/providers/sandbox").json()
    assert flagged["flagged_at"] is not None, (
        flagged
    )  # invalid_client: the operator's problem, not the user's
    assert acme.get(f"/v1/connections/{connection_id}").json()["consecutive_failures"] == 0

    updated = acme.patch("/v1/providers/sandbox", json={"client_secret": "app-secret"})
    assert updated.status_code == 200, updated.text
    assert "app-secret" not in updated.text
    assert WRONG_SECRET not in updated.text
    assert updated.json()["flagged_at"] == flagged["flagged_at"]  # cleared by a success, not by the update

    token = acme.get(f"/v1/connections/{connection_id}/token")
    assert token.status_code == 200, token.text
    assert acme.get("/v1/providers/sandbox").json()["flagged_at"] is None
    assert acme.get(f"/v1/connections/{connection_id}").json()["status"] == "connected"


def test_an_update_changes_only_what_it_names_and_null_clears(acme, sandbox_provider, sandbox_server):
    before = acme.get("/v1/providers/sandbox").json()
    changed = acme.patch(
        "/v1/providers/sandbox",
        json={"issuer": sandbox_server.base_url, "max_concurrency": 4, "revocation_url": None,
              "authorize_params": {"prompt": "consent"}},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert after == before | {
        "issuer": sandbox_server.base_url,
        "max_concurrency": 4,
        "revocation_url": None,
        "authorize_params": {"prompt": "consent"},
    }
    assert acme.get("/v1/providers/sandbox").json() == after
    cleared = acme.patch("/v1/providers/sandbox", json={"issuer": None, "max_concurrency": None})
    assert cleared.json() == after | {"issuer": None, "max_concurrency": None}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"token_url": "http://idp.example.test/token"}, 422, "must use https"),
        ({"issuer": "https://idp.example.test/?x=1"}, 422, "must not have a ?query"),
        ({"client_secret": None}, 422, "cannot be cleared"),
        ({"token_url": None}, 422, "cannot be cleared"),
        ({"account_field": "id_token"}, 422, "needs the claim"),
        ({"max_concurrency": 0}, 422, "max_concurrency"),
        ({"rate_limit_per_second": 0.0001}, 422, "rate_limit_per_second"),
        ({"authorize_params": {"state": "x"}}, 422, "set by the flow itself"),
        ({"name": "renamed"}, 422, "name"),
        ({}, 422, "nothing to change"),
    ],
    ids=repr,
)
def test_a_bad_update_is_refused_and_changes_nothing(acme, sandbox_provider, body, status, words):
    before = acme.get("/v1/providers/sandbox").json()
    response = acme.patch("/v1/providers/sandbox", json=body)
    assert response.status_code == status, response.text
    assert words in response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert acme.get("/v1/providers/sandbox").json() == before


def test_an_unknown_provider_is_404_and_another_tenants_is_unknown(acme, globex, sandbox_provider):
    assert acme.patch("/v1/providers/nope", json={"scopes": "a"}).status_code == 404
    assert globex.patch("/v1/providers/sandbox", json={"scopes": "a"}).status_code == 404
    assert acme.get("/v1/providers/sandbox").json()["scopes"] is None
