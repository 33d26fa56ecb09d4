"""The CLI for notification destinations, preferences and deliveries (issue 4), as a subprocess, on SQLite and
PostgreSQL: DESIGN section 4's JSON keys, exit codes, bad input changing nothing, and no Slack or Discord URL
path (the credential) or webhook signing secret anywhere but the one ``webhooks add`` output."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from grantkeeper.adapters.crypto import Keyring, generate_key_line
from grantkeeper.adapters.db import SqlStore, make_engine
from grantkeeper.adapters.db.destinations import record_outcome
from grantkeeper.ports import DeliveryResult
from grantkeeper.sandbox import Behaviour
from tests.e2e.cli import Cli

SLACK_SECRET_PATH = "/services/T0CLI/B0CLI/s3cr3tSlackPathCli"
SLACK_URL = "https://hooks.slack.com" + SLACK_SECRET_PATH
DISCORD_SECRET_PATH = "/api/webhooks/4242/d1sc0rdTokenCli"
DISCORD_URL = "https://discord.com" + DISCORD_SECRET_PATH
WEBHOOK_URL = "https://app.example.test/hooks/grantkeeper"
LISTINGS = (("webhooks", "list"), ("channels", "list"), ("deliveries", "list"), ("status",))


@pytest.fixture
def database_url(sqlite_template, tmp_path) -> str:
    """SQLite only: what these tests check is the CLI (arguments, output, exit codes), which does not depend
    on the backend, and each case costs a process start. The destination and preference storage is tested
    on both databases in tests/integration, and through the API in tests/api/test_notify_api.py."""
    path = tmp_path / "grantkeeper.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def cli(database_url, tmp_path) -> Cli:
    return Cli(database_url=database_url, keys=generate_key_line("test"), cwd=tmp_path)


@pytest.fixture
def store(cli) -> Iterator[SqlStore]:
    """The CLI's database opened directly, to fail deliveries as a dispatcher would."""
    engine = make_engine(cli.database_url)
    assert cli.keys is not None
    yield SqlStore(engine, Keyring.parse(cli.keys))
    engine.dispose()


def everything_printed(cli: Cli) -> str:
    """What every listing prints, as JSON and as tables, with debug logging on."""
    out = []
    for command in LISTINGS:
        for extra in (("--json",), ()):
            result = cli.run(*command, *extra, GRANTKEEPER_LOG_LEVEL="DEBUG")
            assert result.returncode == 0, (command, result.stderr)
            out += [result.stdout, result.stderr]
    return "\n".join(out)


def assert_no_credentials(text: str, *secrets: str) -> None:
    for secret in (SLACK_SECRET_PATH, DISCORD_SECRET_PATH, "s3cr3tSlackPathCli", "d1sc0rdTokenCli", *secrets):
        assert secret not in text, secret


def test_webhooks_add_prints_id_url_and_the_secret_once(cli):
    added = cli.run("webhooks", "add", WEBHOOK_URL, "--json", GRANTKEEPER_LOG_LEVEL="DEBUG")
    assert added.returncode == 0, added.stderr
    created = json.loads(added.stdout)

    assert set(created) == {"id", "url", "secret"}
    assert created["url"] == WEBHOOK_URL
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert secret not in added.stderr
    (listed,) = cli.json("webhooks", "list")
    assert listed["id"] == created["id"]
    assert (listed["kind"], listed["status"], listed["consecutive_failures"]) == ("webhook", "enabled", 0)
    assert listed["url"] == WEBHOOK_URL
    table = cli.run("webhooks", "list", GRANTKEEPER_LOG_LEVEL="DEBUG")
    assert listed["id"] in table.stdout
    assert_no_credentials(json.dumps(listed) + table.stdout + table.stderr, secret)


def test_each_webhook_gets_its_own_secret(cli):
    first = cli.json("webhooks", "add", WEBHOOK_URL)
    second = cli.json("webhooks", "add", WEBHOOK_URL)
    assert first["secret"] != second["secret"]
    assert first["id"] != second["id"]


