"""``GET /v1/connections/{id}/attempts``: what happened to a connection, attempt by attempt, never a token.
Over real HTTP against the sandbox provider, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest

from grantkeeper.sandbox.behaviour import Behaviour

FIELDS = {"attempted_at", "outcome", "http_status", "error_code", "duration_ms"}


def test_each_refresh_is_listed_newest_first_and_pages_back(acme, connect, sandbox, sandbox_provider):
    connection = connect(acme, "u1")
    assert acme.get(f"/v1/connections/{connection.id}/attempts").json() == []
    fresh = acme.get(f"/v1/connections/{connection.id}/token")  # no access token on file: refreshes
    assert fresh.status_code == 200, fresh.text
    sandbox.set_behaviour(connection.grant.grant_id, Behaviour.SERVER_ERROR)
    failed = acme.get(f"/v1/connections/{connection.id}/token", params={"min_validity": 86_400})
    assert failed.status_code == 503, failed.text

    listed = acme.get(f"/v1/connections/{connection.id}/attempts")
    assert listed.status_code == 200, listed.text
    attempts = listed.json()
    assert [set(a) for a in attempts] == [FIELDS, FIELDS]
    assert [(a["outcome"], a["http_status"]) for a in attempts] == [("transient", 500), ("success", 200)]
    assert attempts[1]["error_code"] is None
    newer, older = (datetime.fromisoformat(a["attempted_at"]) for a in attempts)
    assert newer > older
    assert older.tzinfo is not None
    assert all(a["duration_ms"] >= 0 for a in attempts)
    for secret in (connection.grant.refresh_token, fresh.json()["access_token"]):
        assert secret not in listed.text

    first_page = acme.get(f"/v1/connections/{connection.id}/attempts", params={"limit": 1})
    assert first_page.json() == attempts[:1]
    before = {"before": attempts[0]["attempted_at"]}
    assert acme.get(f"/v1/connections/{connection.id}/attempts", params=before).json() == attempts[1:]


def test_another_tenants_or_an_unknown_connection_is_404(acme, globex, connect, sandbox_provider, problem):
    connection = connect(acme, "u1")
    assert acme.get(f"/v1/connections/{connection.id}/token").status_code == 200
    problem(globex.get(f"/v1/connections/{connection.id}/attempts"), 404, "not-found")
    problem(acme.get("/v1/connections/con_00000000000000000000/attempts"), 404, "not-found")
    assert len(acme.get(f"/v1/connections/{connection.id}/attempts").json()) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "x"},
        {"before": "yesterday"},
        {"before": "2026-12-01T10:00:00"},
    ],
    ids=repr,
)
def test_bad_parameters_are_refused(acme, connect, sandbox_provider, problem, params):
    connection = connect(acme, "u1")
    problem(acme.get(f"/v1/connections/{connection.id}/attempts", params=params), 422, "validation-error")
