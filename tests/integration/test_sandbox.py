"""The sandbox provider's token endpoint over real HTTP: rotation, reuse detection, client auth, behaviour."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import httpx
import pytest

from grantkeeper.sandbox import Behaviour, GrantTokens, Sandbox, SandboxServer, serve_sandbox
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET

JSON = "application/json"
BASIC = "Basic " + base64.b64encode(f"{SANDBOX_CLIENT_ID}:{SANDBOX_CLIENT_SECRET}".encode()).decode()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


@pytest.fixture
def grant(sandbox: Sandbox) -> GrantTokens:
    return sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID, access_token_lifetime=3600)


def refresh(
    http: httpx.Client, server: SandboxServer, token: str, auth: str | None = BASIC, **form: str
) -> httpx.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    data = {"grant_type": "refresh_token", "refresh_token": token, **form}
    return http.post(server.token_url, data=data, headers=headers)


def test_refresh_rotates_the_refresh_token(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    first = refresh(http, sandbox_server, grant.refresh_token)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"] != grant.access_token
    assert body["refresh_token"] not in (grant.refresh_token, "")
    assert sandbox.current_refresh_token(grant.grant_id) == body["refresh_token"]

    second = refresh(http, sandbox_server, body["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != body["refresh_token"]
    assert sandbox.stats().refreshes_ok == 2


def test_a_client_without_rotation_keeps_its_refresh_token(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    sandbox.add_client(client_id="fixed", client_secret="fixed-secret", rotate_refresh_tokens=False)
    grant = sandbox.issue_grant(client_id="fixed", access_token_lifetime=60, scope="read write")
    for _ in range(2):
        response = refresh(http, sandbox_server, grant.refresh_token, auth=None, **_post_auth("fixed"))
        assert response.status_code == 200
        body = response.json()
        assert "refresh_token" not in body
        assert body["expires_in"] == 60
        assert body["scope"] == "read write"
    assert sandbox.current_refresh_token(grant.grant_id) == grant.refresh_token


def _post_auth(client_id: str = SANDBOX_CLIENT_ID, secret: str | None = None) -> dict[str, str]:
    return {"client_id": client_id, "client_secret": secret or f"{client_id}-secret"}


def test_reusing_a_rotated_token_revokes_the_grant(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    new_token = refresh(http, sandbox_server, grant.refresh_token).json()["refresh_token"]

    reused = refresh(http, sandbox_server, grant.refresh_token)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert sandbox.stats().reuse_detected == 1
    # The whole grant is gone, the newest token included.
    assert refresh(http, sandbox_server, new_token).json()["error"] == "invalid_grant"
    stats = sandbox.stats()
    assert (stats.reuse_detected, stats.refreshes_ok, stats.by_behaviour) == (
        1,
        1,
        {"ok": 1, "invalid_grant": 2},
    )


def test_client_secret_post_is_accepted(
    sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    response = refresh(
        http, sandbox_server, grant.refresh_token, auth=None, **_post_auth(secret="app-secret")
    )
    assert response.status_code == 200


def test_basic_credentials_are_form_urlencoded_first(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    """RFC 6749 section 2.3.1: id and secret are form-urlencoded before base64, so ':' and '+' survive."""
    client_id, secret = "my app:1", "s3:cr t+%/é"
    sandbox.add_client(client_id=client_id, client_secret=secret)
    grant = sandbox.issue_grant(client_id=client_id)
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    auth = "Basic " + base64.b64encode(raw).decode()
    assert refresh(http, sandbox_server, grant.refresh_token, auth=auth).status_code == 200


@pytest.mark.parametrize(
    ("auth", "form"),
    [
        pytest.param("Basic " + base64.b64encode(b"app:wrong").decode(), {}, id="wrong-secret-basic"),
        pytest.param(None, _post_auth(secret="wrong"), id="wrong-secret-post"),
        pytest.param("Basic " + base64.b64encode(b"nobody:x").decode(), {}, id="unknown-client"),
        pytest.param(None, {}, id="no-credentials"),
        pytest.param("Basic !!!notbase64", {}, id="malformed-basic"),
        pytest.param("Bearer abc", {}, id="other-scheme"),
    ],
)
def test_bad_client_credentials_get_invalid_client(
    sandbox: Sandbox,
    sandbox_server: SandboxServer,
    http: httpx.Client,
    grant: GrantTokens,
    auth: str | None,
    form: dict[str, str],
) -> None:
    response = refresh(http, sandbox_server, grant.refresh_token, auth=auth, **form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="sandbox"'
    assert sandbox.stats().by_behaviour == {"invalid_client": 1}
    assert sandbox.current_refresh_token(grant.grant_id) == grant.refresh_token


def test_both_client_auth_methods_at_once_is_invalid_request(
    sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    response = refresh(http, sandbox_server, grant.refresh_token, **_post_auth(secret="app-secret"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        pytest.param({"grant_type": "password"}, "unsupported_grant_type", id="grant-type"),
        pytest.param({"grant_type": ""}, "unsupported_grant_type", id="empty-grant-type"),
        pytest.param({"refresh_token": ""}, "invalid_request", id="no-refresh-token"),
        pytest.param({"refresh_token": "sbx-rt-unknown"}, "invalid_grant", id="unknown-token"),
    ],
)
def test_malformed_refresh_requests(
    sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens, form: dict[str, str], error: str
) -> None:
    response = refresh(http, sandbox_server, grant.refresh_token, **form)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_requests_that_are_not_a_form_post(sandbox_server: SandboxServer, http: httpx.Client) -> None:
    assert http.get(sandbox_server.token_url).status_code == 405
    as_json = http.post(
        sandbox_server.token_url, json={"grant_type": "refresh_token"}, headers={"Authorization": BASIC}
    )
    assert as_json.status_code == 400
    assert "content-type" in as_json.json()["error_description"]
    repeated = http.post(
        sandbox_server.token_url,
        content=b"grant_type=refresh_token&refresh_token=a&refresh_token=b",
        headers={"Authorization": BASIC, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (repeated.status_code, repeated.json()["error"]) == (400, "invalid_request")
    assert http.get(sandbox_server.base_url + "/nowhere").status_code == 404


def test_a_token_of_another_client_is_invalid_grant(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    sandbox.add_client(client_id="other", client_secret="other-secret")
    foreign = sandbox.issue_grant(client_id="other")
    assert refresh(http, sandbox_server, foreign.refresh_token).json()["error"] == "invalid_grant"
    assert sandbox.stats().reuse_detected == 0


def test_a_revoked_grant_always_answers_invalid_grant(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    sandbox.revoke(grant.grant_id)
    for _ in range(2):
        response = refresh(http, sandbox_server, grant.refresh_token)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@dataclass(frozen=True)
class Expect:
    status: int
    content_type: str | None
    body: Any  # a dict (JSON), bytes (exact), or a predicate on the parsed JSON
    headers: dict[str, str] = field(default_factory=dict)


def _err(code: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: body["error"] == code


EXPECTED: dict[Behaviour, Expect] = {
    Behaviour.OK_NO_ROTATION: Expect(
        200, JSON, lambda b: b["access_token"] and b["expires_in"] == 3600 and "refresh_token" not in b
    ),
    Behaviour.OK_EXPIRES_IN_STRING: Expect(
        200, JSON, lambda b: b["access_token"] and b["expires_in"] == "3600"
    ),
    Behaviour.RATE_LIMIT: Expect(
        429, JSON, {"error": "rate_limited", "error_description": "slow down"}, {"retry-after": "7"}
    ),
    Behaviour.RATE_LIMIT_HTTP_DATE: Expect(429, None, b""),
    Behaviour.UNAVAILABLE: Expect(503, "text/html", None),
    Behaviour.SERVER_ERROR: Expect(500, JSON, {"error": "server_error"}),
    Behaviour.BAD_GATEWAY: Expect(502, "text/plain", None),
    Behaviour.REQUEST_TIMEOUT: Expect(408, None, b""),
    Behaviour.INVALID_GRANT: Expect(
        400, JSON, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    ),
    Behaviour.INVALID_SCOPE: Expect(400, JSON, _err("invalid_scope")),
    Behaviour.UNAUTHORIZED: Expect(401, None, b""),
    Behaviour.FORBIDDEN: Expect(403, "text/html", None),
    Behaviour.UNKNOWN_4XX: Expect(400, JSON, {"error": "weird_vendor_code"}),
    Behaviour.NOT_FOUND: Expect(404, "text/html", None),
    Behaviour.INVALID_CLIENT: Expect(
        401, JSON, {"error": "invalid_client"}, {"www-authenticate": 'Basic realm="sandbox"'}
    ),
    Behaviour.UNAUTHORIZED_CLIENT: Expect(400, JSON, _err("unauthorized_client")),
    Behaviour.UNSUPPORTED_GRANT_TYPE: Expect(400, JSON, _err("unsupported_grant_type")),
    Behaviour.INVALID_REQUEST: Expect(400, JSON, _err("invalid_request")),
    Behaviour.CONSENT_REQUIRED: Expect(400, JSON, {"error": "consent_required"}),
    Behaviour.INTERACTION_REQUIRED: Expect(400, JSON, {"error": "interaction_required"}),
    Behaviour.NOT_JSON: Expect(200, "text/html", b"<html>oops</html>"),
    Behaviour.NO_ACCESS_TOKEN: Expect(200, JSON, {"token_type": "Bearer", "expires_in": 3600}),
    Behaviour.SLACK_INVALID_REFRESH_TOKEN: Expect(200, JSON, {"ok": False, "error": "invalid_refresh_token"}),
    Behaviour.GITHUB_BAD_REFRESH_TOKEN: Expect(
        200,
        JSON,
        {
            "error": "bad_refresh_token",
            "error_description": "The refresh token passed is incorrect or expired.",
        },
    ),
}


def test_every_behaviour_has_an_expectation() -> None:
    assert set(EXPECTED) == set(Behaviour) - {Behaviour.OK, Behaviour.HANG, Behaviour.RESET}


@pytest.mark.parametrize("behaviour", list(EXPECTED), ids=str)
def test_behaviour_answers_as_specified_and_changes_nothing(
    sandbox: Sandbox,
    sandbox_server: SandboxServer,
    http: httpx.Client,
    grant: GrantTokens,
    behaviour: Behaviour,
) -> None:
    expect = EXPECTED[behaviour]
    sandbox.set_behaviour(grant.grant_id, behaviour)
    response = refresh(http, sandbox_server, grant.refresh_token)

    assert response.status_code == expect.status
    content_type = response.headers.get("content-type")
    assert (content_type is None) == (expect.content_type is None)
    assert content_type is None or content_type.startswith(expect.content_type or "")
    if isinstance(expect.body, bytes):
        assert response.content == expect.body
    elif isinstance(expect.body, dict):
        assert response.json() == expect.body
    elif expect.body is not None:
        assert expect.body(response.json())
    for name, value in expect.headers.items():
        assert response.headers[name] == value
    if behaviour is Behaviour.RATE_LIMIT_HTTP_DATE:
        ahead = parsedate_to_datetime(response.headers["retry-after"]).timestamp() - time.time()
        assert 100 < ahead < 140

    stats = sandbox.stats()
    assert stats.by_behaviour == {behaviour.value: 1}
    assert stats.by_grant == {grant.grant_id: 1}
    # Non-OK answers never rotate or revoke: back to normal, the original token still works.
    assert sandbox.current_refresh_token(grant.grant_id) == grant.refresh_token
    sandbox.set_behaviour(grant.grant_id, None)
    assert refresh(http, sandbox_server, grant.refresh_token).status_code == 200


def test_a_configured_behaviour_answers_before_the_token_is_checked(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    new_token = refresh(http, sandbox_server, grant.refresh_token).json()["refresh_token"]
    sandbox.set_behaviour(grant.grant_id, Behaviour.RATE_LIMIT)
    # An old token still identifies the grant; the rate limiter answers first, so no reuse is detected.
    assert refresh(http, sandbox_server, grant.refresh_token).status_code == 429
    assert sandbox.stats().reuse_detected == 0
    sandbox.set_behaviour(grant.grant_id, Behaviour.OK)
    assert refresh(http, sandbox_server, new_token).status_code == 200


def test_scripts_are_consumed_in_order_then_the_default_returns(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    sandbox.script(grant.grant_id, [Behaviour.RATE_LIMIT, Behaviour.RATE_LIMIT, Behaviour.OK])
    statuses = [refresh(http, sandbox_server, grant.refresh_token).status_code for _ in range(2)]
    rotated = refresh(http, sandbox_server, grant.refresh_token)
    assert [*statuses, rotated.status_code] == [429, 429, 200]
    token = rotated.json()["refresh_token"]

    sandbox.set_behaviour(grant.grant_id, Behaviour.SERVER_ERROR)
    sandbox.script(grant.grant_id, [Behaviour.UNAVAILABLE])
    sandbox.script(grant.grant_id, [Behaviour.OK_NO_ROTATION])  # appended after the first
    assert [refresh(http, sandbox_server, token).status_code for _ in range(4)] == [503, 200, 500, 500]
    assert sandbox.stats().by_behaviour == {
        "rate_limit": 2,
        "ok": 1,
        "unavailable": 1,
        "ok_no_rotation": 1,
        "server_error": 2,
    }


def _fraction_run(seed: int, refreshes: int = 60) -> list[int]:
    sandbox = Sandbox(seed=seed)
    sandbox.add_client(client_id=SANDBOX_CLIENT_ID, client_secret=SANDBOX_CLIENT_SECRET)
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    sandbox.set_fractions({Behaviour.RATE_LIMIT: 0.3, Behaviour.INVALID_GRANT: 0.1})
    token, statuses = grant.refresh_token, []
    with serve_sandbox(sandbox) as server, httpx.Client() as http:
        for _ in range(refreshes):
            response = refresh(http, server, token)
            statuses.append(response.status_code)
            token = response.json().get("refresh_token", token)
    assert sandbox.stats().reuse_detected == 0
    return statuses


def test_fractions_are_reproducible_with_a_seed() -> None:
    first, again, other = _fraction_run(seed=7), _fraction_run(seed=7), _fraction_run(seed=8)
    assert first == again
    assert first != other
    assert {200, 400, 429} <= set(first)
    assert 5 <= first.count(429) <= 35


def test_fractions_apply_only_to_grants_without_behaviour(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    sandbox.set_fractions({Behaviour.SERVER_ERROR: 1.0})
    assert refresh(http, sandbox_server, grant.refresh_token).status_code == 500
    sandbox.set_behaviour(grant.grant_id, Behaviour.OK)
    token = refresh(http, sandbox_server, grant.refresh_token).json()["refresh_token"]
    sandbox.set_behaviour(grant.grant_id, None)
    assert refresh(http, sandbox_server, token).status_code == 500
    sandbox.set_fractions({})
    assert refresh(http, sandbox_server, token).status_code == 200


@pytest.mark.parametrize(
    "fractions", [{Behaviour.RATE_LIMIT: 1.5}, {Behaviour.RATE_LIMIT: 0.6, Behaviour.HANG: 0.6}]
)
def test_bad_fractions_are_refused(sandbox: Sandbox, fractions: dict[Behaviour, float]) -> None:
    with pytest.raises(ValueError, match="fraction"):
        sandbox.set_fractions(fractions)


def _http_impls() -> list[Any]:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return ["h11", pytest.param("httptools", marks=pytest.mark.skip(reason="httptools not installed"))]
    return ["h11", "httptools"]


@pytest.fixture(params=_http_impls())
def served_by(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[SandboxServer]:
    """The sandbox under each of uvicorn's HTTP implementations, for the tricks that reach below ASGI."""
    with serve_sandbox(sandbox, http=request.param) as server:
        yield server


