"""``/v1/providers``, ``/v1/workflows`` and ``/v1/notifications`` over real HTTP."""

from __future__ import annotations

from datetime import datetime

from grantkeeper.sandbox.behaviour import Behaviour

PROVIDER_FIELDS = {
    "name",
    "token_url",
    "client_id",
    "auth_method",
    "default_expires_in",
    "authorize_url",
    "authorize_params",
    "account_field",
    "issuer",
    "revocation_url",
    "introspection_url",
    "scopes",
    "flagged_at",
    "flag_reason",
    "max_concurrency",
    "rate_limit_per_second",
}
WORKFLOW_FIELDS = {"id", "name", "status", "paused_reason", "connection_ids", "created_at", "updated_at"}
NOTIFICATION_FIELDS = {
    "id",
    "type",
    "title",
    "message",
    "is_read",
    "created_at",
    "metadata",
    "connection_id",
    "user_id",
}
SECRET = "client-secret-never-shown"


def aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"{value!r} has no UTC offset"
    return parsed


def provider(name: str = "google", **fields) -> dict:
    return {
        "name": name,
        "token_url": "https://oauth2.example.test/token",
        "client_id": f"{name}-client",
        "client_secret": SECRET,
    } | fields


# --- providers ------------------------------------------------------------------------------------------


def test_providers_create_list_get_never_show_the_secret(acme, problem):
    created = acme.post(
        "/v1/providers",
        json=provider(
            "google",
            auth_method="client_secret_post",
            authorize_url="https://accounts.example.test/authorize",
            revocation_url="https://oauth2.example.test/revoke",
            introspection_url="https://oauth2.example.test/introspect",
            scopes="email profile",
            default_expires_in=1800,
        ),
    )
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    body = created.json()
    assert set(body) == PROVIDER_FIELDS
    assert body == {
        "name": "google",
        "token_url": "https://oauth2.example.test/token",
        "client_id": "google-client",
        "auth_method": "client_secret_post",
        "default_expires_in": 1800,
        "authorize_url": "https://accounts.example.test/authorize",
        "authorize_params": {},
        "account_field": None,
        "issuer": None,
        "revocation_url": "https://oauth2.example.test/revoke",
        "introspection_url": "https://oauth2.example.test/introspect",
        "scopes": "email profile",
        "flagged_at": None,
        "flag_reason": None,
        "max_concurrency": None,
        "rate_limit_per_second": None,
    }
    # plain http is fine to a loopback host (the sandbox, local development); defaults fill the rest
    for name, url in (
        ("local", "http://localhost:8080/token"),
        ("loop", "http://127.0.0.1:9/t"),
        ("v6", "http://[::1]/t"),
    ):
        response = acme.post("/v1/providers", json=provider(name, token_url=url))
        assert response.status_code == 201, (url, response.text)
        assert response.json()["auth_method"] == "client_secret_basic"
        assert response.json()["default_expires_in"] == 3600

    listing = acme.get("/v1/providers")
    assert listing.status_code == 200
    assert sorted(p["name"] for p in listing.json()) == ["google", "local", "loop", "v6"]
    one = acme.get("/v1/providers/google")
    assert one.status_code == 200
    assert one.json() == body
    for response in (created, listing, one):
        assert SECRET not in response.text
        assert '"client_secret"' not in response.text
    problem(acme.get("/v1/providers/unknown"), 404, "not-found")


def test_provider_limits_are_stored_and_shown(acme):
    created = acme.post("/v1/providers", json=provider("slow", max_concurrency=4, rate_limit_per_second=2.5))
    assert created.status_code == 201, created.text
    assert (created.json()["max_concurrency"], created.json()["rate_limit_per_second"]) == (4, 2.5)
    assert acme.get("/v1/providers/slow").json()["max_concurrency"] == 4


