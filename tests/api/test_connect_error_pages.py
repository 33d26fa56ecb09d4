"""What a person's browser sees when something other than the flow itself goes wrong on ``/connect/...`` or
``/oauth/callback``: a server started without its encryption keys, a query string the API refuses, a path that
does not exist. Each ends on the connect page with a status and a reason, never on a JSON problem document,
and changes nothing. On SQLite and PostgreSQL, over real HTTP."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from grantkeeper.adapters.db.tables import authorization_requests, connect_sessions
from tests.api.connect_support import ConnectRig, page_of


def _flow_rows(rig: ConnectRig) -> tuple[int, int, int]:
    """Links, authorization requests started, links completed: what opening a link could change."""
    with rig.runtime.engine.connect() as connection:
        links = connection.scalar(select(func.count()).select_from(connect_sessions))
        started = connection.scalar(select(func.count()).select_from(authorization_requests))
        used = connection.scalar(select(func.count()).where(connect_sessions.c.completed_at.is_not(None)))
    return int(links or 0), int(started or 0), int(used or 0)


def test_a_server_without_its_encryption_keys_answers_a_link_with_apage_of(rig, api_factory):
    rig.add_provider()
    made = rig.acme.post("/v1/connect-sessions", json={"provider": "sandbox", "user_id": "u1"})
    assert made.status_code == 201, made.text
    link = made.json()["url"]
    path = link.removeprefix(rig.base_url)
    before = _flow_rows(rig)

    keyless = api_factory(
        encryption_keys=None
    )  # the same database, started without GRANTKEEPER_ENCRYPTION_KEYS
    with httpx.Client(base_url=keyless.base_url, timeout=30) as browser:
        text = page_of(browser.get(path), 503, "encryption-key-missing")
    assert "Service misconfigured" in text
    assert "GRANTKEEPER_ENCRYPTION_KEYS" in text
    assert "try the link again" in text
    assert path.rsplit("/", 1)[1] not in text  # the link's secret is not echoed
    assert _flow_rows(rig) == before

    # the link was not used up: the configured server still starts the flow with it
    started = rig.browser().open_link(link)
    assert started.status_code == 303, started.text
    assert started.headers["location"].startswith(rig.server.authorize_url + "?")


def test_a_query_string_the_pages_refuse_answers_with_a_page_and_changes_nothing(rig):
    rig.add_provider()
    made = rig.acme.post("/v1/connect-sessions", json={"provider": "sandbox", "user_id": "u2"})
    link = made.json()["url"]
    before = _flow_rows(rig)
    browser = rig.browser()

    text = page_of(
        browser.get(link, params={"return_to": "https://a.example/" + "x" * 5000}), 422, "validation-error"
    )
    assert "The request is not valid." in text
    assert "x" * 100 not in text  # the refused value is not echoed
    page_of(
        browser.get(rig.base_url + "/oauth/callback", params={"state": "s" * 5000}), 422, "validation-error"
    )
    page_of(browser.get(rig.base_url + "/connect/"), 404, "not-found")
    page_of(browser.client.post(link), 405, "method-not-allowed")
    assert _flow_rows(rig) == before

    # the API's own errors stay problem documents
    refused = httpx.post(rig.base_url + "/v1/connect-sessions", json={}, timeout=30)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