def _raw_request(token: str) -> bytes:
    body = f"grant_type=refresh_token&refresh_token={token}".encode()
    head = (
        f"POST /oauth/token HTTP/1.1\r\nHost: sandbox\r\nAuthorization: {BASIC}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_reset_sends_a_tcp_rst_and_no_http_response(
    sandbox: Sandbox, served_by: SandboxServer, grant: GrantTokens
) -> None:
    sandbox.set_behaviour(grant.grant_id, Behaviour.RESET)
    with socket.create_connection((served_by.host, served_by.port), timeout=5) as sock:
        sock.sendall(_raw_request(grant.refresh_token))
        with pytest.raises(ConnectionResetError):
            sock.recv(65536)  # RST, not FIN (which would read b"") and not an HTTP 500
    with httpx.Client() as http, pytest.raises(httpx.TransportError):
        refresh(http, served_by, grant.refresh_token)
    # The server keeps serving after a reset.
    sandbox.set_behaviour(grant.grant_id, None)
    with httpx.Client() as http:
        assert refresh(http, served_by, grant.refresh_token).status_code == 200
    assert sandbox.stats().by_behaviour == {"reset": 2, "ok": 1}


async def test_reset_and_hang_as_aiohttp_sees_them(
    sandbox: Sandbox, served_by: SandboxServer, grant: GrantTokens
) -> None:
    """grantkeeper's provider client is aiohttp: a reset is a connection error, a hang a timeout."""
    data = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token}
    headers = {"Authorization": BASIC}

    async def post(session: aiohttp.ClientSession, seconds: float = 5) -> bytes:
        client_timeout = aiohttp.ClientTimeout(total=seconds)
        async with session.post(served_by.token_url, data=data, headers=headers, timeout=client_timeout) as r:
            return await r.read()

    async with aiohttp.ClientSession() as session:
        sandbox.set_behaviour(grant.grant_id, Behaviour.RESET)
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session)
        sandbox.set_behaviour(grant.grant_id, Behaviour.HANG)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(session, seconds=0.5)
        assert 0.5 <= time.monotonic() - started < 2


