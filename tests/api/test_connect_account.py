"""A reconnect keeps the connection on its provider account: over real HTTP, the sandbox's consent page signs
in as a chosen user and its code exchange names that user as ``account_id``. On SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from tests.api.connect_support import ConnectRig, page_of


def _reconnect(rig: ConnectRig, connection_id: str, user: str) -> httpx.Response:
    browser = rig.browser()
    return browser.get(rig.to_callback(browser, rig.reconnect_link(connection_id), user=user))


def test_a_new_connection_remembers_its_account_and_a_reconnect_to_another_is_refused(rig):
    rig.add_provider(account_field="account_id")
    made = rig.acme.post("/v1/connect-sessions", json={"provider": "sandbox", "user_id": "u1"})
    browser = rig.browser()
    done = browser.get(rig.to_callback(browser, made.json()["url"], user="alice"))
    assert done.status_code == 200, done.text
    [created] = rig.acme.get("/v1/connections").json()["items"]
    assert created["account_id"] == "alice"

    assert _reconnect(rig, created["id"], "alice").status_code == 200  # the same account: fine
    before = rig.snapshot(created["id"])

    text = page_of(_reconnect(rig, created["id"], "mallory"), 409, "other_account")
    assert "That is a different sandbox account" in text
    assert "choose the account you connected before" in text
    assert rig.snapshot(created["id"]) == before  # tokens, state, account: as they were
    assert rig.connection(created["id"])["account_id"] == "alice"


def test_a_broken_connection_learns_its_account_at_its_first_reconnect(rig):
    rig.add_provider(account_field="account_id")
    connection_id = rig.broken_connection(workflows=("daily-sync",))  # made through the API: no account yet
    assert rig.connection(connection_id)["account_id"] is None

    # the wrong account first? nothing to compare with yet, so the first sign-in teaches it: it is the user's
    # own choice on the provider's page, exactly as when the connection was first made
    assert _reconnect(rig, connection_id, "bob").status_code == 200
    record = rig.connection(connection_id)
    assert (record["status"], record["account_id"]) == ("connected", "bob")

    link = rig.reconnect_link(connection_id)
    browser = rig.browser()
    refused = browser.get(rig.to_callback(browser, link, user="carol"))
    page_of(refused, 409, "other_account")
    assert rig.connection(connection_id)["account_id"] == "bob"
    # the refusal used up the sign-in, not the link: the right account still reconnects with it
    again = rig.browser()
    assert again.get(rig.to_callback(again, link, user="bob")).status_code == 200


def test_a_provider_that_does_not_name_the_account_where_told_is_refused_with_nothing_changed(rig):
    rig.add_provider(account_field="id_token.sub")  # the sandbox sends account_id, never an id_token
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)

    text = page_of(_reconnect(rig, connection_id, "alice"), 502, "account_unknown")
    assert "sandbox did not say which account this is" in text
    assert rig.snapshot(connection_id) == before


def test_a_provider_without_an_account_field_reconnects_any_account_as_before(rig):
    rig.add_provider()
    connection_id = rig.broken_connection()
    assert _reconnect(rig, connection_id, "alice").status_code == 200
    assert rig.connection(connection_id)["account_id"] is None  # nothing asked, nothing stored
    assert rig.acme.get("/v1/providers").json()[0]["account_field"] is None


@pytest.mark.parametrize("field", ["", "a..b", "id_token", "a b", "x" * 201])
def test_a_bad_account_field_is_refused_and_no_provider_is_made(rig, field):
    response = rig.acme.post(
        "/v1/providers",
        json={"name": "p", "token_url": rig.server.token_url, "client_id": "c", "client_secret": "s",
              "account_field": field},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert rig.acme.get("/v1/providers").json() == []
