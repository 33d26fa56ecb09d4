"""``/v1/webhooks``, ``/v1/channels``, ``/v1/users/{user_id}/preferences`` and ``/v1/deliveries`` (issue 4),
served for real on SQLite and PostgreSQL: status codes and bodies, bad input changing nothing, tenant
isolation, and no Slack or Discord URL path (the credential) or webhook signing secret in any response but
the 201 that creates the webhook, nor in any log line."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import pytest

from grantkeeper.adapters.db.destinations import record_outcome
from grantkeeper.ports import DeliveryResult
from grantkeeper.sandbox import Behaviour

SLACK_SECRET_PATH = "/services/T0API/B0API/s3cr3tSlackPathApi"
SLACK_URL = "https://hooks.slack.com" + SLACK_SECRET_PATH
DISCORD_SECRET_PATH = "/api/webhooks/4242/d1sc0rdTokenApi"
DISCORD_URL = "https://discord.com" + DISCORD_SECRET_PATH
WEBHOOK_URL = "https://app.example.test/hooks/grantkeeper"
CREDENTIALS = (SLACK_SECRET_PATH, DISCORD_SECRET_PATH, "s3cr3tSlackPathApi", "d1sc0rdTokenApi")
DESTINATION_FIELDS = {
    "id",
    "url",
    "status",
    "consecutive_failures",
    "last_error",
    "disabled_at",
    "created_at",
}


def assert_no_credentials(text: str, *secrets: str) -> None:
    for secret in (*CREDENTIALS, *secrets):
        assert secret not in text, secret


def add_webhook(client, url: str = WEBHOOK_URL) -> dict:
    response = client.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 201, response.text
    return response.json()


def add_channel(client, kind: str = "slack", url: str = SLACK_URL, **fields) -> dict:
    response = client.post("/v1/channels", json={"kind": kind, "url": url} | fields)
    assert response.status_code == 201, response.text
    return response.json()


def everything_listed(client) -> str:
    return "\n".join(
        client.get(path).text
        for path in ("/v1/webhooks", "/v1/channels", "/v1/deliveries", "/v1/notifications")
    )


def test_create_webhook_answers_201_with_its_secret_once(acme):
    created = add_webhook(acme)

    assert set(created) == DESTINATION_FIELDS | {"secret"}
    assert (created["url"], created["status"], created["consecutive_failures"]) == (WEBHOOK_URL, "enabled", 0)
    assert created["id"].startswith("dst_")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    listed = acme.get("/v1/webhooks")
    assert listed.status_code == 200
    assert [w["id"] for w in listed.json()] == [created["id"]]
    assert set(listed.json()[0]) == DESTINATION_FIELDS
    assert_no_credentials(everything_listed(acme), secret)
    assert add_webhook(acme)["secret"] != secret


def test_create_channel_answers_201_with_the_url_host_only(acme):
    slack = add_channel(acme)
    discord = add_channel(acme, "discord", DISCORD_URL, user_id="ana")

    assert set(slack) == DESTINATION_FIELDS | {"kind", "user_id"}
    assert (slack["kind"], slack["user_id"], slack["url"]) == ("slack", None, "https://hooks.slack.com/…")
    assert (discord["kind"], discord["user_id"], discord["url"]) == (
        "discord",
        "ana",
        "https://discord.com/…",
    )
    listed = acme.get("/v1/channels").json()
    assert [c["id"] for c in listed] == [slack["id"], discord["id"]]
    assert acme.get("/v1/webhooks").json() == []  # chat channels are not webhooks
    assert_no_credentials(str(slack) + str(discord) + everything_listed(acme))


def test_plain_http_is_accepted_to_a_loopback_host(acme):
    assert add_webhook(acme, "http://127.0.0.1:9/hook")["url"] == "http://127.0.0.1:9/hook"
    assert add_channel(acme, "discord", "http://localhost:9/api/webhooks/1/x")["kind"] == "discord"


BAD_BODIES = [
    ("/v1/webhooks", {"url": "http://app.example.test/hook"}, "invalid-input"),
    ("/v1/webhooks", {"url": "ftp://app.example.test/hook"}, "invalid-input"),
    ("/v1/webhooks", {"url": "https://user:pw@app.example.test/hook"}, "invalid-input"),
    ("/v1/webhooks", {"url": "https://app.example.test/" + "a" * 2001}, "validation-error"),
    ("/v1/webhooks", {"url": ""}, "validation-error"),
    ("/v1/webhooks", {}, "validation-error"),
    ("/v1/webhooks", {"url": WEBHOOK_URL, "secret": "mine"}, "validation-error"),
    ("/v1/webhooks", ["not", "an", "object"], "validation-error"),
    ("/v1/channels", {"kind": "slack", "url": "http://hooks.slack.com" + SLACK_SECRET_PATH}, "invalid-input"),
    ("/v1/channels", {"kind": "teams", "url": SLACK_URL}, "validation-error"),
    ("/v1/channels", {"kind": "webhook", "url": SLACK_URL}, "validation-error"),
    ("/v1/channels", {"url": SLACK_URL}, "validation-error"),
    ("/v1/channels", {"kind": "slack", "url": SLACK_URL, "user_id": "u" * 256}, "validation-error"),
    ("/v1/channels", {"kind": "slack", "url": SLACK_URL, "user_id": ""}, "validation-error"),
    ("/v1/channels", {"kind": "slack", "url": SLACK_URL, "user_id": "   "}, "invalid-input"),
    ("/v1/channels", {"kind": "slack", "url": SLACK_URL, "user_id": "a\x00b"}, "validation-error"),
]


def test_bad_destination_bodies_answer_422_and_change_nothing(acme, problem, subtests):
    add_channel(acme)
    before = (acme.get("/v1/webhooks").json(), acme.get("/v1/channels").json())

    for path, body, slug in BAD_BODIES:
        with subtests.test(f"{path} {str(body)[:60]}"):
            response = acme.post(path, json=body)
            problem(response, 422, slug)
            assert_no_credentials(response.text)

    assert (acme.get("/v1/webhooks").json(), acme.get("/v1/channels").json()) == before


def test_unknown_ids_and_ids_of_the_other_kind_answer_404(acme, problem):
    webhook = add_webhook(acme)
    channel = add_channel(acme)
    for method, path in [
        ("DELETE", "/v1/webhooks/dst_nope"),
        ("POST", "/v1/webhooks/dst_nope/enable"),
        ("DELETE", "/v1/channels/dst_nope"),
        ("POST", "/v1/channels/dst_nope/enable"),
        ("DELETE", f"/v1/webhooks/{channel['id']}"),
        ("POST", f"/v1/webhooks/{channel['id']}/enable"),
        ("DELETE", f"/v1/channels/{webhook['id']}"),
        ("POST", f"/v1/channels/{webhook['id']}/enable"),
    ]:
        problem(acme.request(method, path), 404, "not-found")
    assert [w["id"] for w in acme.get("/v1/webhooks").json()] == [webhook["id"]]
    assert [c["id"] for c in acme.get("/v1/channels").json()] == [channel["id"]]


def test_delete_removes_the_destination(acme, problem):
    webhook = add_webhook(acme)
    channel = add_channel(acme)
    assert acme.delete(f"/v1/webhooks/{webhook['id']}").status_code == 204
    assert acme.delete(f"/v1/channels/{channel['id']}").status_code == 204
    assert acme.get("/v1/webhooks").json() == acme.get("/v1/channels").json() == []
    problem(acme.delete(f"/v1/webhooks/{webhook['id']}"), 404, "not-found")


def test_another_tenant_cannot_see_remove_or_enable_destinations(acme, globex, problem):
    webhook = add_webhook(acme)
    channel = add_channel(acme, user_id="ana")
    acme.patch("/v1/users/ana/preferences", json={"slack": False})
    own = add_webhook(globex, "https://globex.example.test/hook")

    assert [w["id"] for w in globex.get("/v1/webhooks").json()] == [own["id"]]
    assert globex.get("/v1/channels").json() == []
    for method, path in [
        ("DELETE", f"/v1/webhooks/{webhook['id']}"),
        ("POST", f"/v1/webhooks/{webhook['id']}/enable"),
        ("DELETE", f"/v1/channels/{channel['id']}"),
        ("POST", f"/v1/channels/{channel['id']}/enable"),
    ]:
        problem(globex.request(method, path), 404, "not-found")
    problem(globex.get("/v1/deliveries", params={"destination_id": webhook["id"]}), 422, "invalid-input")
    assert globex.get("/v1/users/ana/preferences").json()["updated_at"] is None
    assert globex.get("/v1/users/ana/preferences").json()["slack"] is True

    assert [w["id"] for w in acme.get("/v1/webhooks").json()] == [webhook["id"]]
    assert [c["id"] for c in acme.get("/v1/channels").json()] == [channel["id"]]
    assert acme.get("/v1/users/ana/preferences").json()["slack"] is False
    assert webhook["id"] not in everything_listed(globex)


def test_a_disabled_webhook_shows_in_the_listing_until_enabled(api, acme):
    webhook = add_webhook(acme)
    channel = add_channel(acme)
    disabled_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with api.runtime.store.engine.begin() as connection:
        for destination in (webhook, channel):
            record_outcome(
                connection,
                destination["id"],
                is_delivered=False,
                error="http_410",
                failure_limit=1,
                at=disabled_at,
            )

    (listed,) = acme.get("/v1/webhooks").json()
    assert (listed["status"], listed["consecutive_failures"], listed["last_error"]) == (
        "disabled",
        1,
        "http_410",
    )
    assert datetime.fromisoformat(listed["disabled_at"]) == disabled_at
    assert acme.get("/v1/channels").json()[0]["status"] == "disabled"

    enabled = acme.post(f"/v1/webhooks/{webhook['id']}/enable")
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["status"], enabled.json()["consecutive_failures"]) == ("enabled", 0)
    assert enabled.json()["disabled_at"] is None
    assert "secret" not in enabled.json()
    assert acme.post(f"/v1/channels/{channel['id']}/enable").json()["status"] == "enabled"


def test_preferences_default_and_patch_merges_partial_changes(acme):
    defaults = acme.get("/v1/users/ana/preferences")
    assert defaults.status_code == 200
    assert defaults.json() == {
        "user_id": "ana",
        "email": True,
        "slack": True,
        "discord": True,
        "warning_email": "immediate",
        "email_address": None,
        "updated_at": None,
    }
    first = acme.patch(
        "/v1/users/ana/preferences", json={"warning_email": "digest", "email_address": "ana@example.test"}
    )
    assert first.status_code == 200, first.text
    changed = acme.patch("/v1/users/ana/preferences", json={"slack": False}).json()
    assert (changed["slack"], changed["warning_email"], changed["email_address"]) == (
        False,
        "digest",
        "ana@example.test",
    )
    assert (changed["email"], changed["discord"]) == (True, True)
    assert datetime.fromisoformat(changed["updated_at"]).utcoffset() is not None
    cleared = acme.patch("/v1/users/ana/preferences", json={"email_address": None}).json()
    assert (cleared["email_address"], cleared["slack"], cleared["warning_email"]) == (None, False, "digest")
    assert acme.patch("/v1/users/ana/preferences", json={}).json() == cleared  # nothing to change
    assert acme.get("/v1/users/ana/preferences").json() == cleared
    assert acme.get("/v1/users/bob/preferences").json()["updated_at"] is None


BAD_PATCHES = [
    {"email": None},
    {"slack": "off"},
    {"warning_email": "weekly"},
    {"warning_email": None},
    {"email_address": "not-an-address"},
    {"email_address": "a" * 320 + "@example.test"},
    {"email_address": "ana@example.test\n"},
    {"sms": True},
]


def test_bad_preference_patches_answer_422_and_change_nothing(acme, problem, subtests):
    before = acme.patch("/v1/users/ana/preferences", json={"discord": False}).json()
    for body in BAD_PATCHES:
        with subtests.test(str(body)[:60]):
            problem(acme.patch("/v1/users/ana/preferences", json=body), 422, "validation-error")
    with subtests.test("user id too long"):
        problem(acme.get("/v1/users/" + "u" * 256 + "/preferences"), 422, "validation-error")
    with subtests.test("blank user id"):
        problem(acme.patch("/v1/users/%20/preferences", json={"email": False}), 422, "invalid-input")
    assert acme.get("/v1/users/ana/preferences").json() == before


@pytest.fixture
def failed_deliveries(api, acme, sandbox_provider, connect) -> dict:
    """A disconnection fanned out to a tenant-wide Slack channel and a webhook; the Slack attempt failed (and,
    at a failure limit of 1, disabled the channel), the webhook attempt succeeded."""
    slack = add_channel(acme)
    webhook = add_webhook(acme)
    broken = connect(acme, "ana", behaviour=Behaviour.CONSENT_REQUIRED)
    assert acme.get(f"/v1/connections/{broken.id}/token").status_code == 409  # disconnected, notified
    store = api.runtime.store
    now = datetime.now(UTC) + timedelta(seconds=1)
    items = store.claim_outbox(now, 10, "test-dispatcher", timedelta(minutes=1), ["slack", "webhook"])
    assert sorted(item.channel for item in items) == ["slack", "webhook"]
    for item in items:
        result = DeliveryResult(True) if item.channel == "webhook" else DeliveryResult(False, "http_500")
        assert store.record_delivery(item, result, now, timedelta(milliseconds=42), None, failure_limit=1)
    return {"slack": slack, "webhook": webhook}


def test_deliveries_list_attempts_newest_first_with_filters(acme, failed_deliveries, problem):
    response = acme.get("/v1/deliveries")
    assert response.status_code == 200
    attempts = {a["channel"]: a for a in response.json()}
    assert set(attempts) == {"slack", "webhook"}
    assert set(attempts["slack"]) == {
        "outbox_id", "channel", "destination_id", "notification_id", "event",
        "attempted_at", "delivered", "error", "duration_ms",
    }  # fmt: skip
    assert (attempts["slack"]["delivered"], attempts["slack"]["error"]) == (False, "http_500")
    assert attempts["slack"]["destination_id"] == failed_deliveries["slack"]["id"]
    assert (attempts["webhook"]["delivered"], attempts["webhook"]["event"]) == (
        True,
        "connection.disconnected",
    )
    assert attempts["webhook"]["duration_ms"] == 42
    assert datetime.fromisoformat(attempts["slack"]["attempted_at"]).utcoffset() == timedelta(0)

    webhook_id = failed_deliveries["webhook"]["id"]
    only = acme.get("/v1/deliveries", params={"destination_id": webhook_id}).json()
    assert [a["channel"] for a in only] == ["webhook"]
    assert [a["channel"] for a in acme.get("/v1/deliveries", params={"channel": "slack"}).json()] == ["slack"]
    assert acme.get("/v1/deliveries", params={"channel": "email"}).json() == []
    assert len(acme.get("/v1/deliveries", params={"limit": 1}).json()) == 1
    problem(acme.get("/v1/deliveries", params={"destination_id": "dst_nope"}), 422, "invalid-input")
    problem(acme.get("/v1/deliveries", params={"channel": "pager"}), 422, "validation-error")
    problem(acme.get("/v1/deliveries", params={"limit": 0}), 422, "validation-error")
    (slack,) = acme.get("/v1/channels").json()
    assert (slack["status"], slack["last_error"]) == ("disabled", "http_500")


def test_no_chat_url_path_or_webhook_secret_reaches_a_response_or_a_log_line(acme, caplog):
    caplog.set_level(logging.DEBUG)
    webhook = add_webhook(acme)
    add_channel(acme)
    add_channel(acme, "discord", DISCORD_URL, user_id="ana")
    acme.post("/v1/webhooks", json={"url": "http://hooks.slack.com" + SLACK_SECRET_PATH})
    acme.post("/v1/channels", json={"kind": "slack", "url": "http://hooks.slack.com" + SLACK_SECRET_PATH})
    acme.post("/v1/channels", json={"kind": "slack", "url": SLACK_URL, "user_id": "   "})

    assert_no_credentials(everything_listed(acme), webhook["secret"])
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /v1/channels" in logged  # the access log is captured
    assert_no_credentials(logged, webhook["secret"])
