"""The sandbox's authorization-code grant with PKCE: consent page, the user's decision and the code exchange.

A "connect" flow is driven as a browser and a client would drive it, over real HTTP on loopback: GET the
authorization endpoint, read the consent id from the page, POST the decision, follow nothing (the 302's
Location is the client's callback), then exchange the code at the token endpoint. Time is an injected clock
the tests move, so expiries are checked without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from grantkeeper.sandbox import Behaviour, Sandbox, SandboxServer
from grantkeeper.sandbox.__main__ import _parser, main
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, ManualClock, read_line

AUTH = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
OTHER_AUTH = ("other", "other-secret")
CALLBACK = "https://app.example/oauth/callback"
QUERY_CALLBACK = "http://127.0.0.1:9/cb?tenant=a%20b"  # already has a query: the answer is appended
OTHER_CALLBACK = "https://other.example/cb"
HOSTILE = '<script>alert("x")</script>'
CONSENT_ID = re.compile(r'<input type="hidden" name="consent" id="consent" value="([A-Za-z0-9_-]+)">')


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def sandbox(clock: ManualClock) -> Sandbox:
    """Overrides the shared fixture: client ``app`` with two redirect URIs, and ``other`` with its own."""
    sandbox = Sandbox(seed=0, hang_seconds=5, clock=clock)
    sandbox.add_client(*AUTH, redirect_uris=[CALLBACK, QUERY_CALLBACK])
    sandbox.add_client(*OTHER_AUTH, redirect_uris=[OTHER_CALLBACK])
    return sandbox


@pytest.fixture
def http(sandbox_server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_server.base_url, timeout=5) as client:
        yield client


def pkce() -> tuple[str, str]:
    """A fresh code verifier and its S256 challenge, computed here (RFC 7636 section 4.2), not by the app."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def authorize_params(challenge: str, **overrides: str | None) -> dict[str, str]:
    """A good authorization request for ``app``; an override of None leaves that parameter out."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": SANDBOX_CLIENT_ID,
        "redirect_uri": CALLBACK,
        "scope": "read write",
        "state": "st-123",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **overrides,
    }
    return {name: value for name, value in params.items() if value is not None}


def open_consent(
    http: httpx.Client, params: Any, url: str = "/oauth/authorize"
) -> tuple[str, httpx.Response]:
    """GET the authorization endpoint expecting the consent page; the consent id and the page."""
    page = http.get(url, params=params)
    assert page.status_code == 200, page.text
    found = CONSENT_ID.search(page.text)
    assert found is not None, page.text
    return found.group(1), page


def decide(http: httpx.Client, consent: str, decision: str = "allow", user: str = "alice") -> httpx.Response:
    return http.post("/oauth/authorize", data={"consent": consent, "decision": decision, "user": user})


def callback(response: httpx.Response, redirect_uri: str = CALLBACK) -> dict[str, str]:
    """The parameters a 302 back to the client carries; asserts it goes to ``redirect_uri``'s endpoint."""
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    expected = urlsplit(redirect_uri)
    assert (location.scheme, location.netloc, location.path) == (
        expected.scheme,
        expected.netloc,
        expected.path,
    )
    assert not location.fragment
    values = parse_qs(location.query, keep_blank_values=True)
    assert all(len(v) == 1 for v in values.values()), values
    return {name: v[0] for name, v in values.items()}


def obtain_code(
    http: httpx.Client, challenge: str, user: str = "alice", **overrides: str | None
) -> dict[str, str]:
    """Consent and allow: the callback's parameters (``code`` and ``state``)."""
    consent, _ = open_consent(http, authorize_params(challenge, **overrides))
    params = authorize_params(challenge, **overrides)
    return callback(decide(http, consent, "allow", user), params["redirect_uri"])


def exchange(
    http: httpx.Client,
    code: str,
    verifier: str,
    redirect_uri: str = CALLBACK,
    auth: tuple[str, str] | None = AUTH,
    **extra: str,
) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    data |= {"code_verifier": verifier, **extra}
    return http.post("/oauth/token", data=data, auth=httpx.USE_CLIENT_DEFAULT if auth is None else auth)


