"""The basics, end to end over HTTP: a provider, a connection, its token, and the operational endpoints."""

from __future__ import annotations


def test_connection_lifecycle_over_http(acme, sandbox, sandbox_provider):
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    created = acme.post(
        "/v1/connections",
        json={
            "provider": "sandbox",
            "user_id": "u1",
            "refresh_token": grant.refresh_token,
            "workflows": ["sync"],
        },
    )
    assert created.status_code == 201, created.text
    connection = created.json()
    assert "refresh_token" not in created.text
    assert grant.refresh_token not in created.text

    token = acme.get(f"/v1/connections/{connection['id']}/token")
    assert token.status_code == 200, token.text
    assert token.json()["access_token"].startswith("sbx-at-")
    assert token.headers["cache-control"] == "no-store"
    assert sandbox.stats().refreshes_ok == 1  # no access token on file: refreshed on demand

    again = acme.get(f"/v1/connections/{connection['id']}/token")
    assert again.json()["access_token"] == token.json()["access_token"]
    assert sandbox.stats().refreshes_ok == 1  # still fresh: no second refresh

    deleted = acme.delete(f"/v1/connections/{connection['id']}")
    assert deleted.status_code == 204
    assert acme.get(f"/v1/connections/{connection['id']}").status_code == 404


def test_health_ready_metrics_and_openapi(api, acme):
    assert acme.get("/healthz").json() == {"status": "ok"}
    assert acme.get("/readyz").json() == {"status": "ready"}
    metrics = acme.get("/metrics")
    assert metrics.status_code == 200
    assert "grantkeeper_connections" in metrics.text
    assert acme.get("/openapi.json").json()["info"]["title"] == "grantkeeper"
