"""The sandbox's control API, its RFC 7009 revocation endpoint and ``python -m grantkeeper.sandbox``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grantkeeper.sandbox import GrantTokens, Sandbox, SandboxServer
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, read_line

AUTH = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)


@pytest.fixture
def control(sandbox_server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_server.base_url + "/_sandbox", timeout=5) as client:
        yield client


def _refresh(base_url: str, token: str, auth: tuple[str, str] = AUTH) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return httpx.post(base_url + "/oauth/token", data=data, auth=auth, timeout=5)


def test_control_api_mirrors_the_python_api(
    sandbox: Sandbox, sandbox_server: SandboxServer, control: httpx.Client
) -> None:
    base = sandbox_server.base_url
    created = control.post(
        "/clients", json={"client_id": "bench", "client_secret": "b", "rotate_refresh_tokens": False}
    )
    assert created.status_code == 200
    issued = control.post("/grants", json={"client_id": "bench", "count": 3, "access_token_lifetime": 120})
    grants: list[dict[str, Any]] = issued.json()["grants"]
    assert [set(g) for g in grants] == [{"grant_id", "access_token", "refresh_token", "expires_in"}] * 3
    assert {g["expires_in"] for g in grants} == {120}
    first, second, third = (g["grant_id"] for g in grants)
    token = grants[0]["refresh_token"]

    assert _refresh(base, token, ("bench", "b")).json()["expires_in"] == 120  # no rotation: token unchanged
    assert control.put(f"/grants/{first}/behaviour", json={"behaviour": "rate_limit"}).status_code == 200
    assert _refresh(base, token, ("bench", "b")).status_code == 429
    assert control.put(f"/grants/{first}/behaviour", json={"behaviour": None}).status_code == 200
    assert (
        control.post(f"/grants/{first}/script", json={"behaviours": ["server_error", "ok"]}).status_code
        == 200
    )
    assert control.get(f"/grants/{first}").json()["script"] == ["server_error", "ok"]
    assert [_refresh(base, token, ("bench", "b")).status_code for _ in range(2)] == [500, 200]

    assert control.put("/fractions", json={"bad_gateway": 1.0}).status_code == 200
    assert _refresh(base, grants[1]["refresh_token"], ("bench", "b")).status_code == 502
    assert control.put("/fractions", json={}).status_code == 200
    assert _refresh(base, grants[1]["refresh_token"], ("bench", "b")).status_code == 200

    assert control.post(f"/grants/{third}/revoke").status_code == 200
    assert _refresh(base, grants[2]["refresh_token"], ("bench", "b")).json()["error"] == "invalid_grant"
    assert control.get(f"/grants/{third}").json()["revoked"] is True

    stats = control.get("/stats").json()
    assert stats == {
        "requests": 7,
        "refreshes_ok": 3,
        "reuse_detected": 0,
        "by_behaviour": {"ok": 3, "rate_limit": 1, "server_error": 1, "bad_gateway": 1, "invalid_grant": 1},
        "by_grant": {first: 4, second: 2, third: 1},
    }
    assert control.post("/stats/reset").status_code == 200
    assert control.get("/stats").json()["requests"] == 0
    assert sandbox.stats().requests == 0  # one state, two ways in


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("POST", "/clients", b"{not json", "not valid JSON"),
        ("POST", "/clients", b"[1, 2]", "JSON object"),
        ("POST", "/clients", b'{"client_id": "x"}', "client_secret"),
        (
            "POST",
            "/clients",
            b'{"client_id": "x", "client_secret": "y", "rotate_refresh_tokens": "yes"}',
            "boolean",
        ),
        ("POST", "/grants", b'{"client_id": "nobody"}', "unknown client_id"),
        ("POST", "/grants", b'{"client_id": "app", "count": -1}', "count"),
        ("POST", "/grants", b'{"client_id": "app", "count": true}', "count"),
        ("POST", "/grants", b'{"client_id": "app", "behaviour": "explode"}', "unknown behaviour"),
        ("PUT", "/grants/grant-999/behaviour", b'{"behaviour": "ok"}', "unknown grant_id"),
        ("PUT", "/grants/GRANT/behaviour", b'{"behaviour": "explode"}', "one of: ok, "),
        ("PUT", "/grants/GRANT/behaviour", b"{}", "behaviour"),
        ("POST", "/grants/GRANT/script", b'{"behaviours": "rate_limit"}', "behaviours"),
        ("POST", "/grants/GRANT/script", b'{"behaviours": ["rate_limit", 3]}', "unknown behaviour"),
        ("PUT", "/fractions", b'{"rate_limit": 0.7, "unavailable": 0.7}', "more than 1"),
        ("PUT", "/fractions", b'{"rate_limit": "lots"}', "number"),
        ("PUT", "/fractions", b'{"nope": 0.1}', "unknown behaviour"),
        ("POST", "/grants/grant-999/revoke", b"", "unknown grant_id"),
    ],
)
def test_bad_control_input_gets_400_and_changes_nothing(
    sandbox: Sandbox,
    control: httpx.Client,
    grant: GrantTokens,
    method: str,
    path: str,
    body: bytes,
    fragment: str,
) -> None:
    response = control.request(method, path.replace("GRANT", grant.grant_id), content=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert sandbox.describe(grant.grant_id)["script"] == []
    assert sandbox.describe(grant.grant_id)["behaviour"] is None


def test_unknown_control_routes(control: httpx.Client, grant: GrantTokens) -> None:
    assert control.get("/nothing").status_code == 404
    assert control.get(f"/grants/{grant.grant_id}/nothing").status_code == 404
    assert control.get("/clients").status_code == 405
    assert control.delete(f"/grants/{grant.grant_id}/revoke").status_code == 405


@pytest.fixture
def grant(sandbox: Sandbox) -> GrantTokens:
    return sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)


@pytest.mark.parametrize("which", ["refresh_token", "access_token", "rotated_refresh_token"])
def test_revocation_endpoint_revokes_the_grant(
    sandbox: Sandbox, sandbox_server: SandboxServer, grant: GrantTokens, which: str
) -> None:
    """RFC 7009 section 2.1: revoking either token of a grant ends the grant."""
    rotated = _refresh(sandbox_server.base_url, grant.refresh_token).json()
    token = {
        "refresh_token": rotated["refresh_token"],
        "access_token": rotated["access_token"],
        "rotated_refresh_token": grant.refresh_token,
    }[which]
    response = httpx.post(sandbox_server.revocation_url, data={"token": token}, auth=AUTH)
    assert response.status_code == 200
    assert _refresh(sandbox_server.base_url, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    assert sandbox.describe(grant.grant_id)["revoked"] is True


def test_revocation_endpoint_answers_200_for_unknown_tokens(
    sandbox: Sandbox, sandbox_server: SandboxServer, grant: GrantTokens
) -> None:
    response = httpx.post(sandbox_server.revocation_url, data={"token": "sbx-rt-nope"}, auth=AUTH)
    assert response.status_code == 200
    assert sandbox.describe(grant.grant_id)["revoked"] is False


def test_revocation_endpoint_authenticates_the_client_first(
    sandbox: Sandbox, sandbox_server: SandboxServer, grant: GrantTokens
) -> None:
    """RFC 7009 section 2.1: client authentication as at the token endpoint; nobody else revokes a grant."""
    url, token = sandbox_server.revocation_url, grant.refresh_token
    unauthenticated = httpx.post(url, data={"token": token})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"
    wrong = httpx.post(url, data={"token": token}, auth=(AUTH[0], "wrong-secret"))
    assert wrong.status_code == 401
    in_body = {"token": token, "client_id": AUTH[0], "client_secret": "wrong-secret"}
    assert httpx.post(url, data=in_body).status_code == 401
    missing = httpx.post(url, data={}, auth=AUTH)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    sandbox.add_client("other", "other-secret")
    other = httpx.post(url, data={"token": token}, auth=("other", "other-secret"))
    assert other.status_code == 200  # answered as an unknown token would be
    assert sandbox.describe(grant.grant_id)["revoked"] is False
    assert httpx.post(url, data={"token": token}, auth=AUTH).status_code == 200
    assert sandbox.describe(grant.grant_id)["revoked"] is True


def test_issue_grants_in_bulk_gives_unique_grants(sandbox: Sandbox) -> None:
    """Bulk issuance exists for the benchmarks; its speed is theirs to measure, not a timed test's."""
    grants = sandbox.issue_grants(client_id=SANDBOX_CLIENT_ID, count=5000, access_token_lifetime=3600)
    assert len({g.grant_id for g in grants}) == len({g.refresh_token for g in grants}) == 5000


def test_issue_grant_refuses_unknown_clients(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="unknown client_id"):
        sandbox.issue_grant(client_id="nobody")
    with pytest.raises(ValueError, match="unknown grant_id"):
        sandbox.current_refresh_token("grant-404")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_standalone_sandbox_serves_until_signalled(sig: signal.Signals) -> None:
    command = [sys.executable, "-m", "grantkeeper.sandbox", "--host", "127.0.0.1", "--port", "0"]
    command += ["--client-id", "bench", "--client-secret", "bench-secret"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            token_url = read_line(proc.stdout, timeout=10)
            assert token_url.startswith("http://127.0.0.1:")
            assert token_url.endswith("/oauth/token")
            base = token_url.removesuffix("/oauth/token")
            grant = httpx.post(base + "/_sandbox/grants", json={"client_id": "bench"}).json()["grants"][0]
            refreshed = _refresh(base, grant["refresh_token"], ("bench", "bench-secret"))
            assert refreshed.status_code == 200
            assert httpx.get(base + "/_sandbox/stats").json()["refreshes_ok"] == 1
        finally:
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        assert grant["refresh_token"] not in stderr  # nothing logs tokens
