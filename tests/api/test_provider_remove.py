"""``DELETE /v1/providers/{name}``: a provider goes, and its connections with it only when the caller says so.
Over real HTTP against the sandbox provider, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.api.conftest import CRON_SECRET


def test_a_provider_without_connections_goes_and_its_name_is_free_again(
    acme, sandbox_provider, sandbox_server, problem
):
    removed = acme.delete("/v1/providers/sandbox")
    assert removed.status_code == 204, removed.text
    assert removed.content == b""
    problem(acme.get("/v1/providers/sandbox"), 404, "not-found")
    assert acme.get("/v1/providers").json() == []
    body = {
        "name": "sandbox",
        "token_url": sandbox_server.token_url,
        "client_id": "app",
        "client_secret": "s",
    }
    again = acme.post("/v1/providers", json=body)
    assert again.status_code == 201, again.text


def test_connections_go_with_their_provider_only_when_asked(
    acme, connect, sandbox, sandbox_provider, problem
):
    kept = connect(acme, "u1", workflows=["nightly-sync"])
    other = connect(acme, "u2")
    assert acme.get(f"/v1/connections/{kept.id}/token").status_code == 200

    refused = problem(acme.delete("/v1/providers/sandbox"), 409, "provider-in-use")
    assert refused["connections"] == 2
    assert "with_connections=true" in refused["detail"]
    assert acme.get("/v1/providers/sandbox").status_code == 200  # nothing changed
    assert {c["id"] for c in acme.get("/v1/connections").json()["items"]} == {kept.id, other.id}
    assert acme.get(f"/v1/connections/{other.id}/token").status_code == 200

    removed = acme.delete("/v1/providers/sandbox", params={"with_connections": "true"})
    assert removed.status_code == 204, removed.text
    problem(acme.get("/v1/providers/sandbox"), 404, "not-found")
    for connection_id in (kept.id, other.id):
        problem(acme.get(f"/v1/connections/{connection_id}"), 404, "not-found")
        problem(acme.get(f"/v1/connections/{connection_id}/token"), 404, "not-found")
    assert acme.get("/v1/connections").json()["items"] == []
    (workflow,) = acme.get("/v1/workflows").json()
    assert (workflow["name"], workflow["connection_ids"]) == ("nightly-sync", [])  # the workflow stays
    # forgotten, not revoked: revoking is DELETE /v1/connections/{id}, one grant at a time
    assert sandbox.describe(kept.grant.grant_id)["revoked"] is False
    cron = acme.post("/api/cron/token-refresh", headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert cron.status_code == 200, cron.text
    assert cron.json()["refreshed"] == 0


def test_an_unknown_provider_is_404_and_another_tenants_is_unknown(acme, globex, sandbox_provider, problem):
    problem(acme.delete("/v1/providers/nope"), 404, "not-found")
    problem(globex.delete("/v1/providers/sandbox", params={"with_connections": "true"}), 404, "not-found")
    assert acme.get("/v1/providers/sandbox").status_code == 200


def test_a_bad_flag_is_refused_and_changes_nothing(acme, sandbox_provider, problem):
    problem(
        acme.delete("/v1/providers/sandbox", params={"with_connections": "maybe"}), 422, "validation-error"
    )
    assert acme.get("/v1/providers/sandbox").status_code == 200