def refresh(http: httpx.Client, token: str, auth: tuple[str, str] = AUTH) -> httpx.Response:
    return http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=auth)


def assert_invalid_grant(response: httpx.Response, *secret: str) -> str:
    """A 400 invalid_grant that echoes none of ``secret``; its description."""
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "invalid_grant"
    for value in secret:
        assert value not in response.text
    return str(body["error_description"])


def assert_refusal_page(response: httpx.Response) -> str:
    """A 400 HTML page for the user and no redirect; the page's text."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert "Authorization request refused" in response.text
    return response.text


# --- the happy path ---------------------------------------------------------------------------------------


def test_the_whole_flow_creates_a_grant_whose_tokens_work(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    verifier, challenge = pkce()
    consent, page = open_consent(http, authorize_params(challenge), sandbox_server.authorize_url)
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert f"{SANDBOX_CLIENT_ID} wants access to your Sandbox account</h1>" in page.text
    assert "<li><code>read</code></li>" in page.text
    assert "<li><code>write</code></li>" in page.text
    assert '<input type="text" id="user" name="user" value="sandbox-user"' in page.text
    assert '<form method="post" action="/oauth/authorize">' in page.text
    assert '<button type="submit" name="decision" value="allow" id="allow">Allow</button>' in page.text
    assert '<button type="submit" name="decision" value="deny" id="deny">Deny</button>' in page.text

    answer = callback(decide(http, consent, "allow", "alice"))
    assert set(answer) == {"code", "state", "iss"}  # iss: RFC 9207, see the end of this module
    assert answer["state"] == "st-123"

    tokens = exchange(http, answer["code"], verifier)
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope", "account_id"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 3600, "read write")
    assert body["account_id"] == "alice"  # the consenting user, as Dropbox names the account

    grant_id = sandbox.grant_of_refresh_token(body["refresh_token"])
    assert grant_id is not None
    described = sandbox.describe(grant_id)
    assert (described["client_id"], described["user"], described["revoked"]) == (
        SANDBOX_CLIENT_ID,
        "alice",
        False,
    )
    assert described["access_token"] == body["access_token"]

    refreshed = refresh(http, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    rotated = refreshed.json()["refresh_token"]
    assert rotated != body["refresh_token"]  # app rotates: the client's settings apply to the new grant
    assert refreshed.json()["scope"] == "read write"
    assert sandbox.grant_of_refresh_token(rotated) == grant_id
    assert sandbox.grant_of_refresh_token(body["refresh_token"]) is None  # rotated away
    introspected = http.post("/oauth/introspect", data={"token": rotated}, auth=AUTH).json()
    assert introspected == {"active": True, "token_type": "refresh_token", "client_id": SANDBOX_CLIENT_ID}

    stats = sandbox.stats()
    assert (stats.authorizations, stats.codes_issued, stats.code_exchanges, stats.code_failures) == (
        1,
        1,
        1,
        0,
    )
    # The refresh fields count the one refresh, not the code exchange.
    assert (stats.requests, stats.refreshes_ok, stats.by_behaviour) == (1, 1, {"ok": 1})
    assert sum(stats.requests_by_second.values()) == 1


def test_client_secret_post_a_callback_with_a_query_and_a_login_hint(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    verifier, challenge = pkce()
    params = authorize_params(
        challenge, redirect_uri=QUERY_CALLBACK, login_hint="bob@example.com", scope=None
    )
    consent, page = open_consent(http, params)
    assert '<input type="text" id="user" name="user" value="bob@example.com"' in page.text
    assert "No scope requested." in page.text

    response = decide(http, consent, "allow", "  bob  ")
    assert response.headers["location"].startswith(QUERY_CALLBACK + "&code=")
    answer = callback(response, QUERY_CALLBACK)
    assert answer["tenant"] == "a b"  # the registered query survives, decoded as it was sent

    data = {"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET}
    tokens = exchange(http, answer["code"], verifier, QUERY_CALLBACK, auth=None, **data)
    assert tokens.status_code == 200, tokens.text
    assert "scope" not in tokens.json()
    grant_id = sandbox.grant_of_refresh_token(tokens.json()["refresh_token"])
    assert grant_id is not None
    assert sandbox.describe(grant_id)["user"] == "bob"


def test_a_state_less_request_gets_a_state_less_answer(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    answer = obtain_code(http, challenge, state=None)
    assert set(answer) == {"code", "iss"}
    assert exchange(http, answer["code"], verifier).status_code == 200


def test_a_clients_access_token_lifetime_applies_to_its_code_grants(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    sandbox.add_client("short", "short-secret", redirect_uris=[CALLBACK], access_token_lifetime=90)
    verifier, challenge = pkce()
    answer = obtain_code(http, challenge, client_id="short")
    tokens = exchange(http, answer["code"], verifier, auth=("short", "short-secret"))
    assert tokens.json()["expires_in"] == 90


def test_deny_sends_access_denied_with_the_state(sandbox: Sandbox, http: httpx.Client) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge, state=HOSTILE))
    answer = callback(decide(http, consent, "deny", ""))  # no user needed to deny
    assert answer["error"] == "access_denied"
    assert answer["state"] == HOSTILE
    assert "code" not in answer
    assert_refusal_page(decide(http, consent, "allow"))  # the consent is used up
    stats = sandbox.stats()
    assert (stats.authorizations, stats.codes_issued) == (1, 0)


# --- requests refused with a page: the redirect URI cannot be trusted -------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"client_id": "nobody"},
        {"client_id": None},
        {"client_id": ""},
        {"redirect_uri": None},
        {"redirect_uri": "https://evil.example/oauth/callback"},
        {"redirect_uri": CALLBACK + "/"},  # exact matching: no prefix, no normalisation
        {"redirect_uri": CALLBACK.upper()},
        {"redirect_uri": CALLBACK + "?x=1"},
        {"redirect_uri": OTHER_CALLBACK},  # registered, but for another client
    ],
    ids=repr,
)
def test_an_untrusted_redirect_gets_a_page_never_a_redirect(
    sandbox: Sandbox, http: httpx.Client, overrides: dict[str, str | None]
) -> None:
    _, challenge = pkce()
    # Even with every other parameter wrong too, nothing is sent to the redirect URI.
    params = authorize_params(challenge, code_challenge_method="plain", response_type="token", **overrides)
    assert_refusal_page(http.get("/oauth/authorize", params=params))
    assert sandbox.stats().authorizations == 0


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_a_repeated_client_id_or_redirect_uri_gets_a_page(http: httpx.Client, name: str) -> None:
    _, challenge = pkce()
    params = httpx.QueryParams(
        [*authorize_params(challenge).items(), (name, authorize_params(challenge)[name])]
    )
    assert_refusal_page(http.get("/oauth/authorize", params=params))


def test_a_query_that_is_not_utf8_gets_a_page(http: httpx.Client) -> None:
    assert_refusal_page(http.get("/oauth/authorize?client_id=%ff"))


# --- requests refused with an error redirect --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request", "S256"),
        ({"code_challenge_method": None}, "invalid_request", "S256"),  # the default would be plain
        ({"code_challenge_method": "s256"}, "invalid_request", "S256"),
        ({"code_challenge": None}, "invalid_request", "PKCE"),
        ({"code_challenge": ""}, "invalid_request", "PKCE"),
        ({"code_challenge": "a" * 42}, "invalid_request", "43 to 128"),
        ({"code_challenge": "a" * 129}, "invalid_request", "43 to 128"),
        ({"code_challenge": "a" * 42 + "+"}, "invalid_request", "43 to 128"),
        ({"response_type": "token"}, "unsupported_response_type", "response_type=code"),
        ({"response_type": None}, "invalid_request", "response_type"),
    ],
    ids=repr,
)
def test_a_bad_request_from_a_known_client_is_redirected_with_an_error(
    sandbox: Sandbox,
    http: httpx.Client,
    overrides: dict[str, str | None],
    error: str,
    fragment: str,
) -> None:
    _, challenge = pkce()
    answer = callback(http.get("/oauth/authorize", params=authorize_params(challenge, **overrides)))
    assert answer["error"] == error
    assert fragment in answer["error_description"]
    assert answer["state"] == "st-123"
    assert sandbox.stats().authorizations == 0


def test_a_challenge_of_128_characters_is_accepted(http: httpx.Client) -> None:
    open_consent(http, authorize_params("A-._~" * 25 + "abc"))


def test_repeated_parameters_are_an_invalid_request(http: httpx.Client) -> None:
    _, challenge = pkce()
    params = httpx.QueryParams([*authorize_params(challenge).items(), ("scope", "admin")])
    answer = callback(http.get("/oauth/authorize", params=params))
    assert answer["error"] == "invalid_request"
    assert "scope" in answer["error_description"]
    assert answer["state"] == "st-123"


def test_an_error_redirect_keeps_the_registered_query(http: httpx.Client) -> None:
    params = authorize_params("short", redirect_uri=QUERY_CALLBACK, state=None)
    answer = callback(http.get("/oauth/authorize", params=params), QUERY_CALLBACK)
    assert (answer["tenant"], answer["error"]) == ("a b", "invalid_request")
    assert "state" not in answer


# --- the consent form -------------------------------------------------------------------------------------


def test_a_consent_expires_after_ten_minutes(http: httpx.Client, clock: ManualClock) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge))
    clock.advance(600)
    assert "expired" in assert_refusal_page(decide(http, consent))


def test_a_consent_just_inside_ten_minutes_still_works(http: httpx.Client, clock: ManualClock) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge))
    clock.advance(599)
    assert "code" in callback(decide(http, consent))


def test_a_consent_is_answered_once(sandbox: Sandbox, http: httpx.Client) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge))
    assert "code" in callback(decide(http, consent))
    assert "already answered" in assert_refusal_page(decide(http, consent))
    assert "already answered" in assert_refusal_page(decide(http, consent, "deny"))
    assert sandbox.stats().codes_issued == 1


def test_an_unknown_consent_gets_a_page(http: httpx.Client) -> None:
    assert_refusal_page(decide(http, "made-up"))
    assert_refusal_page(http.post("/oauth/authorize", data={"decision": "allow", "user": "alice"}))


@pytest.mark.parametrize(
    "form",
    [
        {"decision": "maybe", "user": "alice"},
        {"user": "alice"},
        {"decision": "allow", "user": "   "},
        {"decision": "allow"},
        {"decision": "allow", "user": "x" * 201},
    ],
    ids=repr,
)
def test_a_bad_consent_form_gets_a_page_and_leaves_the_consent_answerable(
    http: httpx.Client, form: dict[str, str]
) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge))
    assert_refusal_page(http.post("/oauth/authorize", data={"consent": consent, **form}))
    assert "code" in callback(decide(http, consent))


def test_the_consent_form_must_be_form_encoded(http: httpx.Client) -> None:
    _, challenge = pkce()
    consent, _ = open_consent(http, authorize_params(challenge))
    assert_refusal_page(http.post("/oauth/authorize", json={"consent": consent, "decision": "allow"}))


def test_other_methods_are_not_allowed_on_the_authorization_endpoint(http: httpx.Client) -> None:
    response = http.put("/oauth/authorize")
    assert (response.status_code, response.headers["allow"]) == (405, "GET, POST")


# --- what goes into the page ------------------------------------------------------------------------------


def test_every_value_in_the_page_is_escaped(sandbox: Sandbox, http: httpx.Client) -> None:
    sandbox.add_client(HOSTILE, "secret", redirect_uris=[CALLBACK])
    _, challenge = pkce()
    params = authorize_params(challenge, client_id=HOSTILE, state=HOSTILE, scope=f"read {HOSTILE}")
    params |= {"login_hint": f'"><script>x</script>{HOSTILE}', HOSTILE: HOSTILE}
    consent, page = open_consent(http, params)
    assert "<script" not in page.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; wants access" in page.text
    assert '<input type="text" id="user" name="user" value="&quot;&gt;&lt;script&gt;' in page.text
    answer = callback(decide(http, consent))
    assert answer["state"] == HOSTILE  # echoed intact, encoded in the query


def test_extra_parameters_are_listed_and_ignored(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    params = authorize_params(challenge) | {"access_type": "offline", "prompt": "consent", "nonce": ""}
    consent, page = open_consent(http, params)
    listed = page.text.split('<ul id="extra-parameters">', 1)[1].split("</ul>", 1)[0]
    assert "<li><code>access_type</code> = <code>offline</code></li>" in listed
    assert "<li><code>prompt</code> = <code>consent</code></li>" in listed
    assert "<li><code>nonce</code> = <code></code></li>" in listed
    assert "client_id" not in listed
    answer = callback(decide(http, consent))
    assert exchange(http, answer["code"], verifier).status_code == 200


def test_no_extra_parameters_says_so(http: httpx.Client) -> None:
    _, challenge = pkce()
    _, page = open_consent(http, authorize_params(challenge))
    assert '<ul id="extra-parameters">\n</ul>\n<p>None.</p>' in page.text


# --- the code exchange's refusals -------------------------------------------------------------------------


def test_a_wrong_verifier_is_invalid_grant_and_spends_the_code(sandbox: Sandbox, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    wrong, _ = pkce()
    description = assert_invalid_grant(exchange(http, code, wrong), code, wrong)
    assert "code_verifier" in description
    # One try per code: a verifier cannot be guessed at.
    assert_invalid_grant(exchange(http, code, verifier), code, verifier)
    stats = sandbox.stats()
    assert (stats.code_exchanges, stats.code_failures, stats.requests) == (0, 2, 0)


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "+"])
def test_a_malformed_verifier_is_invalid_grant(http: httpx.Client, verifier: str) -> None:
    _, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    assert_invalid_grant(exchange(http, code, verifier), code, verifier)


def test_the_challenge_itself_is_no_verifier(http: httpx.Client) -> None:
    _, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    assert_invalid_grant(exchange(http, code, challenge), code)  # what plain would have accepted


def test_the_redirect_uri_must_be_the_one_authorized(http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    description = assert_invalid_grant(exchange(http, code, verifier, QUERY_CALLBACK), code, verifier)
    assert "redirect_uri" in description


def test_a_code_of_another_client_is_invalid_grant(sandbox: Sandbox, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    description = assert_invalid_grant(exchange(http, code, verifier, auth=OTHER_AUTH), code, verifier)
    assert "another client" in description
    assert sandbox.stats().code_exchanges == 0


def test_a_code_expires_after_sixty_seconds(http: httpx.Client, clock: ManualClock) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    clock.advance(60)
    assert "expired" in assert_invalid_grant(exchange(http, code, verifier), code, verifier)


def test_a_code_just_inside_sixty_seconds_works(http: httpx.Client, clock: ManualClock) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    clock.advance(59)
    assert exchange(http, code, verifier).status_code == 200


def test_an_unknown_code_is_invalid_grant(http: httpx.Client) -> None:
    verifier, _ = pkce()
    assert "unknown" in assert_invalid_grant(exchange(http, "made-up-code", verifier), "made-up-code")


def test_a_replayed_code_revokes_the_grant_its_first_use_created(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    first = exchange(http, code, verifier).json()
    grant_id = sandbox.grant_of_refresh_token(first["refresh_token"])
    assert grant_id is not None
    rotated = refresh(http, first["refresh_token"]).json()["refresh_token"]  # the grant is in use

    assert "already used" in assert_invalid_grant(exchange(http, code, verifier), code, verifier)
    assert sandbox.describe(grant_id)["revoked"] is True
    assert refresh(http, rotated).json()["error"] == "invalid_grant"
    introspected = http.post("/oauth/introspect", data={"token": first["access_token"]}, auth=AUTH)
    assert introspected.json() == {"active": False}
    assert_invalid_grant(exchange(http, code, verifier), code, verifier)  # and again
    stats = sandbox.stats()
    assert (stats.code_exchanges, stats.code_failures) == (1, 2)


def test_a_replay_leaves_other_grants_alone(sandbox: Sandbox, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    kept = sandbox.issue_grant(SANDBOX_CLIENT_ID)
    other_verifier, other_challenge = pkce()
    other = exchange(http, obtain_code(http, other_challenge)["code"], other_verifier).json()
    code = obtain_code(http, challenge)["code"]
    assert exchange(http, code, verifier).status_code == 200
    assert_invalid_grant(exchange(http, code, verifier))
    assert refresh(http, kept.refresh_token).status_code == 200
    assert refresh(http, other["refresh_token"]).status_code == 200


@pytest.mark.parametrize("missing", ["code", "redirect_uri", "code_verifier"])
def test_a_missing_parameter_is_invalid_request(sandbox: Sandbox, http: httpx.Client, missing: str) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    del data[missing]
    response = http.post("/oauth/token", data=data, auth=AUTH)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request", "error_description": f"{missing} is required"}
    assert exchange(http, code, verifier).status_code == 200  # the code was not looked at
    assert sandbox.stats().code_failures == 0


@pytest.mark.parametrize("auth", [("app", "wrong"), ("nobody", "x"), None])
def test_client_authentication_comes_first(
    sandbox: Sandbox, http: httpx.Client, auth: tuple[str, str] | None
) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    response = exchange(http, code, verifier, auth=auth)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert SANDBOX_CLIENT_SECRET not in response.text
    assert exchange(http, code, verifier).status_code == 200  # an unauthenticated try does not spend it
    stats = sandbox.stats()
    assert (stats.requests, stats.by_behaviour, stats.code_failures) == (0, {}, 0)


def test_malformed_basic_credentials_are_refused_as_for_refreshes(http: httpx.Client) -> None:
    data = {"grant_type": "authorization_code", "code": "c", "redirect_uri": CALLBACK, "code_verifier": "v"}
    response = http.post("/oauth/token", data=data, headers={"authorization": "Basic !!!"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# --- outage, latency and stats ----------------------------------------------------------------------------


def test_an_outage_answers_code_exchanges_too(sandbox: Sandbox, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    sandbox.set_outage(Behaviour.UNAVAILABLE)
    outage = exchange(http, code, verifier)
    assert outage.status_code == 503
    assert "503 Service Unavailable" in outage.text
    assert exchange(http, code, verifier, auth=("app", "wrong")).status_code == 503
    sandbox.set_outage(Behaviour.RATE_LIMIT)
    assert exchange(http, code, verifier).status_code == 429
    sandbox.set_outage(None)
    assert exchange(http, code, verifier).status_code == 200  # the gateway answered: the code was kept
    stats = sandbox.stats()
    assert (stats.requests, stats.by_behaviour, stats.code_exchanges, stats.code_failures) == (0, {}, 1, 0)


def test_latency_delays_code_exchanges_as_it_delays_refreshes(sandbox: Sandbox, http: httpx.Client) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    sandbox.set_latency(0.2)
    started = time.monotonic()
    assert exchange(http, code, verifier).status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    open_consent(http, authorize_params(challenge))
    assert time.monotonic() - started < 0.2  # pages for the user are not delayed


def test_an_outage_leaves_the_authorization_endpoint_alone(sandbox: Sandbox, http: httpx.Client) -> None:
    _, challenge = pkce()
    sandbox.set_outage(Behaviour.UNAVAILABLE)
    consent, _ = open_consent(http, authorize_params(challenge))
    assert "code" in callback(decide(http, consent))


def test_the_authorization_code_counts_appear_in_the_full_stats_only(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]
    assert exchange(http, code, verifier).status_code == 200
    assert exchange(http, code, verifier).status_code == 400
    open_consent(http, authorize_params(challenge))
    full = http.get("/_sandbox/stats/full").json()
    counts = {k: full[k] for k in ("authorizations", "codes_issued", "code_exchanges", "code_failures")}
    assert counts == {"authorizations": 2, "codes_issued": 1, "code_exchanges": 1, "code_failures": 1}
    assert (full["requests"], full["refreshes_ok"], full["by_behaviour"]) == (0, 0, {})
    assert full["max_in_flight"] == 0
    # The original stats document keeps exactly its original five fields (existing callers compare it).
    assert "authorizations" not in http.get("/_sandbox/stats").json()
    assert http.post("/_sandbox/stats/reset").status_code == 200
    stats = sandbox.stats()
    assert (stats.authorizations, stats.codes_issued, stats.code_exchanges, stats.code_failures) == (
        0,
        0,
        0,
        0,
    )


# --- registering redirect URIs ----------------------------------------------------------------------------


def test_the_control_api_registers_redirect_uris(http: httpx.Client) -> None:
    body: dict[str, object] = {"client_id": "bench", "client_secret": "b", "access_token_lifetime": 120}
    body["redirect_uris"] = ["http://localhost:8080/cb"]
    assert http.post("/_sandbox/clients", json=body).status_code == 200
    verifier, challenge = pkce()
    answer = obtain_code(http, challenge, client_id="bench", redirect_uri="http://localhost:8080/cb")
    tokens = exchange(http, answer["code"], verifier, "http://localhost:8080/cb", auth=("bench", "b"))
    assert tokens.json()["expires_in"] == 120


@pytest.mark.parametrize(
    ("uris", "fragment"),
    [
        ("https://a.example/cb", "must be a list"),
        ({"uri": "https://a.example/cb"}, "must be a list"),
        ([3], "redirect_uris[0] must be a non-empty string"),
        ([None], "must be a non-empty string"),
        ([""], "must be a non-empty string"),
        (["https://a.example/cb", "/relative"], "redirect_uris[1] must be an absolute http or https URL"),
        (["a.example/cb"], "absolute http or https"),
        (["ftp://a.example/cb"], "absolute http or https"),
        (["javascript:alert(1)"], "absolute http or https"),
        (["https:///no-host"], "absolute http or https"),
        (["https://a.example/cb#top"], "fragment"),
        (["https://a.example/cb#"], "fragment"),
        (["https://a.example/c b"], "printable ASCII"),
        (["https://a.example/caf\u00e9"], "printable ASCII"),
        (["https://a.example:99999/cb"], "not a valid URL"),
        (["http://[::1/cb"], "not a valid URL"),
    ],
    ids=repr,
)
def test_bad_redirect_uris_get_400_and_change_nothing(
    sandbox: Sandbox, http: httpx.Client, uris: object, fragment: str
) -> None:
    for client_id in ("new-client", SANDBOX_CLIENT_ID):
        body = {"client_id": client_id, "client_secret": "changed", "redirect_uris": uris}
        response = http.post("/_sandbox/clients", json=body)
        assert response.status_code == 400
        assert fragment in response.json()["error"]
    with pytest.raises(ValueError, match="unknown client_id"):
        sandbox.issue_grant("new-client")
    verifier, challenge = pkce()
    answer = obtain_code(http, challenge)  # app keeps its redirect URIs and its secret
    assert exchange(http, answer["code"], verifier).status_code == 200


@pytest.mark.parametrize("lifetime", [-1, "3600", True, 1.5])
def test_a_bad_access_token_lifetime_gets_400(http: httpx.Client, lifetime: object) -> None:
    body = {"client_id": "x", "client_secret": "y", "access_token_lifetime": lifetime}
    response = http.post("/_sandbox/clients", json=body)
    assert response.status_code == 400
    assert "access_token_lifetime" in response.json()["error"]


def test_add_client_checks_redirect_uris_and_changes_nothing_on_error(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="not one string"):
        sandbox.add_client("x", "y", redirect_uris="https://a.example/cb")
    with pytest.raises(ValueError, match="fragment"):
        sandbox.add_client(SANDBOX_CLIENT_ID, "changed", redirect_uris=[CALLBACK, "https://a.example/#x"])
    with pytest.raises(ValueError, match="access_token_lifetime"):
        sandbox.add_client("x", "y", access_token_lifetime=-5)
    with pytest.raises(ValueError, match="unknown client_id"):
        sandbox.issue_grant("x")
    assert sandbox.authenticate(*AUTH)


def test_a_client_without_redirect_uris_cannot_use_the_code_grant(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    sandbox.add_client("legacy", "legacy-secret")  # positional arguments and defaults as before
    _, challenge = pkce()
    assert_refusal_page(http.get("/oauth/authorize", params=authorize_params(challenge, client_id="legacy")))


def test_a_client_without_redirect_uris_gets_unauthorized_client_at_the_token_endpoint(
    sandbox: Sandbox, http: httpx.Client
) -> None:
    sandbox.add_client("legacy", "legacy-secret")
    verifier, challenge = pkce()
    code = obtain_code(http, challenge)["code"]  # app's code, presented by a client that cannot have one
    response = exchange(http, code, verifier, auth=("legacy", "legacy-secret"))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    missing = http.post(
        "/oauth/token", data={"grant_type": "authorization_code"}, auth=("legacy", "legacy-secret")
    )
    assert missing.json()["error"] == "unauthorized_client"
    assert exchange(http, code, verifier).status_code == 200  # nothing was spent
    assert sandbox.stats().code_failures == 0


def test_grant_of_refresh_token_knows_only_current_tokens(sandbox: Sandbox) -> None:
    grant = sandbox.issue_grant(SANDBOX_CLIENT_ID)
    assert sandbox.grant_of_refresh_token(grant.refresh_token) == grant.grant_id
    assert sandbox.grant_of_refresh_token(grant.access_token) is None
    assert sandbox.grant_of_refresh_token("sbx-rt-nope") is None
    sandbox.revoke(grant.grant_id)
    assert sandbox.grant_of_refresh_token(grant.refresh_token) == grant.grant_id  # still its, revoked or not
    assert sandbox.describe(grant.grant_id)["user"] is None  # issued directly: nobody consented


# --- the command line -------------------------------------------------------------------------------------


def test_cli_takes_repeated_redirect_uris() -> None:
    argv = ["--client-id", "b", "--client-secret", "s", "--redirect-uri", CALLBACK]
    args = _parser().parse_args([*argv, "--redirect-uri", QUERY_CALLBACK])
    assert args.redirect_uris == [CALLBACK, QUERY_CALLBACK]
    assert _parser().parse_args([]).redirect_uris == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--client-id", "b", "--client-secret", "s", "--redirect-uri", "https://a.example/#frag"],
        ["--client-id", "b", "--client-secret", "s", "--redirect-uri", "/relative"],
        ["--redirect-uri", CALLBACK],  # no --client-id to register it for
    ],
)
def test_cli_refuses_bad_redirect_uris(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--port", "0"])
    assert exited.value.code == 2
    assert "redirect" in capsys.readouterr().err


def test_standalone_sandbox_serves_the_code_grant_for_its_client() -> None:
    command = [sys.executable, "-m", "grantkeeper.sandbox", "--port", "0"]
    command += ["--client-id", "bench", "--client-secret", "bench-secret", "--redirect-uri", CALLBACK]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            base = read_line(proc.stdout, timeout=10).removesuffix("/oauth/token")
            with httpx.Client(base_url=base, timeout=5) as http:
                verifier, challenge = pkce()
                answer = obtain_code(http, challenge, client_id="bench")
                tokens = exchange(http, answer["code"], verifier, auth=("bench", "bench-secret"))
                assert tokens.status_code == 200, tokens.text
                assert http.get("/_sandbox/stats/full").json()["code_exchanges"] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
        assert answer["code"] not in stderr  # nothing logs codes
        assert verifier not in stderr


# --- the issuer in authorization responses (RFC 9207) -----------------------------------------------------


def test_every_authorization_response_names_the_issuer(
    sandbox: Sandbox, sandbox_server: SandboxServer, http: httpx.Client
) -> None:
    """``serve_sandbox`` makes the sandbox an RFC 9207 server: codes, denials and error redirects all carry
    ``iss``, its base URL, beside what they carried before."""
    assert sandbox.issuer == sandbox_server.base_url
    _, challenge = pkce()
    code = obtain_code(http, challenge)
    assert (code["iss"], sorted(code)) == (sandbox_server.base_url, ["code", "iss", "state"])
    consent, _ = open_consent(http, authorize_params(challenge))
    denied = callback(decide(http, consent, "deny", ""))
    assert (denied["error"], denied["iss"]) == ("access_denied", sandbox_server.base_url)
    refused = callback(
        http.get("/oauth/authorize", params=authorize_params(challenge, response_type="token"))
    )
    assert (refused["error"], refused["iss"]) == ("unsupported_response_type", sandbox_server.base_url)


@pytest.mark.parametrize("issuer", [None, "https://idp.example.test"])
def test_the_issuer_can_be_left_out_or_named(
    sandbox: Sandbox, http: httpx.Client, issuer: str | None
) -> None:
    sandbox.set_issuer(issuer)
    _, challenge = pkce()
    code = obtain_code(http, challenge)
    assert code.get("iss") == issuer
