"""The sandbox's token introspection endpoint (RFC 7662): is a token active, asked without using it.

A worker that died after sending a refresh asks whether its stored refresh token still works before retrying
with it; these tests pin that the answer matches what the token endpoint would do, and that asking changes
nothing. Real HTTP over loopback; time is an injected clock the tests move.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from grantkeeper.sandbox import Behaviour, Sandbox, SandboxServer
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, ManualClock

GRACE = 30.0
WALL_START = 1_700_000_000.0
AUTH = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)  # strict: rotates, no grace window
GRACE_AUTH = ("okta", "okta-secret")  # rotates with a GRACE window
OTHER_AUTH = ("other", "other-secret")
INACTIVE = {"active": False}
FORM = {"content-type": "application/x-www-form-urlencoded"}  # httpx sends none for an empty form


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(WALL_START)


@pytest.fixture
def sandbox(clock: ManualClock, wall: ManualClock) -> Sandbox:
    """Overrides the shared fixture: the same strict client ``app``, plus a grace client and another one."""
    sandbox = Sandbox(seed=0, hang_seconds=5, clock=clock, wall_clock=wall)
    sandbox.add_client(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    sandbox.add_client(*GRACE_AUTH, rotation_grace_seconds=GRACE)
    sandbox.add_client(*OTHER_AUTH)
    return sandbox


@pytest.fixture
def http(sandbox_server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_server.base_url, timeout=5) as client:
        yield client


def introspect(
    http: httpx.Client, token: str, auth: tuple[str, str] = AUTH, hint: str | None = None
) -> httpx.Response:
    """Introspect with client_secret_basic, expecting a 200 JSON answer."""
    data = {"token": token} if hint is None else {"token": token, "token_type_hint": hint}
    response = http.post("/oauth/introspect", data=data, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    return response


def claims(
    http: httpx.Client, token: str, auth: tuple[str, str] = AUTH, hint: str | None = None
) -> dict[str, Any]:
    """The JSON object an introspection answers."""
    body = introspect(http, token, auth, hint).json()
    assert isinstance(body, dict)
    return body


def refresh(http: httpx.Client, token: str, auth: tuple[str, str] = AUTH) -> httpx.Response:
    return http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=auth)


def rotate(http: httpx.Client, token: str, auth: tuple[str, str] = AUTH) -> str:
    """Refresh with ``token``, expecting success; the new refresh token."""
    response = refresh(http, token, auth)
    assert response.status_code == 200, response.text
    new_token = response.json()["refresh_token"]
    assert isinstance(new_token, str)
    return new_token


def refresh_active(client_id: str) -> dict[str, object]:
    return {"active": True, "token_type": "refresh_token", "client_id": client_id}


# --- refresh tokens --------------------------------------------------------------------------------------


def test_the_current_refresh_token_is_active_with_basic_authentication(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    assert sandbox_server.introspection_url == sandbox_server.base_url + "/oauth/introspect"
    answer = httpx.post(sandbox_server.introspection_url, data={"token": grant.refresh_token}, auth=AUTH)
    assert answer.status_code == 200
    assert answer.json() == refresh_active(SANDBOX_CLIENT_ID)
    assert grant.refresh_token not in answer.text


def test_the_current_refresh_token_is_active_with_client_secret_post(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    form = {"token": grant.refresh_token, "client_id": AUTH[0], "client_secret": AUTH[1]}
    answer = http.post("/oauth/introspect", data=form)
    assert answer.status_code == 200
    assert answer.json() == refresh_active(SANDBOX_CLIENT_ID)


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token", "id_token", ""])
def test_the_type_hint_is_only_a_hint(sandbox: Sandbox, http: httpx.Client, hint: str | None) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    assert claims(http, grant.refresh_token, hint=hint) == refresh_active(SANDBOX_CLIENT_ID)
    assert claims(http, grant.access_token, hint=hint)["active"] is True


def test_a_rotated_token_is_inactive_without_a_grace_window(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    current = rotate(http, grant.refresh_token)

    assert claims(http, grant.refresh_token) == INACTIVE  # sending it now would be reuse
    assert claims(http, current) == refresh_active(SANDBOX_CLIENT_ID)
    assert sandbox.describe(grant.grant_id)["revoked"] is False  # asking about it is not reuse
    assert rotate(http, current)
    assert (sandbox.stats().reuse_detected, sandbox.stats().grace_uses) == (0, 0)


def test_a_rotated_token_is_active_exactly_while_its_grace_window_lasts(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    grant = sandbox.issue_grant(client_id=GRACE_AUTH[0])
    current = rotate(http, grant.refresh_token, GRACE_AUTH)

    clock.advance(GRACE - 0.1)
    assert claims(http, grant.refresh_token, GRACE_AUTH) == refresh_active(GRACE_AUTH[0])
    assert claims(http, current, GRACE_AUTH) == refresh_active(GRACE_AUTH[0])
    clock.advance(0.1)  # the token endpoint's window is over once GRACE seconds have passed
    assert claims(http, grant.refresh_token, GRACE_AUTH) == INACTIVE
    assert claims(http, current, GRACE_AUTH) == refresh_active(GRACE_AUTH[0])

    stats = sandbox.stats()
    assert (stats.grace_uses, stats.reuse_detected, stats.requests) == (0, 0, 1)
    assert sandbox.current_refresh_token(grant.grant_id) == current
    assert sandbox.describe(grant.grant_id)["revoked"] is False


def test_introspection_agrees_with_the_token_endpoint_inside_the_window(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    """Active means the token endpoint takes it; after a grace use, the lost token is inactive (reuse)."""
    grant = sandbox.issue_grant(client_id=GRACE_AUTH[0])
    lost = rotate(http, grant.refresh_token, GRACE_AUTH)
    clock.advance(10)
    assert claims(http, grant.refresh_token, GRACE_AUTH)["active"] is True
    newest = rotate(http, grant.refresh_token, GRACE_AUTH)  # the grace use introspection promised

    assert claims(http, lost, GRACE_AUTH) == INACTIVE
    assert claims(http, newest, GRACE_AUTH) == refresh_active(GRACE_AUTH[0])
    assert claims(http, grant.refresh_token, GRACE_AUTH)["active"] is True
    assert sandbox.stats().grace_uses == 1


def test_a_revoked_grant_has_no_active_tokens(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    grant = sandbox.issue_grant(client_id=GRACE_AUTH[0])
    current = rotate(http, grant.refresh_token, GRACE_AUTH)
    access = sandbox.describe(grant.grant_id)["access_token"]
    sandbox.revoke(grant.grant_id)

    for token in (grant.refresh_token, current, access):  # the rotated one is still inside its window
        assert claims(http, token, GRACE_AUTH) == INACTIVE


def test_a_grant_revoked_over_rfc_7009_has_no_active_tokens(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    assert http.post("/oauth/revoke", data={"token": grant.access_token}, auth=AUTH).status_code == 200
    assert claims(http, grant.refresh_token) == INACTIVE
    assert claims(http, grant.access_token) == INACTIVE


@pytest.mark.parametrize("token", ["sbx-rt-unknown", "sbx-at-unknown", "x" * 5000])
def test_an_unknown_token_is_inactive(sandbox: Sandbox, http: httpx.Client, token: str) -> None:
    sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    assert introspect(http, token).json() == INACTIVE


def test_another_clients_tokens_are_inactive(sandbox: Sandbox, http: httpx.Client) -> None:
    """RFC 7662 section 4: a client learns nothing about tokens issued to another client."""
    theirs = sandbox.issue_grant(client_id=OTHER_AUTH[0])
    for token in (theirs.refresh_token, theirs.access_token):
        assert introspect(http, token).json() == INACTIVE
        assert claims(http, token, OTHER_AUTH)["active"] is True
    assert rotate(http, theirs.refresh_token, OTHER_AUTH)  # nothing was held against the owner


def test_a_client_without_rotation_keeps_its_token_active(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.add_client("github", "gh-secret", rotate_refresh_tokens=False)
    grant = sandbox.issue_grant(client_id="github")
    assert refresh(http, grant.refresh_token, ("github", "gh-secret")).status_code == 200
    assert claims(http, grant.refresh_token, ("github", "gh-secret")) == refresh_active("github")


# --- access tokens ---------------------------------------------------------------------------------------


def test_the_current_access_token_is_active_until_it_expires(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock, wall: ManualClock
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID, access_token_lifetime=600)
    clock.advance(100)
    wall.advance(100)
    expected = {
        "active": True,
        "token_type": "access_token",
        "client_id": SANDBOX_CLIENT_ID,
        "exp": int(WALL_START + 600),
    }
    assert claims(http, grant.access_token, hint="access_token") == expected
    clock.advance(500)
    assert claims(http, grant.access_token) == INACTIVE


def test_a_replaced_access_token_is_inactive(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    new_access = refresh(http, grant.refresh_token).json()["access_token"]
    assert claims(http, grant.access_token) == INACTIVE
    assert claims(http, new_access)["token_type"] == "access_token"


# --- never changes anything, but is counted --------------------------------------------------------------


def test_introspection_changes_no_grant_and_no_token_endpoint_counter(
    sandbox: Sandbox, http: httpx.Client, clock: ManualClock
) -> None:
    strict = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    graced = sandbox.issue_grant(client_id=GRACE_AUTH[0])
    strict_current = rotate(http, strict.refresh_token)
    graced_current = rotate(http, graced.refresh_token, GRACE_AUTH)
    sandbox.script(strict.grant_id, [Behaviour.RATE_LIMIT])
    before = sandbox.stats()
    described = {g.grant_id: sandbox.describe(g.grant_id) for g in (strict, graced)}

    asked = [
        (strict.refresh_token, AUTH),  # rotated, no grace: reuse if it were sent
        (strict_current, AUTH),
        (graced.refresh_token, GRACE_AUTH),  # rotated, in its window: a grace use if it were sent
        (graced_current, GRACE_AUTH),
        (strict_current, OTHER_AUTH),
        ("sbx-rt-unknown", AUTH),
    ]
    for _ in range(3):
        for token, auth in asked:
            introspect(http, token, auth)

    after = sandbox.stats()
    assert after.introspections == before.introspections + 3 * len(asked)
    for field in ("requests", "refreshes_ok", "reuse_detected", "grace_uses", "by_behaviour", "by_grant"):
        assert getattr(after, field) == getattr(before, field), field
    assert after.requests_by_second == before.requests_by_second
    assert after.max_in_flight == before.max_in_flight
    assert {g.grant_id: sandbox.describe(g.grant_id) for g in (strict, graced)} == described

    # The tokens introspected still work as before: no use was consumed, the script was not either.
    assert refresh(http, strict_current).status_code == 429
    assert rotate(http, strict_current)
    assert rotate(http, graced.refresh_token, GRACE_AUTH)  # the grace use itself
    stats = sandbox.stats()
    assert (stats.requests, stats.grace_uses, stats.reuse_detected) == (5, 1, 0)


def test_introspections_are_counted_in_every_stats_view(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    introspect(http, grant.refresh_token)
    introspect(http, "sbx-rt-unknown")
    assert http.post("/oauth/introspect", data={"token": "t"}, auth=("app", "wrong")).status_code == 401
    assert http.post("/oauth/introspect", content=b"", headers=FORM, auth=AUTH).status_code == 400

    assert sandbox.stats().introspections == 4
    full = http.get("/_sandbox/stats/full").json()
    assert (full["introspections"], full["requests"], full["by_behaviour"]) == (4, 0, {})
    # The original stats document keeps exactly its original five fields.
    assert "introspections" not in http.get("/_sandbox/stats").json()

    assert http.post("/_sandbox/stats/reset").status_code == 200
    assert sandbox.stats().introspections == 0


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth", [("app", "wrong"), ("nobody", "app-secret"), ("okta", SANDBOX_CLIENT_SECRET)], ids=str
)
def test_failed_client_authentication_is_401(
    sandbox: Sandbox, http: httpx.Client, auth: tuple[str, str]
) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    for answer in (
        http.post("/oauth/introspect", data={"token": grant.refresh_token}, auth=auth),
        http.post(
            "/oauth/introspect",
            data={"token": grant.refresh_token, "client_id": auth[0], "client_secret": auth[1]},
        ),
    ):
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert answer.headers["www-authenticate"].startswith("Basic")
        assert grant.refresh_token not in answer.text


def test_client_authentication_is_required(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    answer = http.post("/oauth/introspect", data={"token": grant.refresh_token})
    assert (answer.status_code, answer.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("form", [b"", b"token=", b"token_type_hint=refresh_token"])
def test_a_missing_token_is_400(http: httpx.Client, form: bytes) -> None:
    answer = http.post("/oauth/introspect", content=form, headers=FORM, auth=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    assert answer.json()["error_description"] == "token is required"


def test_a_missing_token_from_an_unknown_client_is_401(http: httpx.Client) -> None:
    """As at the token endpoint: the client authenticates before its parameters are looked at."""
    answer = http.post("/oauth/introspect", content=b"", headers=FORM, auth=("app", "wrong"))
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b'{"token": "t"}', "application/json", "content-type"),
        (b"token=a&token=b", "application/x-www-form-urlencoded", "more than once"),
        (b"token=%ff", "application/x-www-form-urlencoded", "UTF-8"),
    ],
)
def test_a_malformed_body_is_400_as_at_the_token_endpoint(
    http: httpx.Client, content: bytes, content_type: str, fragment: str
) -> None:
    headers = {"content-type": content_type}
    answer = http.post("/oauth/introspect", content=content, headers=headers, auth=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")
    assert fragment in answer.json()["error_description"]
    token_answer = http.post("/oauth/token", content=content, headers=headers, auth=AUTH)
    assert (token_answer.status_code, token_answer.json()) == (answer.status_code, answer.json())


def test_both_authentication_methods_at_once_are_400(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    form = {"token": grant.refresh_token, "client_secret": SANDBOX_CLIENT_SECRET}
    answer = http.post("/oauth/introspect", data=form, auth=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_request")


def test_wrong_method_and_oversized_body(sandbox: Sandbox, http: httpx.Client) -> None:
    answer = http.get("/oauth/introspect")
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    too_large = http.post("/oauth/introspect", data={"token": "x" * 70_000}, auth=AUTH)
    assert (too_large.status_code, too_large.json()["error"]) == (413, "invalid_request")
    assert sandbox.stats().introspections == 2


def test_an_outage_answers_introspection_too(sandbox: Sandbox, http: httpx.Client) -> None:
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    assert http.put("/_sandbox/outage", json={"behaviour": "unavailable"}).status_code == 200
    answers = [
        http.post("/oauth/introspect", data={"token": grant.refresh_token}, auth=AUTH),
        http.post("/oauth/introspect", data={"token": grant.refresh_token}, auth=("app", "wrong")),
        http.post("/oauth/introspect", content=b"", headers=FORM, auth=AUTH),
        http.get("/oauth/introspect"),
    ]
    assert [a.status_code for a in answers] == [503] * 4
    assert all("503 Service Unavailable" in a.text for a in answers)
    stats = sandbox.stats()
    assert (stats.introspections, stats.requests, stats.by_behaviour) == (4, 0, {})

    sandbox.set_outage(Behaviour.RATE_LIMIT)
    limited = http.post("/oauth/introspect", data={"token": grant.refresh_token}, auth=AUTH)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")

    assert http.delete("/_sandbox/outage").status_code == 200
    assert claims(http, grant.refresh_token) == refresh_active(SANDBOX_CLIENT_ID)
    assert rotate(http, grant.refresh_token)  # nothing changed during the outage


def test_latency_does_not_delay_introspection(sandbox: Sandbox, http: httpx.Client) -> None:
    """As revocation, introspection answers at once; latency is the token endpoint's."""
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    sandbox.set_latency(1.0)
    started = time.monotonic()
    assert claims(http, grant.refresh_token)["active"] is True
    assert time.monotonic() - started < 1.0
