"""``/v1/connections`` over real HTTP: create, import, list and page, get, delete (with revocation at the
provider), and the on-demand token with its refresh, reauthorization and backoff answers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from grantkeeper.sandbox.behaviour import Behaviour

CONNECTION_FIELDS = {
    "id",
    "provider",
    "user_id",
    "email",
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
    assert acme.get(f"/v1/connections/{body['id']}").json() == body


def test_create_accepts_expires_at_as_iso_8601_or_unix_seconds(acme, sandbox, sandbox_provider):
    expected = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    for value in (
        "2030-06-01T12:00:00Z",
        "2030-06-01T14:00:00+02:00",
        "2030-06-01T12:00:00",  # naive: UTC
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


def test_create_with_an_unknown_provider_is_422_and_creates_nothing(acme, sandbox_provider, problem):
    response = acme.post(
        "/v1/connections", json={"provider": "nope", "user_id": "u1", "refresh_token": "sbx-rt-secret-value"}
    )
    body = problem(response, 422, "unknown-provider")
    assert [error["message"] for error in body["errors"]] == ["unknown provider 'nope'"]
    assert "sbx-rt-secret-value" not in response.text
    assert all_ids(acme) == []


@pytest.mark.parametrize(
    "expires_at", ["tomorrow", "2025-13-45T00:00:00Z", True, [2030], {"at": 1}, 10**20], ids=str
)
def test_create_with_a_bad_expires_at_is_422_and_creates_nothing(acme, sandbox_provider, problem, expires_at):
    response = acme.post(
        "/v1/connections",
        json={
            "provider": "sandbox",
            "user_id": "u1",
            "refresh_token": "sbx-rt-must-not-echo",
            "expires_at": expires_at,
        },
    )
    body = problem(response, 422, "validation-error")
    assert [error["location"] for error in body["errors"]] == ["body.expires_at"]
    assert "sbx-rt-must-not-echo" not in response.text
    assert all_ids(acme) == []


def test_create_with_unknown_or_missing_fields_is_422(acme, sandbox_provider, problem):
    base = {"provider": "sandbox", "user_id": "u1", "refresh_token": "sbx-rt-must-not-echo"}
    unknown = problem(
        acme.post("/v1/connections", json=base | {"refresh_tokn": "x"}), 422, "validation-error"
    )
    assert [error["location"] for error in unknown["errors"]] == ["body.refresh_tokn"]
    missing = problem(
        acme.post("/v1/connections", json={"provider": "sandbox", "user_id": "u1"}), 422, "validation-error"
    )
    assert [error["location"] for error in missing["errors"]] == ["body.refresh_token"]
    empty = problem(acme.post("/v1/connections", json=base | {"user_id": ""}), 422, "validation-error")
    assert [error["location"] for error in empty["errors"]] == ["body.user_id"]
    not_json = acme.post(
        "/v1/connections", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem(not_json, 422, "validation-error")
    assert all_ids(acme) == []


# --- POST /v1/connections/import ------------------------------------------------------------------------


def test_import_creates_every_row_in_one_request(acme, sandbox, sandbox_provider):
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


def test_import_is_all_or_nothing(acme, add_provider, sandbox_provider, problem):
    add_provider(acme, "other")
    good = {"provider": "sandbox", "user_id": "u1", "refresh_token": "sbx-rt-good"}
    rows = [good, good | {"provider": "missing"}, good | {"provider": "other"}, good | {"provider": "gone"}]
    response = acme.post("/v1/connections/import", json={"connections": rows})
    body = problem(response, 422, "unknown-provider")
    assert [error["location"] for error in body["errors"]] == [
        "connections.1.provider",
        "connections.3.provider",
    ]
    assert "missing" in body["errors"][0]["message"]
    assert "sbx-rt-good" not in response.text
    assert all_ids(acme) == []

    bad_field = [good, good | {"expires_at": "never"}]
    body = problem(
        acme.post("/v1/connections/import", json={"connections": bad_field}), 422, "validation-error"
    )
    assert [error["location"] for error in body["errors"]] == ["body.connections.1.expires_at"]
    problem(acme.post("/v1/connections/import", json={"connections": []}), 422, "validation-error")
    problem(acme.post("/v1/connections/import", json=[good]), 422, "validation-error")
    assert all_ids(acme) == []
    assert acme.get("/v1/workflows").json() == []


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


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "%%%", "zzzz", "AAAA", "!!!!", "aGVsbG8"])
def test_a_cursor_the_api_did_not_return_is_422(acme, connect, sandbox_provider, problem, cursor):
    connect(acme, "u1")
    response = acme.get("/v1/connections", params={"cursor": cursor})
    problem(response, 422, "invalid-cursor")


def test_list_rejects_bad_query_values(acme, problem):
    for params in ({"status": "sleeping"}, {"limit": 0}, {"limit": 1001}, {"limit": "many"}):
        body = problem(acme.get("/v1/connections", params=params), 422, "validation-error")
        assert body["errors"][0]["location"] == f"query.{next(iter(params))}"


# --- GET and DELETE /v1/connections/{id} --------------------------------------------------------------


def test_get_one_and_404_for_an_unknown_id(acme, connect, sandbox_provider, problem):
    created = connect(acme, "u1", email="u1@example.test")
    response = acme.get(f"/v1/connections/{created.id}")
    assert response.status_code == 200
    assert response.json() == created.body
    problem(acme.get("/v1/connections/con_00000000000000000000"), 404, "not-found")
    problem(acme.get("/v1/connections/nonsense"), 404, "not-found")


def test_delete_revokes_the_grant_at_the_provider(
    acme, sandbox, sandbox_server, connect, sandbox_provider, problem
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
    assert all_ids(acme) == []
    [workflow] = acme.get("/v1/workflows").json()
    assert workflow["connection_ids"] == []


def test_delete_without_a_revocation_url_only_forgets(acme, sandbox, add_provider, connect, problem):
    add_provider(acme, "plain", revocation=False)
    created = connect(acme, "u1", provider="plain")
    assert acme.delete(f"/v1/connections/{created.id}").status_code == 204
    assert sandbox.describe(created.grant.grant_id)["revoked"] is False
    problem(acme.get(f"/v1/connections/{created.id}"), 404, "not-found")
    problem(acme.delete("/v1/connections/con_00000000000000000000"), 404, "not-found")


# --- GET /v1/connections/{id}/token -----------------------------------------------------------------


def test_a_fresh_token_is_returned_without_a_refresh(acme, sandbox, connect, sandbox_provider):
    created = connect(acme, "u1", with_access_token=True, expires_in=3600)
    response = acme.get(f"/v1/connections/{created.id}/token")
    assert response.status_code == 200, response.text
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


def test_bad_min_validity_is_422(acme, connect, sandbox_provider, problem):
    created = connect(acme, "u1")
    for value in (-1, 86_401, "soon"):
        body = problem(
            acme.get(f"/v1/connections/{created.id}/token", params={"min_validity": value}),
            422,
            "validation-error",
        )
        assert body["errors"][0]["location"] == "query.min_validity"


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
            if response.status_code != 503:
                break
            body = problem(response, 503, "token-unavailable")
            assert body["reason"] == "invalid_grant"
            time.sleep(0.3)
        body = problem(response, 409, "needs-reauthorization")
        assert body["connection_id"] == created.id
        assert body["reconnect_url"] == f"https://app.example.test/connect/reconnect/{created.id}"
        assert "sbx-" not in response.text
        assert refresh_requests(sandbox, created.grant) == 3
        assert answers[0] == 503

        again = acme.get(url)
        problem(again, 409, "needs-reauthorization")
        assert refresh_requests(sandbox, created.grant) == 3  # no provider request for a disconnected one
        connection = acme.get(f"/v1/connections/{created.id}").json()
        assert connection["status"] == "needs_reauthorization"
        assert connection["consecutive_failures"] == 3
        assert connection["disconnect_reason"] == "auth_failures"
        assert connection["last_error"]["code"] == "invalid_grant"


def test_reauth_required_disconnects_at_once(acme, sandbox, connect, sandbox_provider, problem):
    created = connect(acme, "u1", behaviour=Behaviour.INTERACTION_REQUIRED)
    problem(acme.get(f"/v1/connections/{created.id}/token"), 409, "needs-reauthorization")
    problem(acme.get(f"/v1/connections/{created.id}/token"), 409, "needs-reauthorization")
    assert refresh_requests(sandbox, created.grant) == 1


@pytest.mark.parametrize(
    ("behaviour", "at_least"),
    [
        (Behaviour.UNAVAILABLE, 7),  # no Retry-After: backoff from 15 s with equal jitter, so 7.5 s or more
        (Behaviour.RATE_LIMIT, 7),  # the sandbox's Retry-After: 7
    ],
)
def test_a_transient_failure_is_503_with_retry_after_and_backoff(
    acme, sandbox, connect, sandbox_provider, problem, behaviour, at_least
):
    created = connect(acme, "u1", behaviour=behaviour)
    url = f"/v1/connections/{created.id}/token"
    first = acme.get(url)
    body = problem(first, 503, "token-unavailable")
    retry_after = int(first.headers["retry-after"])
    assert retry_after >= at_least
    assert body["retry_after"] == retry_after
    assert body["reason"]
    assert "sbx-" not in first.text
    assert refresh_requests(sandbox, created.grant) == 1

    second = acme.get(url)  # inside the backoff: answered without asking the provider
    problem(second, 503, "token-unavailable")
    assert 1 <= int(second.headers["retry-after"]) <= retry_after
    assert refresh_requests(sandbox, created.grant) == 1
    connection = acme.get(f"/v1/connections/{created.id}").json()
    assert connection["status"] == "connected"
    assert connection["consecutive_transient_failures"] == 1
    assert connection["consecutive_failures"] == 0


def test_token_for_an_unknown_connection_is_404(acme, problem):
    problem(acme.get("/v1/connections/con_00000000000000000000/token"), 404, "not-found")


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
        assert [t.status_code for t in tokens] == [200, 200, 503, 503, 409]
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