def test_providers_reject_bad_input_and_change_nothing(acme, problem):
    assert acme.post("/v1/providers", json=provider("google")).status_code == 201
    invalid_urls = {
        "plain http token_url": provider("a", token_url="http://oauth2.example.test/token"),
        "http token_url to a name resolving anywhere": provider(
            "b", token_url="http://localhost.example.test/t"
        ),
        "plain http revocation_url": provider("c", revocation_url="http://oauth2.example.test/revoke"),
        "plain http authorize_url": provider("d", authorize_url="http://accounts.example.test/authorize"),
        "plain http introspection_url": provider("i", introspection_url="http://oauth2.example.test/i"),
        "token_url with a fragment": provider("e", token_url="https://oauth2.example.test/token#x"),
        "token_url with credentials": provider("f", token_url="https://user:pw@oauth2.example.test/token"),
        "relative token_url": provider("g", token_url="/token"),
        "ftp token_url": provider("h", token_url="ftp://oauth2.example.test/token"),
    }
    for case, body in invalid_urls.items():
        response = acme.post("/v1/providers", json=body)
        assert response.status_code == 422, (case, response.text)
        problem(response, 422, "invalid-input")
        assert SECRET not in response.text

    problem(acme.post("/v1/providers", json=provider("google")), 409, "already-exists")
    invalid_fields = {
        "unknown field": (provider("x", client_secrett="s"), "body.client_secrett"),
        "missing client_secret": (
            {k: v for k, v in provider("x").items() if k != "client_secret"},
            "body.client_secret",
        ),
        "bad auth_method": (provider("x", auth_method="telepathy"), "body.auth_method"),
        "bad name": (provider("has space"), "body.name"),
        "empty client_id": (provider("x", client_id=""), "body.client_id"),
        "zero default_expires_in": (provider("x", default_expires_in=0), "body.default_expires_in"),
        "zero max_concurrency": (provider("x", max_concurrency=0), "body.max_concurrency"),
        "negative rate limit": (provider("x", rate_limit_per_second=-1), "body.rate_limit_per_second"),
        "string rate limit": (provider("x", rate_limit_per_second="fast"), "body.rate_limit_per_second"),
    }
    for case, (body, location) in invalid_fields.items():
        response = acme.post("/v1/providers", json=body)
        assert response.status_code == 422, (case, response.text)
        errors = problem(response, 422, "validation-error")["errors"]
        assert [error["location"] for error in errors] == [location], case
        assert SECRET not in response.text

    [only] = acme.get("/v1/providers").json()
    assert only["name"] == "google"
    assert only["token_url"] == "https://oauth2.example.test/token"


# --- workflows ------------------------------------------------------------------------------------------


def test_workflows_create_list_get(acme, connect, sandbox_provider, problem):
    a = connect(acme, "u1", workflows=["nightly-sync"])
    b = connect(acme, "u2")
    created = acme.post("/v1/workflows", json={"name": "reports", "connection_ids": [b.id, a.id, a.id]})
    assert created.status_code == 201, created.text
    workflow = created.json()
    assert set(workflow) == WORKFLOW_FIELDS
    assert workflow["name"] == "reports"
    assert workflow["status"] == "active"
    assert workflow["paused_reason"] is None
    assert sorted(workflow["connection_ids"]) == sorted([a.id, b.id])
    aware(workflow["created_at"])
    aware(workflow["updated_at"])

    one = acme.get(f"/v1/workflows/{workflow['id']}")
    assert one.status_code == 200
    assert one.json() == workflow
    listing = acme.get("/v1/workflows")
    assert listing.status_code == 200
    by_name = {w["name"]: w for w in listing.json()}
    assert set(by_name) == {"nightly-sync", "reports"}  # a connection's `workflows` names create them
    assert by_name["nightly-sync"]["connection_ids"] == [a.id]
    assert by_name["reports"] == workflow

    problem(acme.get("/v1/workflows/wf_00000000000000000000"), 404, "not-found")
    problem(acme.post("/v1/workflows", json={"name": "reports", "connection_ids": []}), 409, "already-exists")
    problem(
        acme.post("/v1/workflows", json={"name": "nightly-sync", "connection_ids": [a.id]}),
        409,
        "already-exists",
    )
    # an unknown connection id: 404 (the id names nothing this tenant has), and nothing is created
    unknown = acme.post(
        "/v1/workflows", json={"name": "ghost", "connection_ids": [a.id, "con_00000000000000000000"]}
    )
    problem(unknown, 404, "not-found")
    for body, location in (
        ({"name": "x", "connection_ids": [a.id], "paused": True}, "body.paused"),
        ({"name": "bad name", "connection_ids": []}, "body.name"),
        ({"name": "x"}, "body.connection_ids"),
        ({"name": "x", "connection_ids": a.id}, "body.connection_ids"),
    ):
        errors = problem(acme.post("/v1/workflows", json=body), 422, "validation-error")["errors"]
        assert [error["location"] for error in errors] == [location], body
    assert sorted(w["name"] for w in acme.get("/v1/workflows").json()) == ["nightly-sync", "reports"]

    empty = acme.post("/v1/workflows", json={"name": "standalone", "connection_ids": []})
    assert empty.status_code == 201
    assert empty.json()["status"] == "active"


