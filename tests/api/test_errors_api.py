"""Authentication and the error format: every error is an RFC 9457 problem document
(``application/problem+json``) with a stable ``type`` and without a token, key or secret in it."""

from __future__ import annotations

import httpx

from grantkeeper.service.tenants import issue_api_key


def test_a_missing_or_wrong_api_key_is_401_with_www_authenticate(api, problem):
    wrong = "gk_" + "A" * 43
    attempts = {
        "no header": {},
        "unknown key": {"Authorization": f"Bearer {wrong}"},
        "not a grantkeeper key": {"Authorization": "Bearer not-a-key"},
        "bearer without a key": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": "Basic YWNtZTpzZWNyZXQ="},
        "key without scheme": {"Authorization": api.keys["acme"]},
        "overlong key": {"Authorization": "Bearer gk_" + "x" * 5000},
    }
    with httpx.Client(base_url=api.base_url) as client:
        for case, headers in attempts.items():
            response = client.get("/v1/connections", headers=headers)
            assert response.status_code == 401, (case, response.text)
            body = problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), case
            assert wrong not in response.text
            assert api.keys["acme"] not in response.text
            assert "WWW-Authenticate" not in body  # a header, not a body field
        ok = client.get("/v1/connections", headers={"Authorization": f"Bearer {api.keys['acme']}"})
        assert ok.status_code == 200
        lower_scheme = client.get("/v1/connections", headers={"Authorization": f"bearer {api.keys['acme']}"})
        assert lower_scheme.status_code == 200  # RFC 9110: the scheme is case-insensitive


def test_a_rotated_key_locks_out_the_old_one(api, acme, globex, problem):
    old_key = api.keys["acme"]
    assert acme.get("/v1/providers").status_code == 200
    _, new_key = issue_api_key(api.runtime.store, "acme", replace=True)
    assert new_key != old_key

    problem(acme.get("/v1/providers"), 401, "unauthorized")  # the client still sends the old key
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {new_key}"}) as rotated:
        assert rotated.get("/v1/providers").status_code == 200
    assert globex.get("/v1/providers").status_code == 200  # another tenant's key is untouched


def test_unknown_routes_and_methods_are_problems(acme, problem):
    problem(acme.get("/v1/nothing-here"), 404, "not-found")
    problem(acme.get("/nothing-here"), 404, "not-found")
    not_allowed = acme.patch("/v1/connections")
    problem(not_allowed, 405, "method-not-allowed")
    assert not_allowed.headers["allow"]
    problem(acme.put("/v1/providers/sandbox", json={}), 405, "method-not-allowed")
    problem(acme.delete("/v1/workflows"), 405, "method-not-allowed")


def test_a_problem_names_the_path_only_never_the_query_string(acme, problem):
    response = acme.get(
        "/v1/connections/con_00000000000000000000/token", params={"secret": "query-secret-value"}
    )
    body = problem(response, 404, "not-found")
    assert body["instance"] == "/v1/connections/con_00000000000000000000/token"
    assert "query-secret-value" not in response.text
    invalid = acme.get("/v1/connections", params={"limit": "x", "secret": "query-secret-value"})
    assert problem(invalid, 422, "validation-error")["instance"] == "/v1/connections"
    assert "query-secret-value" not in invalid.text


def test_a_nul_character_in_any_input_is_a_client_error_on_every_database(
    api, add_provider, connect, problem
):
    """PostgreSQL cannot store or compare text holding NUL (0x00): such input must be refused like any other
    bad input (4xx problem), identically on SQLite and PostgreSQL, and never become a 500."""
    # no keep-alive: after a 500 the server drops the connection, which would break the next request
    with api.client("acme", limits=httpx.Limits(max_keepalive_connections=0)) as acme:
        add_provider(acme)
        existing = connect(acme, "u1")
        body = {"provider": "sandbox", "user_id": "u1", "refresh_token": "sbx-rt-nul"}
        provider = {
            "name": "p",
            "token_url": "https://x.example.test/t",
            "client_id": "c",
            "client_secret": "s",
        }
        lookups = {
            "connection id": ("GET", "/v1/connections/con%00x", {}),
            "connection id (delete)": ("DELETE", "/v1/connections/con%00x", {}),
            "connection id (token)": ("GET", "/v1/connections/con%00x/token", {}),
            "provider name": ("GET", "/v1/providers/p%00x", {}),
            "workflow id": ("GET", "/v1/workflows/wf%00x", {}),
            "notification id": ("POST", "/v1/notifications/n%00x/read", {}),
            "workflow connection id": (
                "POST",
                "/v1/workflows",
                {"json": {"name": "w", "connection_ids": [existing.id, "con\x00x"]}},
            ),
        }
        filters = {
            "user_id filter": {"user_id": "u\x00"},
            "provider filter": {"provider": "sandbox\x00"},
        }
        bodies = {
            "connection user_id": ("/v1/connections", body | {"user_id": "u\x001"}),
            "connection email": ("/v1/connections", body | {"email": "a\x00@example.test"}),
            "import user_id": ("/v1/connections/import", {"connections": [body | {"user_id": "u\x002"}]}),
            "provider client_id": ("/v1/providers", provider | {"client_id": "c\x00"}),
            "provider scopes": ("/v1/providers", provider | {"name": "q", "scopes": "email\x00"}),
        }
        wrong: dict[str, int] = {}  # case -> status, for every input not refused as it should be
        for case, (method, path, kwargs) in lookups.items():
            response = acme.request(method, path, **kwargs)
            if response.status_code not in (404, 422):  # no such thing, or not a valid id
                wrong[case] = response.status_code
            else:
                assert response.headers["content-type"] == "application/problem+json"
        for case, params in filters.items():
            response = acme.get("/v1/connections", params=params)
            is_empty = response.status_code == 200 and response.json()["items"] == []
            if not (is_empty or response.status_code == 422):  # matches nothing, or not a valid filter
                wrong[case] = response.status_code
        for case, (path, payload) in bodies.items():
            response = acme.post(path, json=payload)
            if response.status_code != 422:  # stored data must not differ between the databases
                wrong[case] = response.status_code
            else:
                assert response.headers["content-type"] == "application/problem+json"
        assert wrong == {}, "every input holding NUL must be refused with a 4xx problem"
        assert [c["id"] for c in acme.get("/v1/connections").json()["items"]] == [existing.id]
        assert [p["name"] for p in acme.get("/v1/providers").json()] == ["sandbox"]


def test_a_server_without_an_encryption_key_says_so_instead_of_a_500(api_factory, problem):
    served = api_factory(encryption_keys=None)
    with served.client("acme") as client:
        response = client.post("/v1/webhooks", json={"url": "https://app.example.test/hooks"})
        body = problem(response, 503, "encryption-key-missing")
        assert "GRANTKEEPER_ENCRYPTION_KEYS" in body["detail"]
        assert client.get("/v1/webhooks").json() == []  # nothing was created