def test_channels_add_prints_the_contract_keys_and_only_the_url_host(cli):
    added = cli.run("channels", "add", "slack", SLACK_URL, "--json")
    assert added.returncode == 0, added.stderr
    slack = json.loads(added.stdout)
    assert set(slack) == {"id", "kind", "user_id", "url"}
    assert (slack["kind"], slack["user_id"], slack["url"]) == ("slack", None, "https://hooks.slack.com/…")
    discord = cli.json("channels", "add", "discord", DISCORD_URL, "--user-id", "ana")
    assert (discord["kind"], discord["user_id"]) == ("discord", "ana")
    text = cli.run("channels", "add", "slack", SLACK_URL, "--user-id", "bob")
    assert text.returncode == 0
    assert "user bob" in text.stdout

    listed = cli.json("channels", "list")
    assert [(c["kind"], c["user_id"]) for c in listed] == [
        ("slack", None),
        ("discord", "ana"),
        ("slack", "bob"),
    ]
    assert cli.json("webhooks", "list") == []  # chat channels are not webhooks
    table = cli.run("channels", "list", GRANTKEEPER_LOG_LEVEL="DEBUG")
    assert "https://hooks.slack.com/…" in table.stdout
    printed = [added.stdout, text.stdout, text.stderr, json.dumps(listed), table.stdout, table.stderr]
    assert_no_credentials("\n".join(printed))


def test_plain_http_is_accepted_to_a_loopback_host(cli):
    created = cli.json("webhooks", "add", "http://127.0.0.1:9/hook")
    assert created["url"] == "http://127.0.0.1:9/hook"
    assert cli.json("channels", "add", "discord", "http://localhost:9/api/webhooks/1/x")["kind"] == "discord"


BAD_DESTINATION_INPUT = [
    (("webhooks", "add", "http://app.example.test/hook"), "https"),
    (("webhooks", "add", "ftp://app.example.test/hook"), "https"),
    (("webhooks", "add", "not a url"), "whitespace"),
    (("webhooks", "add", "https://user:pw@app.example.test/hook"), "credentials"),
    (("webhooks", "add", "https://app.example.test/" + "a" * 2001), "2000"),
    (("channels", "add", "slack", "http://hooks.slack.com" + SLACK_SECRET_PATH), "https"),
    (("channels", "add", "teams", "https://teams.example.test/x"), "teams"),
    (("channels", "add", "slack", SLACK_URL, "--user-id", " "), "user id"),
    (("webhooks", "remove", "dst_nope"), "unknown destination id 'dst_nope'"),
    (("webhooks", "enable", "dst_nope"), "unknown destination id 'dst_nope'"),
    (("channels", "remove", "dst_nope"), "unknown destination id 'dst_nope'"),
    (("channels", "enable", "dst_nope"), "unknown destination id 'dst_nope'"),
    (("deliveries", "list", "--destination", "dst_nope"), "unknown destination id 'dst_nope'"),
    (("deliveries", "list", "--channel", "pager"), "pager"),
]


def test_bad_destination_input_exits_2_and_changes_nothing(cli, subtests):
    existing = cli.json("channels", "add", "slack", SLACK_URL)
    before = (cli.json("webhooks", "list"), cli.json("channels", "list"))
    assert before[1][0]["id"] == existing["id"]

    for args, words in BAD_DESTINATION_INPUT:
        with subtests.test(" ".join(args)[:80]):
            result = cli.run(*args)
            assert result.returncode == 2, result.stderr
            assert words in result.stderr
            assert "Traceback" not in result.stderr
            assert_no_credentials(result.stdout + result.stderr)

    assert (cli.json("webhooks", "list"), cli.json("channels", "list")) == before


def test_an_id_of_the_other_kind_is_unknown(cli):
    webhook = cli.json("webhooks", "add", WEBHOOK_URL)
    channel = cli.json("channels", "add", "slack", SLACK_URL)
    for args in (
        ("webhooks", "remove", channel["id"]),
        ("webhooks", "enable", channel["id"]),
        ("channels", "remove", webhook["id"]),
        ("channels", "enable", webhook["id"]),
    ):
        result = cli.run(*args)
        assert result.returncode == 2, args
        assert "unknown destination id" in result.stderr
    assert len(cli.json("webhooks", "list")) == len(cli.json("channels", "list")) == 1


