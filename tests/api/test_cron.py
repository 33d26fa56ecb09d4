"""The cron endpoint: secret checks in both forms, a verbose summary without tokens, overlapping calls, and a
``?secret=`` that never reaches a log line."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from grantkeeper.sandbox import Behaviour
from tests.api.conftest import CRON_SECRET

CRON = "/api/cron/token-refresh"


def connect(client, sandbox, user_id: str, behaviour: Behaviour | None = None) -> str:
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    if behaviour is not None:
        sandbox.set_behaviour(grant.grant_id, behaviour)
    body = {"provider": "sandbox", "user_id": user_id, "refresh_token": grant.refresh_token}
    response = client.post("/v1/connections", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_cron_without_a_configured_secret_is_unavailable(api_factory):
    api = api_factory(cron_secret=None)
    with api.client(None) as client:
        response = client.get(CRON, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert response.json()["type"] == "urn:grantkeeper:problem:cron-disabled"


def test_cron_refuses_a_missing_or_wrong_secret(api):
    with api.client(None) as client:
        for attempt in (
            client.get(CRON),
            client.post(CRON),
            client.get(CRON, headers={"Authorization": "Bearer wrong"}),
            client.get(CRON, params={"secret": "wrong"}),
            client.get(CRON, headers={"Authorization": f"Basic {CRON_SECRET}"}),
            client.get(CRON, params={"secret": CRON_SECRET[:-1]}),
        ):
            assert attempt.status_code == 401, attempt.text
            assert attempt.headers["content-type"] == "application/problem+json"


def test_cron_accepts_the_bearer_header_and_the_query_secret_with_get_and_post(
    api, acme, sandbox, sandbox_provider
):
    connect(acme, sandbox, "u1")
    with api.client(None) as client:
        by_header = client.post(CRON, headers={"Authorization": f"Bearer {CRON_SECRET}"})
        by_query = client.get(CRON, params={"secret": CRON_SECRET})
    assert by_header.status_code == 200, by_header.text
    assert by_query.status_code == 200, by_query.text
    summary = by_header.json()
    assert summary["status"] == "completed"
    assert summary["due"] == 1
    assert summary["refreshed"] == 1
    for field in ("by_outcome", "newly_disconnected", "notifications_created", "stale", "duration_seconds"):
        assert field in summary
    assert by_query.json()["due"] == 0  # refreshed a moment ago: nothing due


def test_verbose_cron_lists_each_connection_without_any_token(api, acme, sandbox, sandbox_provider):
    healthy = connect(acme, sandbox, "u1")
    revoked = connect(acme, sandbox, "u2", Behaviour.CONSENT_REQUIRED)
    with api.client(None) as client:
        response = client.get(
            CRON, params={"verbose": "true"}, headers={"Authorization": f"Bearer {CRON_SECRET}"}
        )
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["connections"]}
    assert rows[healthy]["outcome"] == "success"
    assert rows[revoked]["outcome"] == "reauth_required"
    assert rows[revoked]["status"] == "needs_reauthorization"
    assert {"provider", "consecutive_failures", "consecutive_transient_failures"} <= set(rows[healthy])
    assert "sbx-" not in response.text
    assert "token" not in " ".join(rows[healthy])


def test_overlapping_cron_calls_never_refresh_twice_and_the_second_returns_promptly(
    api, acme, sandbox, sandbox_provider
):
    for index in range(5):
        connect(acme, sandbox, f"slow-{index}", Behaviour.HANG)  # each attempt waits out the 2 s read timeout
    for index in range(20):
        connect(acme, sandbox, f"fast-{index}")

    async def overlap() -> tuple[httpx.Response, httpx.Response, float]:
        headers = {"Authorization": f"Bearer {CRON_SECRET}"}
        async with httpx.AsyncClient(base_url=api.base_url, headers=headers, timeout=60) as client:
            first = asyncio.create_task(client.post(CRON))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            second = await client.post(CRON)
            second_took = time.monotonic() - started
            return await first, second, second_took

    first, second, second_took = asyncio.run(overlap())
    assert first.json()["status"] == "completed"
    assert first.json()["due"] == 25
    assert second.status_code == 200
    assert second.json()["status"] == "already_running"
    assert second_took < 1.0
    assert set(sandbox.stats().by_grant.values()) == {1}
    assert sandbox.stats().reuse_detected == 0


def test_query_secret_never_reaches_a_log_line(api, caplog):
    caplog.set_level(logging.DEBUG)
    with api.client(None) as client:
        assert client.get(CRON, params={"secret": CRON_SECRET}).status_code == 200
        assert client.get(CRON, params={"secret": CRON_SECRET + "x"}).status_code == 401
    server_side = [
        r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    ]  # not the test's client
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in server_side)
    assert "/api/cron/token-refresh" in logged  # the access log saw the requests
    assert CRON_SECRET not in logged