def test_a_workflow_over_a_disconnected_connection_is_paused(acme, connect, sandbox_provider, problem):
    healthy = connect(acme, "u1")
    doomed = connect(acme, "u2", behaviour=Behaviour.CONSENT_REQUIRED)
    both = acme.post("/v1/workflows", json={"name": "both", "connection_ids": [healthy.id, doomed.id]}).json()
    alone = acme.post("/v1/workflows", json={"name": "alone", "connection_ids": [healthy.id]}).json()
    assert both["status"] == alone["status"] == "active"

    problem(acme.get(f"/v1/connections/{doomed.id}/token"), 409, "needs-reauthorization")
    paused = acme.get(f"/v1/workflows/{both['id']}").json()
    assert paused["status"] == "paused"
    assert paused["paused_reason"] == "reauth_required"
    assert acme.get(f"/v1/workflows/{alone['id']}").json()["status"] == "active"
    late = acme.post("/v1/workflows", json={"name": "late", "connection_ids": [doomed.id]})
    assert late.status_code == 201
    assert late.json()["status"] == "paused"  # created over an already disconnected connection
    statuses = {w["name"]: w["status"] for w in acme.get("/v1/workflows").json()}
    assert statuses == {"both": "paused", "alone": "active", "late": "paused"}

    # deleting the disconnected connection leaves nothing to reconnect: the workflows resume
    assert acme.delete(f"/v1/connections/{doomed.id}").status_code == 204
    resumed = acme.get(f"/v1/workflows/{both['id']}").json()
    assert resumed["status"] == "active"
    assert resumed["connection_ids"] == [healthy.id]


# --- notifications --------------------------------------------------------------------------------------


def test_notifications_filter_by_type_and_unread_and_mark_read(api_factory, add_provider, connect, problem):
    # thresholds of 1: one invalid_grant warns, one 429 gives the rate-limit notice, consent_required
    # disconnects at once; three connections, three notifications, no waiting
    api = api_factory(warning_threshold=1, rate_limit_notice_threshold=1)
    with api.client("acme") as acme:
        add_provider(acme)
        warned = connect(acme, "u-warn", behaviour=Behaviour.INVALID_GRANT)
        limited = connect(acme, "u-limit", behaviour=Behaviour.RATE_LIMIT)
        lost = connect(acme, "u-lost", behaviour=Behaviour.CONSENT_REQUIRED, email="lost@example.test")
        assert acme.get(f"/v1/connections/{warned.id}/token").status_code == 409  # refresh rejected
        assert acme.get(f"/v1/connections/{limited.id}/token").status_code == 503
        assert acme.get(f"/v1/connections/{lost.id}/token").status_code == 409

        listing = acme.get("/v1/notifications")
        assert listing.status_code == 200
        assert listing.headers["content-type"] == "application/json"
        items = listing.json()
        by_type = {item["type"]: item for item in items}
        assert len(items) == 3
        assert set(by_type) == {"integration_warning", "integration_rate_limit", "integration_disconnected"}
        for item in items:
            assert set(item) == NOTIFICATION_FIELDS
            assert item["is_read"] is False
            assert item["title"]
            assert item["message"]
            assert isinstance(item["metadata"], dict)
            aware(item["created_at"])
        assert by_type["integration_warning"]["connection_id"] == warned.id
        assert by_type["integration_rate_limit"]["connection_id"] == limited.id
        assert by_type["integration_disconnected"]["connection_id"] == lost.id
        assert by_type["integration_disconnected"]["user_id"] == "u-lost"
        assert "sbx-" not in listing.text

        for kind, item in by_type.items():
            filtered = acme.get("/v1/notifications", params={"type": kind})
            assert [n["id"] for n in filtered.json()] == [item["id"]], kind
        assert len(acme.get("/v1/notifications", params={"unread": "true"}).json()) == 3

        read_id = by_type["integration_warning"]["id"]
        marked = acme.post(f"/v1/notifications/{read_id}/read")
        assert marked.status_code == 204
        assert marked.content == b""
        unread = acme.get("/v1/notifications", params={"unread": "true"}).json()
        assert {n["id"] for n in unread} == {by_type[k]["id"] for k in by_type if k != "integration_warning"}
        assert (
            acme.get("/v1/notifications", params={"type": "integration_warning", "unread": "true"}).json()
            == []
        )
        everything = {n["id"]: n for n in acme.get("/v1/notifications", params={"unread": "false"}).json()}
        assert len(everything) == 3
        assert everything[read_id]["is_read"] is True
        assert acme.post(f"/v1/notifications/{read_id}/read").status_code == 204  # idempotent

        problem(acme.post("/v1/notifications/ntf_00000000000000000000/read"), 404, "not-found")
        for params in ({"type": "integration_panic"}, {"unread": "maybe"}, {"limit": 0}):
            errors = problem(acme.get("/v1/notifications", params=params), 422, "validation-error")["errors"]
            assert errors[0]["location"] == f"query.{next(iter(params))}"
        problem(acme.get(f"/v1/notifications/{read_id}/read"), 405, "method-not-allowed")