def test_adding_a_destination_without_an_encryption_key_says_how_to_make_one(database_url, tmp_path):
    keyless = Cli(database_url=database_url, keys=None, cwd=tmp_path)
    for args in (("webhooks", "add", WEBHOOK_URL), ("channels", "add", "slack", SLACK_URL)):
        result = keyless.run(*args)
        assert result.returncode == 2, result.stderr
        assert "GRANTKEEPER_ENCRYPTION_KEYS" in result.stderr
        assert_no_credentials(result.stderr)
    assert keyless.json("webhooks", "list") == []  # listings need no key
    assert keyless.json("channels", "list") == []


def test_remove_deletes_only_the_named_destination(cli):
    keep = cli.json("webhooks", "add", WEBHOOK_URL)
    gone = cli.json("webhooks", "add", "https://other.example.test/hook")
    assert cli.json("webhooks", "remove", gone["id"]) == {"id": gone["id"], "removed": True}
    assert [w["id"] for w in cli.json("webhooks", "list")] == [keep["id"]]
    channel = cli.json("channels", "add", "discord", DISCORD_URL)
    assert cli.run("channels", "remove", channel["id"]).returncode == 0
    assert cli.json("channels", "list") == []


def test_tenants_see_only_their_own_destinations(cli):
    acme = cli.json("webhooks", "add", WEBHOOK_URL, "--tenant", "acme")
    assert cli.json("webhooks", "list", "--tenant", "globex") == []
    result = cli.run("webhooks", "remove", acme["id"], "--tenant", "globex")
    assert result.returncode == 2
    assert "unknown destination id" in result.stderr
    assert [w["id"] for w in cli.json("webhooks", "list", "--tenant", "acme")] == [acme["id"]]


def test_a_disabled_destination_shows_in_listings_and_status_until_enabled(cli, store):
    webhook = cli.json("webhooks", "add", WEBHOOK_URL)
    channel = cli.json("channels", "add", "slack", SLACK_URL)
    disabled_at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with store.engine.begin() as connection:
        record_outcome(
            connection, webhook["id"], is_delivered=False, error="http_500", failure_limit=1, at=disabled_at
        )

    (listed,) = cli.json("webhooks", "list")
    assert listed["status"] == "disabled"
    assert (listed["consecutive_failures"], listed["last_error"]) == (1, "http_500")
    assert datetime.fromisoformat(listed["disabled_at"]) == disabled_at
    assert listed["disabled_at"].endswith("+00:00")
    table = cli.run("webhooks", "list")
    assert "disabled" in table.stdout
    assert "http_500" in table.stdout
    status = cli.json("status")
    assert status["destinations"] == {"total": 2, "disabled": 1, "disabled_ids": [webhook["id"]]}
    assert set(status["outbox"]) >= {"pending", "delivered", "failed"}
    text = cli.run("status")
    assert webhook["id"] in text.stdout
    assert channel["id"] not in text.stdout  # only the disabled ones are listed

    enabled = cli.json("webhooks", "enable", webhook["id"])
    assert (enabled["status"], enabled["consecutive_failures"], enabled["disabled_at"]) == (
        "enabled",
        0,
        None,
    )
    assert cli.json("status")["destinations"]["disabled"] == 0


def test_preferences_show_defaults_and_set_merges_partial_changes(cli):
    shown = cli.json("preferences", "show", "ana")
    assert shown == {
        "user_id": "ana",
        "email": True,
        "slack": True,
        "discord": True,
        "warning_email": "immediate",
        "email_address": None,
        "updated_at": None,
    }
    cli.json("preferences", "set", "ana", "--warning-email", "digest", "--address", "ana@example.test")
    changed = cli.json("preferences", "set", "ana", "--slack", "off")
    assert (changed["slack"], changed["warning_email"], changed["email_address"]) == (
        False,
        "digest",
        "ana@example.test",
    )
    assert (changed["email"], changed["discord"]) == (True, True)
    assert datetime.fromisoformat(changed["updated_at"]).utcoffset() is not None
    cli.json("preferences", "set", "ana", "--email", "off", "--discord", "off")
    cleared = cli.json("preferences", "set", "ana", "--clear-address")
    assert cleared["email_address"] is None
    assert cli.json("preferences", "show", "ana") == cleared
    assert cleared["email"] is False
    assert cli.json("preferences", "show", "bob")["updated_at"] is None  # per user
    assert cli.json("preferences", "show", "ana", "--tenant", "globex")["updated_at"] is None  # per tenant


