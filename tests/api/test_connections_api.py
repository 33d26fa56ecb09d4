"""``/v1/connections`` over real HTTP: create, import, list and page, get, delete (with revocation at the
provider), and the on-demand token with its refresh, reauthorization and backoff answers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from grantkeeper.sandbox.behaviour import Behaviour

CONNECTION_FIELDS = {
    "id",
    "provider",
    "user_id",
    "email",
    "account_id",
    "status",
    "consecutive_failures",
    "consecutive_transient_failures",
    "expires_at",
    "next_attempt_at",
    "last_refreshed_at",
    "last_failure_at",
    "last_error",
    "disconnect_reason",
    "created_at",
    "updated_at",
}
TIME_FIELDS = (
    "expires_at",
    "next_attempt_at",
    "last_refreshed_at",
    "last_failure_at",
    "created_at",
    "updated_at",
)


def aware(value: str) -> datetime:
    """An ISO 8601 time with an offset (DESIGN section 4: times are ISO 8601 with offset on output)."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value!r} has no UTC offset"
    return parsed


def check_times(connection: dict) -> None:
    for field in TIME_FIELDS:
        if connection[field] is not None:
            aware(connection[field])


def all_ids(client: httpx.Client, **params) -> list[str]:
    response = client.get("/v1/connections", params=params | {"limit": 1000})
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def refresh_requests(sandbox, grant) -> int:
    return sandbox.stats().by_grant.get(grant.grant_id, 0)


# --- POST /v1/connections -----------------------------------------------------------------------------


