"""RFC 9207: where a provider names its issuer, a callback must carry it as ``iss``, or its code is never
redeemed. Over real HTTP: the sandbox sends ``iss`` (its base URL) in every authorization response, as a
server supporting RFC 9207 does, or none at all (``set_issuer(None)``). On SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from tests.api.connect_support import Browser, ConnectRig, page_of, query


def _callback(rig: ConnectRig, connection_id: str) -> tuple[Browser, str]:
    browser = rig.browser()
    return browser, rig.to_callback(browser, rig.reconnect_link(connection_id))


def _with_iss(callback: str, iss: str) -> str:
    """The callback as a mix-up would send it: the same code and state, another server's name."""
    params = query(callback) | {"iss": iss}
    return callback.split("?")[0] + "?" + urlencode(params)


def test_a_callback_naming_the_providers_issuer_reconnects(rig: ConnectRig) -> None:
    rig.add_provider(issuer=rig.server.base_url)
    connection_id = rig.broken_connection()
    browser, callback = _callback(rig, connection_id)
    assert query(callback)["iss"] == rig.server.base_url  # the sandbox sends it, as RFC 9207 servers do

    done = browser.get(callback)
    assert done.status_code == 200, done.text
    assert rig.connection(connection_id)["status"] == "connected"
    assert rig.acme.get("/v1/providers").json()[0]["issuer"] == rig.server.base_url


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example.test",
        "HTTP://127.0.0.1",  # no case folding: the identifier is compared exactly (RFC 9207 section 2.4)
        "trailing-slash",
    ],
)
def test_a_callback_naming_another_issuer_is_refused_and_its_code_never_redeemed(
    rig: ConnectRig, iss: str
) -> None:
    rig.add_provider(issuer=rig.server.base_url)
    connection_id = rig.broken_connection(workflows=("daily-sync",))
    before = rig.snapshot(connection_id)
    browser, callback = _callback(rig, connection_id)
    other = rig.server.base_url + "/" if iss == "trailing-slash" else iss
    exchanges = rig.sandbox.stats().code_exchanges

    text = page_of(browser.get(_with_iss(callback, other)), 400, "wrong_issuer")

    assert "This answer did not come from sandbox" in text
    assert "naming another server than sandbox" in text
    assert rig.sandbox.stats().code_exchanges == exchanges  # the code never left for any token endpoint
    assert rig.snapshot(connection_id) == before
    # the state is used up: replaying the genuine callback is refused, not redeemed
    page_of(browser.get(callback), 400, "state_used")
    assert rig.sandbox.stats().code_exchanges == exchanges


def test_a_callback_without_iss_is_refused_where_the_provider_names_its_issuer(rig: ConnectRig) -> None:
    rig.sandbox.set_issuer(None)  # a server without RFC 9207, or an attacker leaving iss out
    rig.add_provider(issuer=rig.server.base_url)
    connection_id = rig.broken_connection()
    before = rig.snapshot(connection_id)
    browser, callback = _callback(rig, connection_id)
    assert "iss" not in query(callback)
    exchanges = rig.sandbox.stats().code_exchanges

    text = page_of(browser.get(callback), 400, "wrong_issuer")
    assert "without the name of the server that answered" in text
    assert rig.sandbox.stats().code_exchanges == exchanges
    assert rig.snapshot(connection_id) == before


def test_an_error_answer_is_checked_too(rig: ConnectRig) -> None:
    """RFC 9207 puts iss in error responses as well: a denial from another server is not believed either."""
    rig.add_provider(issuer=rig.server.base_url)
    connection_id = rig.broken_connection()
    browser = rig.browser()
    started = browser.open_link(rig.reconnect_link(connection_id))
    denied = browser.consent(started.headers["location"], decision="deny")
    assert query(denied)["iss"] == rig.server.base_url
    page_of(browser.get(denied), 400, "provider_error")  # the genuine denial: "You declined access"
    started = browser.open_link(rig.reconnect_link(connection_id))
    denied = browser.consent(started.headers["location"], decision="deny")
    page_of(browser.get(_with_iss(denied, "https://evil.example.test")), 400, "wrong_issuer")


@pytest.mark.parametrize("sends_iss", [True, False])
def test_a_provider_without_an_issuer_is_not_checked(rig: ConnectRig, sends_iss: bool) -> None:
    if not sends_iss:
        rig.sandbox.set_issuer(None)
    rig.add_provider()
    connection_id = rig.broken_connection()
    browser, callback = _callback(rig, connection_id)
    assert ("iss" in query(callback)) is sends_iss
    assert browser.get(callback).status_code == 200
    assert rig.connection(connection_id)["status"] == "connected"
    assert rig.acme.get("/v1/providers").json()[0]["issuer"] is None


@pytest.mark.parametrize(
    ("issuer", "words"),
    [
        ("http://idp.example.test", "must use https"),
        ("https://idp.example.test/?tenant=1", "must not have a ?query"),
        ("https://idp.example.test/#x", "must not have a #fragment"),
        ("https://user:pw@idp.example.test", "must not contain credentials"),
        ("not a url", "issuer"),
    ],
)
def test_a_bad_issuer_is_refused_and_no_provider_is_made(rig: ConnectRig, issuer: str, words: str) -> None:
    response: httpx.Response = rig.acme.post(
        "/v1/providers",
        json={"name": "p", "token_url": rig.server.token_url, "client_id": "c", "client_secret": "s",
              "issuer": issuer},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert words in response.text
    assert rig.acme.get("/v1/providers").json() == []
