"""Reconnect in one click, over real HTTP with cookie jars: the API, ``/connect``, the sandbox's consent page,
``/oauth/callback``; on SQLite and PostgreSQL. Then every attack the flow must refuse, each with a clear page
and nothing changed."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from grantkeeper.adapters.db.tables import authorization_requests, connect_sessions
from tests.api.connect_support import ALLOWED_RETURN, ConnectRig, page_of, query


def _requests_used(rig: ConnectRig) -> int:
    with rig.runtime.engine.connect() as connection:
        query_ = select(func.count()).where(authorization_requests.c.used_at.is_not(None))
        return int(connection.scalar(query_) or 0)


# --- the whole flow -------------------------------------------------------------------------------------


def test_a_broken_connection_is_reconnected_once_with_counters_reset_and_workflows_resumed(rig):
    rig.add_provider()
    connection_id = rig.broken_connection(workflows=("daily-sync", "crm-export"))
    old_token = rig.stored_refresh_token(connection_id)
    assert {w["status"] for w in rig.acme.get("/v1/workflows").json()} == {"paused"}
    browser = rig.browser()

    link = rig.reconnect_link(connection_id)
    started = browser.open_link(link)
    assert started.status_code == 303
    location = started.headers["location"]
    assert location.startswith(rig.server.authorize_url + "?")
    sent = query(location)
    assert sent["response_type"] == "code"
    assert sent["client_id"] == "app"
    assert sent["redirect_uri"] == rig.base_url + "/oauth/callback"
    assert sent["scope"] == "files.read offline"
    assert sent["code_challenge_method"] == "S256"
    assert len(sent["code_challenge"]) == 43
    assert sent["prompt"] == "consent"  # the provider's extra authorization parameter
    cookie = started.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie

    callback = browser.consent(location)
    done = browser.get(callback)

    assert done.status_code == 200, done.text
    assert 'id="connected"' in done.text
    assert "sandbox reconnected" in done.text
    assert "daily-sync" in done.text
    assert "crm-export" in done.text
    record = rig.connection(connection_id)
    assert record["status"] == "connected"
    assert record["consecutive_failures"] == 0
    assert record["consecutive_transient_failures"] == 0
    assert record["disconnect_reason"] is None
    assert rig.stored_refresh_token(connection_id) not in (None, old_token)
    assert {w["status"] for w in rig.acme.get("/v1/workflows").json()} == {"active"}
    types = [n["type"] for n in rig.acme.get("/v1/notifications").json()]
    assert types.count("integration_recovered") == 1
    # the new grant works: the token endpoint hands out a fresh access token through it
    token = rig.acme.get(f"/v1/connections/{connection_id}/token", params={"min_validity": 7200})
    assert token.status_code == 200, token.text

    # once: the same callback again changes nothing
    before = rig.snapshot(connection_id)
    page_of(browser.get(callback), 400, "state_used")
    assert rig.snapshot(connection_id) == before
    assert [n["type"] for n in rig.acme.get("/v1/notifications").json()].count("integration_recovered") == 1
    # and the link is spent
    page_of(browser.open_link(link), 410, "link_used")


def test_a_connect_session_creates_a_connection_and_returns_to_the_allowed_url(rig):
    rig.add_provider()
    response = rig.acme.post(
        "/v1/connect-sessions",
        json={
            "provider": "sandbox",
            "user_id": "new-user",
            "email": "n@example.test",
            "return_to": ALLOWED_RETURN,
        },
    )
    assert response.status_code == 201, response.text
    link = response.json()["url"]
    assert link.startswith(rig.base_url + "/connect/session/")
    browser = rig.browser()

    done = browser.get(rig.to_callback(browser, link))

    assert done.status_code == 303
    back = done.headers["location"]
    assert back.startswith(ALLOWED_RETURN + "?")
    connection_id = query(back)["connection_id"]
    assert query(back)["result"] == "connected"
    record = rig.connection(connection_id)
    assert record["user_id"] == "new-user"
    assert record["status"] == "connected"
    assert rig.stored_refresh_token(connection_id)


def test_the_email_link_kind_works_once(rig):
    """The signed link an email carries (``/connect/{id}?token=``) runs the same flow, and only once."""
    rig.add_provider()
    connection_id = rig.broken_connection()
    link = rig.signed_link(connection_id)
    browser = rig.browser()

    done = browser.get(rig.to_callback(browser, link))

    assert done.status_code == 200, done.text
    assert rig.connection(connection_id)["status"] == "connected"
    page_of(browser.open_link(link), 410, "link_used")


def test_declining_at_the_provider_changes_nothing(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    browser = rig.browser()
    started = browser.open_link(rig.reconnect_link(connection_id))

    back = browser.consent(started.headers["location"], decision="deny")
    assert query(back)["error"] == "access_denied"
    page = page_of(browser.get(back), 400, "provider_error")

    assert "You declined access to sandbox" in page
    assert rig.snapshot(connection_id) == before


# --- attacks ---------------------------------------------------------------------------------------------


def test_a_state_from_another_browser_is_refused_and_the_right_browser_still_finishes(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    victim, attacker = rig.browser(), rig.browser()
    callback = rig.to_callback(victim, rig.reconnect_link(connection_id))

    page_of(attacker.get(callback), 400, "other_browser")
    assert rig.snapshot(connection_id) == before

    assert victim.get(callback).status_code == 200
    assert rig.connection(connection_id)["status"] == "connected"


def test_a_callback_without_any_browser_cookie_ispage_of(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    callback = rig.to_callback(rig.browser(), rig.reconnect_link(connection_id))

    page_of(httpx.get(callback, timeout=30), 400, "other_browser")
    assert rig.snapshot(connection_id) == before


def test_expired_and_tampered_links_arepage_of(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    browser = rig.browser()
    link = rig.reconnect_link(connection_id, ttl_seconds=60)
    signed = rig.signed_link(connection_id)

    page_of(
        browser.open_link(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")), 404, "link_invalid"
    )
    page_of(browser.open_link(signed.replace("token=", "token=x")), 400, "link_invalid")
    other = rig.broken_connection("u2", workflows=())
    page_of(browser.open_link(signed.replace(connection_id, other)), 400, "link_invalid")
    rig.clock.advance(timedelta(seconds=61))
    page_of(browser.open_link(link), 410, "link_expired")
    rig.clock.advance(timedelta(hours=2))
    page_of(browser.open_link(signed), 400, "link_invalid")

    assert rig.snapshot(connection_id) == before
    assert _requests_used(rig) == 0


def test_a_link_for_another_tenants_connection_is_not_made(rig):
    rig.add_provider()
    rig.add_provider(rig.globex)
    connection_id = rig.broken_connection()

    response = rig.globex.post(f"/v1/connections/{connection_id}/reconnect-link", json={})

    assert response.status_code == 404
    assert response.json()["type"] == "urn:grantkeeper:problem:not-found"
    assert response.json()["detail"] == "no such connection"  # as if it did not exist
    response = rig.globex.post("/v1/connect-sessions", json={"provider": "nope", "user_id": "u"})
    assert response.status_code == 422


def test_a_return_url_off_the_allow_list_ispage_of(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    evil = "https://evil.example/phish"

    response = rig.acme.post(f"/v1/connections/{connection_id}/reconnect-link", json={"return_to": evil})
    assert response.status_code == 422, response.text
    sneaky_urls = (
        evil,
        "https://app.example.test.evil.example/integrations",
        "https://app.example.test@evil.example/integrations",
        "https://app.example.test/integrationsX",
        "//evil.example/",
        "javascript:alert(1)",
    )
    for sneaky in sneaky_urls:
        link = rig.reconnect_link(connection_id)
        page = page_of(rig.browser().get(link, params={"return_to": sneaky}), 400, "return_url_not_allowed")
        assert "evil.example" not in page

    assert rig.snapshot(connection_id) == before
    assert _requests_used(rig) == 0


def test_a_code_redeemed_with_the_wrong_pkce_verifier_ispage_of(rig):
    """Code injection: a code meant for the victim's flow, delivered through the attacker's own flow (whose
    verifier does not match its challenge), is refused by the provider; nothing changes."""
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    victim, attacker = rig.browser(), rig.browser()
    stolen_code = query(rig.to_callback(victim, rig.reconnect_link(connection_id)))["code"]
    attackers_callback = rig.to_callback(attacker, rig.reconnect_link(connection_id))
    forged = attackers_callback.replace(f"code={query(attackers_callback)['code']}", f"code={stolen_code}")

    page = page_of(attacker.get(forged), 502, "exchange_failed")

    assert "invalid_grant" in page
    assert stolen_code not in page
    assert rig.snapshot(connection_id) == before


def test_a_code_replayed_at_the_callback_ispage_of(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    browser = rig.browser()
    first = rig.to_callback(browser, rig.reconnect_link(connection_id))
    assert browser.get(first).status_code == 200
    after = rig.snapshot(connection_id)

    # the same callback: its state is spent
    page_of(browser.get(first), 400, "state_used")
    # the same code under a fresh state of this browser: the provider refuses a used code
    fresh = rig.to_callback(browser, rig.reconnect_link(connection_id))
    replayed = fresh.replace(f"code={query(fresh)['code']}", f"code={query(first)['code']}")
    page_of(browser.get(replayed), 502, "exchange_failed")

    assert rig.snapshot(connection_id) == after


def test_callbacks_with_unknown_missing_or_expired_state_arepage_of(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    browser = rig.browser()
    callback = rig.to_callback(browser, rig.reconnect_link(connection_id))

    page_of(browser.get(rig.base_url + "/oauth/callback", params={"code": "x"}), 400, "state_missing")
    page_of(browser.get(rig.base_url + "/oauth/callback", params={"code": "x", "state": "forged"}), 400,
             "state_unknown")  # fmt: skip
    rig.clock.advance(timedelta(minutes=11))
    page_of(browser.get(callback), 400, "state_expired")

    assert rig.snapshot(connection_id) == before


def test_secrets_never_reach_the_logs(rig, caplog):
    caplog.set_level(logging.DEBUG)
    rig.add_provider()
    connection_id = rig.broken_connection()
    browser = rig.browser()
    link = rig.reconnect_link(connection_id)
    callback = rig.to_callback(browser, link)
    assert browser.get(callback).status_code == 200

    secret = link.rsplit("/", 1)[1]
    values = [secret, query(callback)["code"], query(callback)["state"], browser.client.cookies["gk_browser"]]
    # the server's logs (the test's own HTTP client logs every URL it requests, at DEBUG)
    server_log = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith(("grantkeeper", "uvicorn"))
    )
    for value in values:
        assert value not in server_log
    assert "GET /connect/session/<secret> 303" in server_log  # the access log saw the link, redacted
    assert "GET /oauth/callback 200" in server_log


def test_a_provider_without_an_authorize_url_gets_no_link_and_nothing_is_stored(rig):
    rig.add_provider(authorize_url=None)
    connection_id = rig.broken_connection()

    response = rig.acme.post(f"/v1/connections/{connection_id}/reconnect-link", json={})
    assert response.status_code == 422, response.text
    assert "authorize URL" in response.json()["detail"]
    response = rig.acme.post("/v1/connect-sessions", json={"provider": "sandbox", "user_id": "u9"})
    assert response.status_code == 422, response.text

    with rig.runtime.engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(connect_sessions)) == 0