def test_create_answers_201_with_the_design_fields_and_no_token(acme, sandbox, sandbox_provider):
    grant = sandbox.issue_grant(client_id="app")
    response = acme.post(
        "/v1/connections",
        json={
            "provider": "sandbox",
            "user_id": "user-1",
            "refresh_token": grant.refresh_token,
            "access_token": grant.access_token,
            "expires_at": "2031-01-02T03:04:05+00:00",
            "email": "user-1@example.test",
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == CONNECTION_FIELDS
    assert body["id"]
    assert body["provider"] == "sandbox"
    assert body["user_id"] == "user-1"
    assert body["email"] == "user-1@example.test"
    assert body["status"] == "connected"
    assert body["consecutive_failures"] == body["consecutive_transient_failures"] == 0
    assert body["disconnect_reason"] is None
    assert body["last_error"] is None
    assert aware(body["expires_at"]) == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    check_times(body)
    assert "sbx-rt-" not in response.text
    assert "sbx-at-" not in response.text
    got = acme.get(f"/v1/connections/{body['id']}")
    assert got.status_code == 200
    assert got.json() == body

    # expires_at: ISO 8601 (with offset, Z, or naive meaning UTC) or Unix seconds (number or digits)
    expected = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    for value in (
        "2030-06-01T12:00:00Z",
        "2030-06-01T14:00:00+02:00",
        "2030-06-01T12:00:00",
        int(expected.timestamp()),
        str(int(expected.timestamp())),
        expected.timestamp(),
    ):
        grant = sandbox.issue_grant(client_id="app")
        response = acme.post(
            "/v1/connections",
            json={
                "provider": "sandbox",
                "user_id": f"user-{value}",
                "refresh_token": grant.refresh_token,
                "access_token": grant.access_token,
                "expires_at": value,
            },
        )
        assert response.status_code == 201, (value, response.text)
        assert aware(response.json()["expires_at"]) == expected, value


def test_create_rejects_bad_input_and_creates_nothing(api, sandbox_provider, problem):
    base = {"provider": "sandbox", "user_id": "u1", "refresh_token": "sbx-rt-must-not-echo"}
    # no keep-alive: should one of these be a 500, the server drops the connection under the next request
    with api.client("acme", limits=httpx.Limits(max_keepalive_connections=0)) as acme:
        unknown_provider = acme.post("/v1/connections", json=base | {"provider": "nope"})
        body = problem(unknown_provider, 422, "unknown-provider")
        assert [error["message"] for error in body["errors"]] == ["unknown provider 'nope'"]

        cases = {
            "unknown field": (base | {"refresh_tokn": "x"}, "body.refresh_tokn"),
            "missing refresh_token": ({"provider": "sandbox", "user_id": "u1"}, "body.refresh_token"),
            "empty user_id": (base | {"user_id": ""}, "body.user_id"),
            "refresh_token not a string": (
                base | {"refresh_token": ["sbx-rt-must-not-echo"]},
                "body.refresh_token",
            ),
            "bad provider name": (base | {"provider": "no spaces"}, "body.provider"),
        }
        for expires_at in (
            "tomorrow",
            "2025-13-45T00:00:00Z",
            True,
            [2030],
            {"at": 1},
            10**20,
            # times at the ends of the calendar, where the scheduling arithmetic or UTC conversion overflows
            "0001-01-01T00:00:00Z",
            -62135596800,  # the same instant in Unix seconds
            "9999-12-31T23:59:59-05:00",  # after 9999-12-31 in UTC
        ):
            payload = base | {"access_token": "sbx-at-must-not-echo", "expires_at": expires_at}
            cases[f"expires_at={expires_at!r}"] = (payload, "body.expires_at")
        answers = {name: acme.post("/v1/connections", json=payload) for name, (payload, _) in cases.items()}
        assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(cases, 422)
        for name, response in answers.items():
            body = problem(response, 422, "validation-error")
            assert [error["location"] for error in body["errors"]] == [cases[name][1]], name
            assert "sbx-rt-must-not-echo" not in response.text, name
            assert "sbx-at-must-not-echo" not in response.text, name

        not_json = acme.post(
            "/v1/connections", content=b"{not json", headers={"content-type": "application/json"}
        )
        problem(not_json, 422, "validation-error")
        assert all_ids(acme) == []


# --- POST /v1/connections/import ------------------------------------------------------------------------


def test_import_creates_every_row_or_none(acme, sandbox, add_provider, sandbox_provider, problem):
    add_provider(acme, "other")
    good = {"provider": "sandbox", "user_id": "u1", "refresh_token": "sbx-rt-good"}
    rows = [good, good | {"provider": "missing"}, good | {"provider": "other"}, good | {"provider": "gone"}]
    response = acme.post("/v1/connections/import", json={"connections": rows})
    body = problem(response, 422, "unknown-provider")
    assert [error["location"] for error in body["errors"]] == [
        "body.connections.1.provider",
        "body.connections.3.provider",
    ]
    assert "missing" in body["errors"][0]["message"]
    assert "sbx-rt-good" not in response.text

    bad_field = [good, good | {"expires_at": "never"}]
    body = problem(
        acme.post("/v1/connections/import", json={"connections": bad_field}), 422, "validation-error"
    )
    assert [error["location"] for error in body["errors"]] == ["body.connections.1.expires_at"]
    problem(acme.post("/v1/connections/import", json={"connections": []}), 422, "validation-error")
    problem(acme.post("/v1/connections/import", json=[good]), 422, "validation-error")
    assert all_ids(acme) == []
    assert acme.get("/v1/workflows").json() == []

    grants = sandbox.issue_grants("app", 3)
    rows = [
        {"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token, "workflows": ["sync"]}
        for i, g in enumerate(grants)
    ]
    response = acme.post("/v1/connections/import", json={"connections": rows})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["imported"] == 3
    assert len(set(body["ids"])) == 3
    assert "sbx-rt-" not in response.text
    assert sorted(all_ids(acme)) == sorted(body["ids"])
    [workflow] = acme.get("/v1/workflows").json()
    assert workflow["name"] == "sync"
    assert sorted(workflow["connection_ids"]) == sorted(body["ids"])


# --- GET /v1/connections ------------------------------------------------------------------------------


def test_list_filters_by_status_provider_and_user_id(acme, add_provider, sandbox_provider, connect):
    add_provider(acme, "other")
    a = connect(acme, "alice")
    b = connect(acme, "bob")
    c = connect(acme, "alice", provider="other")
    broken = connect(acme, "carol", behaviour=Behaviour.CONSENT_REQUIRED)
    assert acme.get(f"/v1/connections/{broken.id}/token").status_code == 409

    listing = acme.get("/v1/connections")
    assert listing.status_code == 200
    page = listing.json()
    assert set(page) == {"items", "next_cursor"}
    assert page["next_cursor"] is None
    assert {item["id"] for item in page["items"]} == {a.id, b.id, c.id, broken.id}
    for item in page["items"]:
        assert set(item) == CONNECTION_FIELDS
        check_times(item)

    assert set(all_ids(acme, status="connected")) == {a.id, b.id, c.id}
    assert all_ids(acme, status="needs_reauthorization") == [broken.id]
    assert all_ids(acme, status="revoked") == []
    assert set(all_ids(acme, provider="sandbox")) == {a.id, b.id, broken.id}
    assert all_ids(acme, provider="other") == [c.id]
    assert all_ids(acme, provider="unknown") == []
    assert set(all_ids(acme, user_id="alice")) == {a.id, c.id}
    assert all_ids(acme, user_id="alice", provider="other") == [c.id]
    assert all_ids(acme, user_id="carol", status="connected") == []
    [carol] = acme.get("/v1/connections", params={"user_id": "carol"}).json()["items"]
    assert carol["status"] == "needs_reauthorization"
    assert carol["disconnect_reason"] == "reauth_required"
    assert carol["consecutive_failures"] == 1
    assert carol["last_error"]["code"] == "consent_required"


def test_pagination_walks_every_item_exactly_once(acme, sandbox, add_provider, sandbox_provider):
    add_provider(acme, "other")
    rows = [
        {
            "provider": "sandbox" if i % 3 else "other",
            "user_id": f"user-{i:02}",
            "refresh_token": f"sbx-rt-{i}",
        }
        for i in range(25)
    ]
    created = acme.post("/v1/connections/import", json={"connections": rows})
    assert created.status_code == 201, created.text
    ids = created.json()["ids"]

    def walk(**params) -> tuple[list[str], list[int]]:
        seen: list[str] = []
        sizes: list[int] = []
        cursor = None
        for _ in range(10):
            query = params | {"limit": 7} | ({"cursor": cursor} if cursor else {})
            response = acme.get("/v1/connections", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            sizes.append(len(page["items"]))
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen, sizes
        raise AssertionError("pagination did not end")

    seen, sizes = walk()
    assert sizes == [7, 7, 7, 4]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == set(ids)
    assert seen == sorted(seen)  # a stable order: id order

    other, sizes = walk(provider="other")
    assert sizes == [7, 2]
    assert set(other) == {i for i, row in zip(ids, rows, strict=True) if row["provider"] == "other"}

    exact = acme.get("/v1/connections", params={"limit": 25}).json()
    assert len(exact["items"]) == 25
    assert exact["next_cursor"] is None


def test_list_rejects_bad_query_values_and_cursors(acme, connect, sandbox_provider, problem):
    connect(acme, "u1")
    for params in ({"status": "sleeping"}, {"limit": 0}, {"limit": 1001}, {"limit": "many"}):
        body = problem(acme.get("/v1/connections", params=params), 422, "validation-error")
        assert body["errors"][0]["location"] == f"query.{next(iter(params))}"
    problem(acme.get("/v1/connections", params={"cursor": "x" * 201}), 422, "validation-error")

    # not base64 at all; base64 of bytes that are not text; base64 of NUL bytes; only non-base64 characters
    cursors = ["not-a-cursor!", "zzzz", "AAAA", "%%%", "!!!!"]
    answers = {cursor: acme.get("/v1/connections", params={"cursor": cursor}) for cursor in cursors}
    assert {cursor: r.status_code for cursor, r in answers.items()} == dict.fromkeys(cursors, 422)
    for response in answers.values():
        problem(response, 422, "invalid-cursor")


# --- GET and DELETE /v1/connections/{id} --------------------------------------------------------------


def test_delete_revokes_the_grant_at_the_provider(
    acme, sandbox, sandbox_server, add_provider, connect, sandbox_provider, problem
):
    created = connect(acme, "u1", workflows=["sync"])
    token = acme.get(f"/v1/connections/{created.id}/token")  # rotates the refresh token first
    assert token.status_code == 200
    current_refresh_token = sandbox.current_refresh_token(created.grant.grant_id)

    deleted = acme.delete(f"/v1/connections/{created.id}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert sandbox.describe(created.grant.grant_id)["revoked"] is True
    # the provider now refuses the refresh token grantkeeper held
    refused = httpx.post(
        sandbox_server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": current_refresh_token},
        auth=("app", "app-secret"),
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"

    problem(acme.get(f"/v1/connections/{created.id}"), 404, "not-found")
    problem(acme.get(f"/v1/connections/{created.id}/token"), 404, "not-found")
    problem(acme.delete(f"/v1/connections/{created.id}"), 404, "not-found")
    problem(acme.get("/v1/connections/con_00000000000000000000"), 404, "not-found")
    problem(acme.delete("/v1/connections/nonsense"), 404, "not-found")
    assert all_ids(acme) == []
    [workflow] = acme.get("/v1/workflows").json()
    assert workflow["connection_ids"] == []

    # a provider without a revocation endpoint: the connection is forgotten, the grant left alone
    add_provider(acme, "plain", revocation=False)
    plain = connect(acme, "u2", provider="plain")
    assert acme.delete(f"/v1/connections/{plain.id}").status_code == 204
    assert sandbox.describe(plain.grant.grant_id)["revoked"] is False
    problem(acme.get(f"/v1/connections/{plain.id}"), 404, "not-found")


# --- GET /v1/connections/{id}/token -----------------------------------------------------------------


def test_a_fresh_token_is_returned_without_a_refresh(acme, sandbox, connect, sandbox_provider):
    created = connect(acme, "u1", with_access_token=True, expires_in=3600)
    response = acme.get(f"/v1/connections/{created.id}/token")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_at"}
    assert body["access_token"] == created.grant.access_token
    assert body["token_type"] == "Bearer"
    assert aware(body["expires_at"]) == aware(created.body["expires_at"])
    assert response.headers["cache-control"] == "no-store"
    assert sandbox.stats().requests == 0


def test_an_expired_token_is_refreshed_once(acme, sandbox, connect, sandbox_provider):
    created = connect(acme, "u1", with_access_token=True, expires_in=-60)
    first = acme.get(f"/v1/connections/{created.id}/token")
    assert first.status_code == 200, first.text
    token = first.json()
    assert token["access_token"].startswith("sbx-at-")
    assert token["access_token"] != created.grant.access_token
    assert aware(token["expires_at"]) > datetime.now(UTC) + timedelta(minutes=50)
    assert refresh_requests(sandbox, created.grant) == 1

    second = acme.get(f"/v1/connections/{created.id}/token")
    assert second.json() == token
    assert refresh_requests(sandbox, created.grant) == 1
    connection = acme.get(f"/v1/connections/{created.id}").json()
    assert connection["last_refreshed_at"] is not None
    assert aware(connection["expires_at"]) == aware(token["expires_at"])


def test_min_validity_longer_than_the_remaining_life_refreshes(acme, sandbox, connect, sandbox_provider):
    created = connect(acme, "u1", with_access_token=True, expires_in=600)
    url = f"/v1/connections/{created.id}/token"
    assert acme.get(url, params={"min_validity": 300}).json()["access_token"] == created.grant.access_token
    assert acme.get(url).json()["access_token"] == created.grant.access_token  # default 60 s
    assert refresh_requests(sandbox, created.grant) == 0

    refreshed = acme.get(url, params={"min_validity": 1200})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"] != created.grant.access_token
    assert refresh_requests(sandbox, created.grant) == 1


def test_token_errors_unknown_bad_min_validity_and_disconnected(
    acme, sandbox, connect, sandbox_provider, problem
):
    problem(acme.get("/v1/connections/con_00000000000000000000/token"), 404, "not-found")
    created = connect(acme, "u1")
    for value in (-1, 86_401, "soon"):
        body = problem(
            acme.get(f"/v1/connections/{created.id}/token", params={"min_validity": value}),
            422,
            "validation-error",
        )
        assert body["errors"][0]["location"] == "query.min_validity"
    assert sandbox.stats().requests == 0

    # the provider wants the user's consent again: disconnected at the first answer, then no more requests
    consent = connect(acme, "u2", behaviour=Behaviour.INTERACTION_REQUIRED)
    body = problem(acme.get(f"/v1/connections/{consent.id}/token"), 409, "needs-reauthorization")
    # a signed link, of the kind the emails carry: it opens the browser flow for this connection
    assert body["reconnect_url"].startswith(f"https://app.example.test/connect/{consent.id}?token=")
    problem(acme.get(f"/v1/connections/{consent.id}/token"), 409, "needs-reauthorization")
    assert refresh_requests(sandbox, consent.grant) == 1


def test_concurrent_token_requests_share_one_refresh(api, sandbox, connect, sandbox_provider):
    with api.client("acme") as client:
        created = connect(client, "u1")

    def fetch(_: int) -> str:
        with api.client("acme") as client:
            response = client.get(f"/v1/connections/{created.id}/token")
            assert response.status_code == 200, response.text
            return response.json()["access_token"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = set(pool.map(fetch, range(8)))
    assert len(tokens) == 1
    assert refresh_requests(sandbox, created.grant) == 1
    assert sandbox.stats().reuse_detected == 0


def test_invalid_grant_three_times_needs_reauthorization(
    api_factory, sandbox, add_provider, connect, problem
):
    api = api_factory(cycle_interval_seconds=1)  # an auth failure may be retried after 0.9 s
    with api.client("acme") as acme:
        add_provider(acme)
        created = connect(acme, "u1", behaviour=Behaviour.INVALID_GRANT)
        url = f"/v1/connections/{created.id}/token"
        answers = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = acme.get(url)
            answers.append(response.status_code)
            if response.json().get("type") != "urn:grantkeeper:problem:refresh-rejected":
                break
            body = problem(response, 409, "refresh-rejected")  # rejected, not yet disconnected
            assert body["reason"] == "invalid_grant"
            assert int(response.headers["retry-after"]) >= 1
            time.sleep(0.3)
        body = problem(response, 409, "needs-reauthorization")
        assert body["connection_id"] == created.id
        assert body["reconnect_url"].startswith(f"https://app.example.test/connect/{created.id}?token=")
        assert "sbx-" not in response.text
        assert refresh_requests(sandbox, created.grant) == 3
        assert answers[0] == 409

        again = acme.get(url)
        problem(again, 409, "needs-reauthorization")
        assert refresh_requests(sandbox, created.grant) == 3  # no provider request for a disconnected one
        connection = acme.get(f"/v1/connections/{created.id}").json()
        assert connection["status"] == "needs_reauthorization"
        assert connection["consecutive_failures"] == 3
        assert connection["disconnect_reason"] == "auth_failures"
        assert connection["last_error"]["code"] == "invalid_grant"


def test_a_transient_failure_is_503_with_retry_after_and_backoff(
    acme, sandbox, connect, sandbox_provider, problem
):
    # UNAVAILABLE: a bare 503, so the backoff starts at 15 s with equal jitter (7.5 s or more);
    # RATE_LIMIT: a 429 with Retry-After: 7
    for behaviour in (Behaviour.UNAVAILABLE, Behaviour.RATE_LIMIT):
        created = connect(acme, f"user-{behaviour}", behaviour=behaviour)
        url = f"/v1/connections/{created.id}/token"
        first = acme.get(url)
        body = problem(first, 503, "token-unavailable")
        retry_after = int(first.headers["retry-after"])
        assert retry_after >= 7, behaviour
        assert body["retry_after"] == retry_after
        assert body["reason"]
        assert "sbx-" not in first.text
        assert refresh_requests(sandbox, created.grant) == 1

        second = acme.get(url)  # inside the backoff: answered without asking the provider
        problem(second, 503, "token-unavailable")
        assert 1 <= int(second.headers["retry-after"]) <= retry_after
        assert refresh_requests(sandbox, created.grant) == 1, behaviour
        connection = acme.get(f"/v1/connections/{created.id}").json()
        assert connection["status"] == "connected"
        assert connection["consecutive_transient_failures"] == 1
        assert connection["consecutive_failures"] == 0


# --- DESIGN section 3: no token in any response but the token endpoint's access token -------------------


def test_no_response_carries_a_refresh_token_and_no_listing_an_access_token(
    api, sandbox, add_provider, connect
):
    seen: list[httpx.Response] = []

    def record(response: httpx.Response) -> None:
        response.read()
        seen.append(response)

    with api.client("acme", event_hooks={"response": [record]}) as acme:
        add_provider(acme)
        fresh = connect(acme, "u1", with_access_token=True, workflows=["sync"])
        expired = connect(acme, "u2", with_access_token=True, expires_in=-5)
        broken = connect(acme, "u3", behaviour=Behaviour.INVALID_GRANT)
        busy = connect(acme, "u4", behaviour=Behaviour.RATE_LIMIT)
        consent = connect(acme, "u5", behaviour=Behaviour.CONSENT_REQUIRED)
        imported = acme.post(
            "/v1/connections/import",
            json={
                "connections": [{"provider": "sandbox", "user_id": "u6", "refresh_token": "sbx-rt-imported"}]
            },
        )
        assert imported.status_code == 201
        tokens = [acme.get(f"/v1/connections/{c.id}/token") for c in (fresh, expired, broken, busy, consent)]
        assert [t.status_code for t in tokens] == [200, 200, 409, 503, 409]
        acme.post("/v1/workflows", json={"name": "wf", "connection_ids": [fresh.id, expired.id]})
        for path in ("/v1/connections", "/v1/providers", "/v1/providers/sandbox", "/v1/workflows"):
            assert acme.get(path).status_code == 200
        for c in (fresh, expired, broken, busy, consent):
            assert acme.get(f"/v1/connections/{c.id}").status_code == 200
        notifications = acme.get("/v1/notifications")
        assert notifications.json(), "the disconnection made a notification"
        acme.post(
            "/v1/connections",
            json={"provider": "nope", "user_id": "x", "refresh_token": "sbx-rt-rejected", "extra": 1},
        )
        acme.post(
            "/v1/connections", json={"provider": "sandbox", "user_id": "x", "refresh_token": ["sbx-rt-x"]}
        )
        acme.delete(f"/v1/connections/{fresh.id}")

    assert len(seen) > 20
    for response in seen:
        path = response.request.url.path
        assert "sbx-rt-" not in response.text, (path, response.text)
        if path.endswith("/token") and response.status_code == 200:
            body = response.json()
            assert "sbx-at-" not in response.text.replace(body["access_token"], ""), response.text
        else:
            assert "sbx-at-" not in response.text, (path, response.text)
