"""The sandbox's rotation grace window (Okta, Xero, Auth0): a rotated refresh token stays usable for a while.

Real HTTP over loopback; time is an injected clock the tests move, so windows of 30 s take no time at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from grantkeeper.sandbox import Behaviour, Sandbox, SandboxServer
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, ManualClock, grace_window_sandbox

GRACE = 30.0
AUTH = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sandbox(clock: ManualClock) -> Sandbox:
    """Overrides the shared fixture: the same client ``app``, with a 30 s grace window and a manual clock."""
    return grace_window_sandbox(clock, GRACE)


@pytest.fixture
def http(sandbox_server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_server.base_url, auth=AUTH, timeout=5) as client:
        yield client


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token})


def rotate(http: httpx.Client, token: str) -> str:
    """Refresh with ``token``, expecting success; the new refresh token."""
    response = refresh(http, token)
    assert response.status_code == 200, response.text
    new_token = response.json()["refresh_token"]
    assert isinstance(new_token, str)
    return new_token


def test_a_rotated_token_within_the_window_rotates_normally(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    first = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    lost = rotate(http, first.refresh_token)  # the client never saw this answer
    clock.advance(GRACE - 0.1)

    retried = refresh(http, first.refresh_token)
    assert retried.status_code == 200
    body = retried.json()
    assert body["access_token"]
    assert body["refresh_token"] not in (first.refresh_token, lost)
    assert sandbox.current_refresh_token(first.grant_id) == body["refresh_token"]
    assert rotate(http, body["refresh_token"])  # the new token is current and works

    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected, stats.refreshes_ok) == (1, 0, 3)
    assert stats.by_behaviour == {"ok": 3}


def test_the_token_current_before_a_grace_use_stops_working(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    lost = rotate(http, grant.refresh_token)
    newest = rotate(http, grant.refresh_token)  # grace use: ``lost`` is the token the client lost

    answer = refresh(http, lost)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant")
    # Using it is reuse like any rotated token outside a window: the whole grant goes.
    assert refresh(http, newest).json()["error"] == "invalid_grant"
    assert sandbox.describe(grant.grant_id)["revoked"] is True
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected) == (1, 1)


def test_outside_the_window_a_rotated_token_is_reuse(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    current = rotate(http, grant.refresh_token)
    clock.advance(GRACE)  # the window is over once GRACE seconds have passed

    reused = refresh(http, grant.refresh_token)
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert refresh(http, current).json()["error"] == "invalid_grant"
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected, stats.refreshes_ok) == (0, 1, 1)


def test_a_grace_use_does_not_restart_the_window(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    rotate(http, grant.refresh_token)
    clock.advance(20)
    rotate(http, grant.refresh_token)
    clock.advance(GRACE - 20 - 0.1)
    rotate(http, grant.refresh_token)  # still inside the first rotation's window
    clock.advance(0.1)
    assert refresh(http, grant.refresh_token).json()["error"] == "invalid_grant"
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected) == (2, 1)


def test_each_rotation_opens_its_own_window(sandbox: Sandbox, http: httpx.Client, clock: ManualClock) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    second = rotate(http, grant.refresh_token)  # the first token's window: 0 to 30
    clock.advance(10)
    rotate(http, second)  # the second token's window: 10 to 40
    clock.advance(25)

    rotate(http, second)  # 25 s after its rotation: a grace use
    assert refresh(http, grant.refresh_token).json()["error"] == "invalid_grant"  # 35 s after its own
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected) == (1, 1)


def test_without_grace_every_rotated_token_is_reuse(sandbox: Sandbox, http: httpx.Client) -> None:
    """Grace 0 (the default) is strict reuse detection, even at the very instant of the rotation."""
    sandbox.add_client(client_id="strict", client_secret="strict-secret")
    grant = sandbox.issue_grant(client_id="strict")
    data = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
    auth = ("strict", "strict-secret")
    current = http.post("/oauth/token", data=data, auth=auth).json()["refresh_token"]

    reused = http.post("/oauth/token", data=data, auth=auth)
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert sandbox.describe(grant.grant_id)["revoked"] is True
    assert sandbox.current_refresh_token(grant.grant_id) == current
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected) == (0, 1)


def test_a_revoked_grant_stays_revoked_inside_the_window(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    rotate(http, grant.refresh_token)
    sandbox.revoke(grant.grant_id)
    assert refresh(http, grant.refresh_token).json()["error"] == "invalid_grant"
    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected) == (0, 0)  # not reuse: the token was still in grace


def test_a_configured_behaviour_answers_before_the_grace_check(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    rotate(http, grant.refresh_token)
    sandbox.script(grant.grant_id, [Behaviour.RATE_LIMIT])
    assert refresh(http, grant.refresh_token).status_code == 429
    rotate(http, grant.refresh_token)
    assert sandbox.stats().grace_uses == 1


def test_the_control_api_sets_the_grace_window(sandbox: Sandbox, sandbox_server: SandboxServer) -> None:
    base = sandbox_server.base_url
    created = httpx.post(
        base + "/_sandbox/clients",
        json={"client_id": "okta", "client_secret": "o", "rotation_grace_seconds": 30},
    )
    assert created.status_code == 200
    grant = sandbox.issue_grant(client_id="okta")
    with httpx.Client(base_url=base, auth=("okta", "o"), timeout=5) as okta:
        rotate(okta, grant.refresh_token)
        rotate(okta, grant.refresh_token)
    stats = httpx.get(base + "/_sandbox/stats/full").json()
    assert (stats["grace_uses"], stats["reuse_detected"], stats["refreshes_ok"]) == (1, 0, 2)


@pytest.mark.parametrize("grace", [-1.0, float("nan"), float("inf")])
def test_bad_grace_windows_are_refused(sandbox: Sandbox, grace: float) -> None:
    with pytest.raises(ValueError, match="rotation_grace_seconds"):
        sandbox.add_client(client_id="odd", client_secret="s", rotation_grace_seconds=grace)
    with pytest.raises(ValueError, match="unknown client_id"):
        sandbox.issue_grant(client_id="odd")