BAD_PREFERENCES = [
    ((), "at least one"),
    (("--slack", "maybe"), "maybe"),
    (("--email", "yes"), "yes"),
    (("--warning-email", "weekly"), "weekly"),
    (("--address", "not-an-address"), "email address"),
    (("--address", "a@b.test", "--clear-address"), "not both"),
]


def test_bad_preferences_exit_2_and_change_nothing(cli, subtests):
    before = cli.json("preferences", "set", "ana", "--slack", "off")
    for args, words in BAD_PREFERENCES:
        with subtests.test(" ".join(args) or "no option"):
            result = cli.run("preferences", "set", "ana", *args)
            assert result.returncode == 2, result.stderr
            assert words in result.stderr
    assert cli.json("preferences", "show", "ana") == before


def test_deliveries_list_shows_attempts_without_urls_or_secrets(
    cli, store, sandbox, sandbox_server, tmp_path
):
    cli.json(
        "providers", "add", "sandbox", "--token-url", sandbox_server.token_url,
        "--client-id", "app", "--client-secret", "app-secret",
    )  # fmt: skip
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    sandbox.set_behaviour(grant.grant_id, Behaviour.CONSENT_REQUIRED)
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"provider": "sandbox", "user_id": "ana", "refresh_token": grant.refresh_token}) + "\n"
    )
    cli.json("connections", "import", str(tmp_path / "c.jsonl"))
    slack = cli.json("channels", "add", "slack", SLACK_URL)
    webhook = cli.json("webhooks", "add", WEBHOOK_URL)
    assert cli.json("refresh", "--due")["newly_disconnected"] == 1
    assert cli.json("status")["outbox"]["pending"] == 2  # the tenant-wide Slack channel and the webhook

    now = datetime.now(UTC) + timedelta(seconds=1)
    items = store.claim_outbox(now, 10, "test-dispatcher", timedelta(minutes=1), ["slack", "webhook"])
    assert sorted(item.channel for item in items) == ["slack", "webhook"]
    for item in items:
        result = DeliveryResult(True) if item.channel == "webhook" else DeliveryResult(False, "http_500")
        assert store.record_delivery(item, result, now, timedelta(milliseconds=42), None, failure_limit=1)

    attempts = cli.json("deliveries", "list")
    assert len(attempts) == 2
    by_channel = {a["channel"]: a for a in attempts}
    assert set(by_channel["slack"]) == {
        "outbox_id", "channel", "destination_id", "notification_id", "event",
        "attempted_at", "delivered", "error", "duration_ms",
    }  # fmt: skip
    assert (by_channel["slack"]["delivered"], by_channel["slack"]["error"]) == (False, "http_500")
    assert by_channel["slack"]["destination_id"] == slack["id"]
    assert (by_channel["webhook"]["delivered"], by_channel["webhook"]["error"]) == (True, None)
    assert by_channel["webhook"]["event"] == "connection.disconnected"
    assert by_channel["webhook"]["duration_ms"] == 42
    assert datetime.fromisoformat(by_channel["slack"]["attempted_at"]).utcoffset() == timedelta(0)
    assert [a["channel"] for a in cli.json("deliveries", "list", "--destination", webhook["id"])] == [
        "webhook"
    ]
    assert [a["channel"] for a in cli.json("deliveries", "list", "--channel", "slack")] == ["slack"]
    assert len(cli.json("deliveries", "list", "--limit", "1")) == 1
    table = cli.run("deliveries", "list")
    assert " no " in table.stdout
    assert " yes " in table.stdout

    status = cli.json("status")
    assert status["destinations"]["disabled_ids"] == [slack["id"]]  # failure_limit=1
    assert (status["outbox"]["delivered"], status["outbox"]["failed"]) == (1, 1)
    assert_no_credentials(everything_printed(cli), webhook["secret"])