def test_hang_outlasts_a_client_timeout(
    sandbox: Sandbox, sandbox_server: SandboxServer, grant: GrantTokens
) -> None:
    sandbox.set_behaviour(grant.grant_id, Behaviour.HANG)
    started = time.monotonic()
    with httpx.Client(timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
        refresh(http, sandbox_server, grant.refresh_token)
    assert time.monotonic() - started >= 0.5


def test_hang_gives_up_with_504_after_hang_seconds(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.hang_seconds = 0.2
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID, behaviour=Behaviour.HANG)
    with serve_sandbox(sandbox) as server:
        assert refresh(http, server, grant.refresh_token).status_code == 504


def test_stopping_the_server_ends_a_pending_hang(sandbox: Sandbox, grant: GrantTokens) -> None:
    sandbox.set_behaviour(grant.grant_id, Behaviour.HANG)
    statuses: list[int] = []
    server = serve_sandbox(sandbox)
    running = server.__enter__()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            statuses.append(refresh(http, running, grant.refresh_token).status_code)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while sandbox.stats().requests == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.monotonic()
    server.__exit__(None, None, None)
    thread.join(5)
    assert time.monotonic() - started < 1
    assert statuses == [504]


def test_concurrent_refreshes_while_the_test_thread_reconfigures(
    sandbox: Sandbox, sandbox_server: SandboxServer
) -> None:
    grants = sandbox.issue_grants(client_id=SANDBOX_CLIENT_ID, count=8, access_token_lifetime=60)
    stop = threading.Event()

    def chain(grant: GrantTokens) -> tuple[int, int]:
        token, ok, other = grant.refresh_token, 0, 0
        with httpx.Client(timeout=5) as http:
            for _ in range(40):
                response = refresh(http, sandbox_server, token)
                if response.status_code == 200:
                    ok += 1
                    token = response.json().get("refresh_token", token)
                else:
                    other += 1
        return ok, other

    def meddle() -> None:
        while not stop.is_set():
            sandbox.set_fractions({Behaviour.RATE_LIMIT: 0.2})
            sandbox.issue_grants(client_id=SANDBOX_CLIENT_ID, count=10)
            sandbox.stats()
            sandbox.set_fractions({})
            time.sleep(0.001)

    meddler = threading.Thread(target=meddle)
    meddler.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(chain, grants))
    stop.set()
    meddler.join()
    stats = sandbox.stats()
    assert stats.requests == 8 * 40 == sum(stats.by_behaviour.values())
    assert stats.refreshes_ok == sum(ok for ok, _ in results)
    assert stats.reuse_detected == 0
    assert stats.by_grant == {g.grant_id: 40 for g in grants}


def test_stats_count_and_reset(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client, grant: GrantTokens
) -> None:
    other = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    sandbox.set_behaviour(other.grant_id, Behaviour.CONSENT_REQUIRED)
    refresh(http, sandbox_server, grant.refresh_token)
    refresh(http, sandbox_server, other.refresh_token)
    refresh(http, sandbox_server, "sbx-rt-unknown")
    refresh(http, sandbox_server, grant.refresh_token, auth="Basic " + base64.b64encode(b"app:no").decode())
    stats = sandbox.stats()
    assert stats.requests == 4
    assert stats.refreshes_ok == 1
    assert stats.by_behaviour == {"ok": 1, "consent_required": 1, "invalid_grant": 1, "invalid_client": 1}
    assert stats.by_grant == {grant.grant_id: 1, other.grant_id: 1}
    sandbox.reset_stats()
    assert sandbox.stats() == type(stats)()


def test_tokens_stay_out_of_reprs(grant: GrantTokens) -> None:
    assert grant.refresh_token not in repr(grant)
    assert grant.access_token not in repr(grant)
