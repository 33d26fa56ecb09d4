"""The CLI as a subprocess: DESIGN section 4's commands, JSON field names, exit codes and bad input."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.adapters.db import make_engine
from grantkeeper.adapters.db.tables import connections, notifications, refresh_attempts
from grantkeeper.sandbox import Behaviour
from tests.e2e.cli import Cli

KEY_LINE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_-]{43}=?$")


@pytest.fixture
def cli(database_url, tmp_path) -> Cli:
    return Cli(database_url=database_url, keys=generate_key_line("test"), cwd=tmp_path)


@pytest.fixture
def provider(cli, sandbox_server) -> str:
    cli.json(
        "providers", "add", "sandbox",
        "--token-url", sandbox_server.token_url,
        "--client-id", "app",
        "--client-secret", "app-secret",
    )  # fmt: skip
    return "sandbox"


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_keys_generate_prints_one_kid_key_line(cli):
    result = cli.run("keys", "generate")
    assert result.returncode == 0
    assert KEY_LINE.match(result.stdout.strip())


def test_providers_list_never_shows_the_client_secret(cli, provider):
    result = cli.run("providers", "list", "--json")
    assert result.returncode == 0
    (listed,) = json.loads(result.stdout)
    assert listed["name"] == "sandbox"
    assert "app-secret" not in result.stdout


def test_providers_add_takes_limits_and_refuses_bad_ones(cli):
    base = ["providers", "add", "slow", "--token-url", "https://auth.example.com/token"]
    base += ["--client-id", "x", "--client-secret", "y"]
    for bad in (["--max-concurrency", "0"], ["--rate-limit", "-3"], ["--rate-limit", "lots"]):
        result = cli.run(*base, *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "concurrency" in result.stderr or "rate" in result.stderr
    assert cli.json("providers", "list") == []
    added = cli.json(*base, "--max-concurrency", "8", "--rate-limit", "50")
    assert (added["max_concurrency"], added["rate_limit_per_second"]) == (8, 50.0)


def test_providers_add_takes_an_introspection_url_and_refuses_a_plain_http_one(cli):
    base = ["providers", "add", "okta", "--token-url", "https://auth.example.com/token"]
    base += ["--client-id", "x", "--client-secret", "y"]
    result = cli.run(*base, "--introspection-url", "http://auth.example.com/introspect")
    assert result.returncode == 2
    assert "introspection URL" in result.stderr
    assert cli.json("providers", "list") == []
    added = cli.json(*base, "--introspection-url", "https://auth.example.com/introspect")
    assert added["introspection_url"] == "https://auth.example.com/introspect"


def test_plain_http_token_url_off_loopback_is_refused(cli):
    result = cli.run(
        "providers", "add", "evil", "--token-url", "http://auth.example.com/token",
        "--client-id", "x", "--client-secret", "y",
    )  # fmt: skip
    assert result.returncode == 2
    assert "https" in result.stderr
    assert cli.json("providers", "list") == []


def test_import_reports_every_bad_line_and_imports_nothing(cli, provider, tmp_path):
    good = {"provider": "sandbox", "user_id": "u1", "refresh_token": "rt-1"}
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            good,
            '{"provider": "sandbox", "user_id": ',
            {"provider": "nope", "user_id": "u3", "refresh_token": "rt-3"},
            {"provider": "sandbox", "refresh_token": "rt-4"},
            {"provider": "sandbox", "user_id": "u5", "refresh_token": "rt-5", "expires_at": "next tuesday"},
            {"provider": "sandbox", "user_id": "u6", "refresh_token": "rt-6", "workflows": "not-a-list"},
        ],
    )
    result = cli.run("connections", "import", path)
    assert result.returncode == 2
    for line, words in [(2, "not valid JSON"), (3, "unknown provider"), (4, "user_id"), (5, "expires_at")]:
        assert re.search(rf"line {line}: .*{words}", result.stderr), result.stderr
    assert "line 6:" in result.stderr
    assert "line 1:" not in result.stderr
    assert "rt-" not in result.stderr
    assert cli.json("connections", "list") == []


def test_import_then_list_shows_design_fields_and_no_tokens(cli, provider, tmp_path):
    path = write_jsonl(
        tmp_path / "ok.jsonl",
        [
            {"provider": "sandbox", "user_id": "u1", "refresh_token": "rt-secret-1", "access_token": "at-1",
             "expires_at": "2030-01-01T00:00:00Z", "email": "u1@example.test", "workflows": ["sync"]},
            {"provider": "sandbox", "user_id": "u2", "refresh_token": "rt-secret-2",
             "expires_at": 1893456000},
        ],
    )  # fmt: skip
    assert cli.json("connections", "import", path) == {"imported": 2, "errors": []}
    result = cli.run("connections", "list", "--json")
    listed = json.loads(result.stdout)
    assert {c["user_id"] for c in listed} == {"u1", "u2"}
    expected = {"id", "provider", "user_id", "status", "consecutive_failures",
                "consecutive_transient_failures", "expires_at", "disconnect_reason"}  # fmt: skip
    assert expected <= set(listed[0])
    assert "rt-secret" not in result.stdout
    assert "at-1" not in result.stdout
    assert all(c["status"] == "connected" for c in listed)
    assert cli.json("connections", "list", "--status", "needs_reauthorization") == []


def test_refresh_unknown_connection_id_is_a_clear_usage_error(cli, provider):
    result = cli.run("refresh", "con_nope")
    assert result.returncode == 2
    assert "con_nope" in result.stderr


def test_refresh_needs_a_mode(cli):
    result = cli.run("refresh")
    assert result.returncode == 2
    assert "--due" in result.stderr


def test_commands_touching_tokens_refuse_without_a_key_and_say_how(cli, provider, tmp_path):
    cli.keys = None
    path = write_jsonl(
        tmp_path / "one.jsonl", [{"provider": "sandbox", "user_id": "u", "refresh_token": "r"}]
    )
    result = cli.run("connections", "import", path)
    assert result.returncode == 2
    assert "grantkeeper keys generate" in result.stderr
    status = cli.run("status", "--json")
    assert status.returncode == 0, status.stderr


def test_refresh_due_against_the_sandbox_reports_json_summary(cli, provider, sandbox, tmp_path):
    grants = sandbox.issue_grants(client_id="app", count=3, access_token_lifetime=3600)
    sandbox.set_behaviour(grants[2].grant_id, Behaviour.INVALID_GRANT)
    rows = [
        {"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token}
        for i, g in enumerate(grants)
    ]
    cli.json("connections", "import", write_jsonl(tmp_path / "g.jsonl", rows))
    summary = cli.json("refresh", "--due")
    assert summary["due"] == 3
    assert summary["refreshed"] == 2
    assert summary["by_outcome"]["auth"] == 1
    status = cli.json("status")
    assert status["counts"]["connected"] == 3
    assert status["failing"][0]["consecutive_failures"] == 1


def test_reconnect_from_cli_resets_counters(cli, provider, sandbox, tmp_path):
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    sandbox.set_behaviour(grant.grant_id, Behaviour.CONSENT_REQUIRED)
    row = {"provider": "sandbox", "user_id": "u", "refresh_token": grant.refresh_token}
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", [row]))
    cli.json("refresh", "--due")
    (connection,) = cli.json("connections", "list")
    assert connection["status"] == "needs_reauthorization"
    fresh = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    tokens = json.dumps({"refresh_token": fresh.refresh_token, "access_token": fresh.access_token})
    after = cli.json("connections", "reconnect", connection["id"], stdin=tokens)
    assert after["status"] == "connected"
    assert after["consecutive_failures"] == 0


def test_unreachable_database_is_an_operational_error(cli):
    cli.database_url = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = cli.run("status")
    assert result.returncode == 1
    assert "database" in result.stderr.lower()


def test_bad_setting_is_a_usage_error_naming_the_variable(cli):
    result = cli.run("status", GRANTKEEPER_DISCONNECT_THRESHOLD="zero")
    assert result.returncode == 2
    assert "GRANTKEEPER_DISCONNECT_THRESHOLD" in result.stderr


def test_migrate_reports_the_revision(cli):
    assert cli.json("migrate")["revision"]


def test_worker_runs_cycles_until_told_to_stop(cli, provider, sandbox, tmp_path):
    grants = sandbox.issue_grants(client_id="app", count=5, access_token_lifetime=3600)
    rows = [
        {"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token}
        for i, g in enumerate(grants)
    ]
    cli.json("connections", "import", write_jsonl(tmp_path / "w.jsonl", rows))
    result = cli.run("worker", "--max-cycles", "2", "--poll-interval", "0.1", "--json")
    assert result.returncode == 0, result.stderr
    assert sandbox.stats().refreshes_ok == 5
    assert all(c["last_refreshed_at"] for c in cli.json("connections", "list"))


@pytest.mark.parametrize(
    ("env", "args", "warned"),
    [
        ({}, [], False),  # the defaults: 5 + 10 + 5 s, then the 5 s poll: 25 s
        ({"GRANTKEEPER_READ_TIMEOUT_SECONDS": "15"}, [], True),  # the former default: exactly 30 s
        ({}, ["--poll-interval", "10"], True),  # 20 s, then a 10 s poll
        ({"GRANTKEEPER_READ_TIMEOUT_SECONDS": "15"}, ["--poll-interval", "1"], False),  # 25 s, then 1 s
    ],
    ids=["defaults", "read-15", "poll-10", "read-15-poll-1"],
)
def test_worker_warns_when_a_dead_workers_retry_would_miss_oktas_grace_window(cli, env, args, warned):
    result = cli.run("worker", "--max-cycles", "1", *args, **env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "rotation grace window" in line]
    assert bool(warnings) is warned, result.stderr
    if warned:
        assert "WARNING" in warnings[0]
        assert "GRANTKEEPER_READ_TIMEOUT_SECONDS" in warnings[0]


@pytest.mark.parametrize("url", ["garbage", "mysql://root@127.0.0.1/test"])
def test_unsupported_database_url_is_a_usage_error(cli, url):
    cli.database_url = url
    result = cli.run("status")
    assert result.returncode == 2
    assert "GRANTKEEPER_DATABASE_URL must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_empty_import_file_is_an_error_that_says_so(cli, provider, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    result = cli.run("connections", "import", str(tmp_path / "empty.jsonl"))
    assert result.returncode == 2
    assert "holds no connections" in result.stderr


def _seed_attempts(cli, sandbox, tmp_path, old: int) -> int:
    """``old`` attempts from 40 days ago (set-up, straight into the table), then one real refresh per
    connection through ``refresh --due``; returns how many attempts the table holds."""
    grants = sandbox.issue_grants(client_id="app", count=2, access_token_lifetime=3600)
    rows = [
        {"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token}
        for i, g in enumerate(grants)
    ]
    cli.json("connections", "import", write_jsonl(tmp_path / "p.jsonl", rows))
    engine = make_engine(cli.database_url)
    try:
        with engine.begin() as connection:
            owners = connection.execute(
                select(connections.c.id, connections.c.tenant_id, connections.c.provider_id)
            ).all()
            long_ago = datetime.now(UTC) - timedelta(days=40)
            attempts = [
                {
                    "connection_id": owners[i % len(owners)].id,
                    "tenant_id": owners[i % len(owners)].tenant_id,
                    "provider_id": owners[i % len(owners)].provider_id,
                    "attempted_at": long_ago + timedelta(seconds=i),
                    "outcome": "success",
                    "http_status": 200,
                    "duration_ms": 100,
                }
                for i in range(old)
            ]
            connection.execute(insert(refresh_attempts), attempts)
    finally:
        engine.dispose()
    assert cli.json("refresh", "--due")["refreshed"] == 2
    return _count_attempts(cli)


def _count_attempts(cli) -> int:
    return _count_rows(cli, refresh_attempts)


def _count_rows(cli, table) -> int:
    engine = make_engine(cli.database_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(table))
    finally:
        engine.dispose()


def test_prune_refuses_a_bad_age_and_changes_nothing(cli, provider, sandbox, tmp_path):
    total = _seed_attempts(cli, sandbox, tmp_path, old=30)
    for bad in ("0", "abc", "-3"):
        result = cli.run("prune", "--older-than-days", bad, "--json")
        assert result.returncode == 2, (bad, result.stderr)
        assert "--older-than-days" in result.stderr
        assert result.stdout == ""
    assert _count_attempts(cli) == total


def test_prune_reports_how_many_old_attempts_it_deleted(cli, provider, sandbox, tmp_path):
    total = _seed_attempts(cli, sandbox, tmp_path, old=250)
    assert total == 252
    none = {
        "deliveries_deleted": 0,
        "connect_links_deleted": 0,
        "notifications_deleted": 0,
        "notifications_older_than_days": None,
    }
    assert cli.json("prune", "--older-than-days", "41") == {"deleted": 0, "older_than_days": 41} | none
    assert cli.json("prune") == {"deleted": 250, "older_than_days": 30} | none  # the setting's default
    assert _count_attempts(cli) == 2  # the refreshes just made stay
    assert cli.json("prune", "--older-than-days", "1") == {"deleted": 0, "older_than_days": 1} | none
    plain = cli.run("prune", GRANTKEEPER_ATTEMPT_RETENTION_DAYS="0")
    assert plain.returncode == 0, plain.stderr
    assert "kept forever" in plain.stderr


@pytest.mark.parametrize(("retention_days", "left"), [("30", 2), ("0", 42)])
def test_worker_prunes_old_attempts_as_it_starts_unless_retention_is_off(
    cli, provider, sandbox, tmp_path, retention_days, left
):
    assert _seed_attempts(cli, sandbox, tmp_path, old=40) == 42
    result = cli.run(
        "worker", "--max-cycles", "1", "--poll-interval", "0.1",
        GRANTKEEPER_ATTEMPT_RETENTION_DAYS=retention_days,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _count_attempts(cli) == left
    assert ("pruned 40 refresh attempt(s)" in result.stderr) == (retention_days != "0")


def _seed_notifications(cli, sandbox, tmp_path) -> None:
    """Two connections, and for each an in-app notice from 100 days ago and one from 5 days ago (set-up,
    straight into the table)."""
    _seed_attempts(cli, sandbox, tmp_path, old=1)
    engine = make_engine(cli.database_url)
    try:
        with engine.begin() as connection:
            owners = connection.execute(select(connections.c.id, connections.c.tenant_id)).all()
            now = datetime.now(UTC)
            rows = [
                {
                    "id": f"ntf_{days}_{i}",
                    "tenant_id": owner.tenant_id,
                    "connection_id": owner.id,
                    "user_id": f"u{i}",
                    "type": "integration_rate_limit",
                    "title": "title",
                    "message": "message",
                    "is_read": False,
                    "created_at": now - timedelta(days=days),
                    "metadata": {},
                }
                for i, owner in enumerate(owners)
                for days in (100, 5)
            ]
            connection.execute(insert(notifications), rows)
    finally:
        engine.dispose()


def _count_notifications(cli) -> int:
    return _count_rows(cli, notifications)


def test_prune_deletes_old_notifications_only_with_a_retention(cli, provider, sandbox, tmp_path):
    _seed_notifications(cli, sandbox, tmp_path)
    assert _count_notifications(cli) == 4

    kept = cli.json("prune")  # the default keeps notifications forever
    assert (kept["notifications_deleted"], kept["notifications_older_than_days"]) == (0, None)
    assert "notifications are kept" in cli.run("prune").stdout
    bad = cli.run("prune", "--notifications-older-than-days", "0", "--json")
    assert bad.returncode == 2
    assert "--notifications-older-than-days" in bad.stderr
    for value in ("-1", "abc", "4000"):
        refused = cli.run("prune", GRANTKEEPER_NOTIFICATION_RETENTION_DAYS=value)
        assert refused.returncode != 0
        assert "invalid configuration: GRANTKEEPER_NOTIFICATION_RETENTION_DAYS" in refused.stderr
    assert _count_notifications(cli) == 4

    pruned = cli.json("prune", "--notifications-older-than-days", "90")
    assert (pruned["notifications_deleted"], pruned["notifications_older_than_days"]) == (2, 90)
    assert _count_notifications(cli) == 2  # the recent ones stay
    by_setting = cli.run("prune", "--json", GRANTKEEPER_NOTIFICATION_RETENTION_DAYS="3")
    assert by_setting.returncode == 0, by_setting.stderr
    counts = json.loads(by_setting.stdout)
    assert (counts["notifications_deleted"], counts["notifications_older_than_days"]) == (2, 3)
    assert _count_notifications(cli) == 0


@pytest.mark.parametrize(("retention_days", "left"), [("90", 2), ("0", 4)])
def test_worker_prunes_old_notifications_as_it_starts_when_told_to(
    cli, provider, sandbox, tmp_path, retention_days, left
):
    _seed_notifications(cli, sandbox, tmp_path)
    result = cli.run(
        "worker", "--max-cycles", "1", "--poll-interval", "0.1",
        GRANTKEEPER_NOTIFICATION_RETENTION_DAYS=retention_days,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _count_notifications(cli) == left
    assert ("pruned 2 notification(s)" in result.stderr) == (retention_days != "0")


def test_providers_add_takes_browser_settings_and_connections_get_reconnect_links(
    cli, sandbox, sandbox_server
):
    base = ["providers", "add", "sandbox", "--token-url", sandbox_server.token_url]
    base += ["--client-id", "app", "--client-secret", "app-secret"]
    for bad, says in (
        (["--authorize-param", "state=x"], "set by the flow itself"),
        (["--authorize-param", "novalue"], "NAME=VALUE"),
        (["--authorize-url", "http://auth.example.com/authorize"], "authorize URL"),
        (["--account-field", "id_token"], "needs the claim"),
        (["--account-field", "a..b"], "dotted path"),
        (["--issuer", "http://idp.example.com"], "issuer must use https"),
        (["--issuer", "https://idp.example.com/?tenant=a"], "must not have a ?query"),
    ):
        result = cli.run(*base, *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert says in result.stderr
    assert cli.json("providers", "list") == []
    added = cli.json(
        *base, "--authorize-url", sandbox_server.authorize_url, "--scopes", "files.read offline",
        "--authorize-param", "access_type=offline", "--authorize-param", "prompt=consent",
        "--account-field", "id_token.sub", "--issuer", sandbox_server.base_url,
    )  # fmt: skip
    assert added["authorize_url"] == sandbox_server.authorize_url
    assert added["issuer"] == sandbox_server.base_url
    assert added["account_field"] == "id_token.sub"
    assert added["scopes"] == "files.read offline"
    assert added["authorize_params"] == {"access_type": "offline", "prompt": "consent"}

    grant = sandbox.issue_grant(client_id="app")
    row = {"provider": "sandbox", "user_id": "ana", "refresh_token": grant.refresh_token}
    (cli.cwd / "c.jsonl").write_text(json.dumps(row) + "\n")
    assert cli.json("connections", "import", str(cli.cwd / "c.jsonl"))["imported"] == 1
    [listed] = cli.json("connections", "list")
    connection_id = listed["id"]
    assert listed["account_id"] is None  # imported: learned at its first connect flow
    link = cli.json("connections", "reconnect-link", connection_id, "--ttl", "600")
    assert link["url"].startswith("http://127.0.0.1:8000/connect/session/")
    missing = cli.run("connections", "reconnect-link", "con_nope")
    assert missing.returncode == 2
    assert "con_nope" in missing.stderr
    off_list = cli.run("connections", "reconnect-link", connection_id, "--return-to", "https://evil.example/")
    assert off_list.returncode == 2
    assert "allow list" in off_list.stderr


def test_providers_update_rotates_the_secret_from_stdin_and_refuses_bad_changes(
    cli, sandbox, sandbox_server, tmp_path
):
    cli.json("providers", "add", "sandbox", "--token-url", sandbox_server.token_url, "--client-id", "app",
             "--client-secret", "retired-secret", "--max-concurrency", "5")  # fmt: skip
    before = cli.json("providers", "list")
    for bad, says in (
        (["--clear", "token_url"], "--clear takes one of"),
        (["--token-url", "http://idp.example.com/token"], "must use https"),
        (["--issuer", sandbox_server.base_url, "--clear", "issuer"], "both given and cleared"),
        ([], "nothing to change"),
    ):
        result = cli.run("providers", "update", "sandbox", *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert says in result.stderr
    unknown = cli.run("providers", "update", "nope", "--scopes", "a")
    assert unknown.returncode == 2
    assert "unknown provider 'nope'" in unknown.stderr
    assert cli.json("providers", "list") == before

    result = cli.run(
        "providers", "update", "sandbox", "--client-secret", "-", "--issuer", sandbox_server.base_url,
        "--clear", "max_concurrency", "--json", stdin="app-secret\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "app-secret" not in result.stdout + result.stderr
    updated = json.loads(result.stdout)
    assert (updated["issuer"], updated["max_concurrency"]) == (sandbox_server.base_url, None)
    assert updated["token_url"] == before[0]["token_url"]  # what was not named stays

    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    row = {"provider": "sandbox", "user_id": "u1", "refresh_token": grant.refresh_token}
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", [row]))
    assert cli.json("refresh", "--due")["refreshed"] == 1  # the new secret is the one sent


def test_providers_remove_takes_connections_only_when_told_and_confirmed(
    cli, sandbox, sandbox_server, tmp_path
):
    for name in ("sandbox", "spare"):
        cli.json("providers", "add", name, "--token-url", sandbox_server.token_url, "--client-id", "app",
                 "--client-secret", "app-secret")  # fmt: skip
    rows = [
        {
            "provider": provider,
            "user_id": f"u{i}",
            "refresh_token": sandbox.issue_grant(client_id="app").refresh_token,
        }
        for i, provider in enumerate(["sandbox", "sandbox", "sandbox", "spare"])
    ]
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", rows))

    for args, says in (
        (["sandbox"], "has 3 connection(s)"),
        (["sandbox", "--with-connections"], "add --yes to confirm"),  # stdin is not a terminal
        (["nope"], "unknown provider 'nope'"),
    ):
        result = cli.run("providers", "remove", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert says in result.stderr, result.stderr
    declined = cli.run_in_terminal("providers", "remove", "sandbox", "--with-connections", answer="n\n")
    assert declined.returncode == 1, declined.stderr
    assert "nothing removed" in declined.stderr
    # still all three: the answer "n" and the refusals above changed nothing
    confirmed = cli.run_in_terminal("providers", "remove", "sandbox", "--with-connections", answer="y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "removed provider sandbox and 3 connection(s)" in confirmed.stdout
    assert [c["provider"] for c in cli.json("connections", "list")] == ["spare"]

    scripted = cli.json("providers", "remove", "spare", "--with-connections", "--yes")
    assert scripted == {"name": "spare", "removed": True, "connections_removed": 1}
    assert cli.json("providers", "list") == []


def test_connections_attempts_lists_what_each_refresh_got(cli, provider, sandbox, tmp_path):
    grant = sandbox.issue_grant(client_id="app")
    row = {"provider": "sandbox", "user_id": "u1", "refresh_token": grant.refresh_token}
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", [row]))
    assert cli.json("refresh", "--due")["refreshed"] == 1
    [connection] = cli.json("connections", "list")
    connection_id = connection["id"]

    [attempt] = cli.json("connections", "attempts", connection_id)
    assert (attempt["outcome"], attempt["http_status"], attempt["error_code"]) == ("success", 200, None)
    shown = cli.run("connections", "attempts", connection_id)
    assert shown.returncode == 0, shown.stderr
    assert "success" in shown.stdout
    assert grant.refresh_token not in shown.stdout
    for args, says in (
        (["con_00000000000000000000"], "con_00000000000000000000"),
        ([connection_id, "--before", "soon"], "--before"),
        ([connection_id, "--limit", "0"], "--limit"),
    ):
        result = cli.run("connections", "attempts", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert says in result.stderr


def test_connections_delete_revokes_the_grant_then_forgets_it(cli, sandbox, sandbox_server, tmp_path):
    cli.json("providers", "add", "sandbox", "--token-url", sandbox_server.token_url, "--client-id", "app",
             "--client-secret", "app-secret", "--revocation-url", sandbox_server.revocation_url)  # fmt: skip
    grants = [sandbox.issue_grant(client_id="app") for _ in range(2)]
    rows = [
        {"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token}
        for i, g in enumerate(grants)
    ]
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", rows))
    by_user = {c["user_id"]: c["id"] for c in cli.json("connections", "list")}

    deleted = cli.json("connections", "delete", by_user["u0"])
    assert deleted == {
        "connection_id": by_user["u0"],
        "revoked": True,
        "revocation_error": None,
        "deleted": True,
    }
    assert sandbox.describe(grants[0].grant_id)["revoked"] is True
    assert sandbox.describe(grants[1].grant_id)["revoked"] is False
    assert [c["user_id"] for c in cli.json("connections", "list")] == ["u1"]
    again = cli.run("connections", "delete", by_user["u0"])
    assert again.returncode == 2
    assert by_user["u0"] in again.stderr


def test_keys_reseal_moves_everything_to_the_new_key_so_the_old_one_can_go(cli, provider, sandbox, tmp_path):
    grant = sandbox.issue_grant(client_id="app")
    row = {"provider": "sandbox", "user_id": "u1", "refresh_token": grant.refresh_token}
    cli.json("connections", "import", write_jsonl(tmp_path / "c.jsonl", [row]))
    new_key = generate_key_line("new")
    rotating = replace(cli, keys=f"{new_key},{cli.keys}")

    usage = rotating.json("keys", "usage")
    assert usage["connections.refresh_token_enc"] == {"new": 0, "test": 1, "(not configured)": 0}
    assert usage["providers.client_secret_enc"]["test"] == 1
    resealed = rotating.json("keys", "reseal")
    assert resealed["resealed"]["connections.refresh_token_enc"] == 1
    assert resealed["unreadable"] == {}
    assert all(per_kid["test"] == 0 for per_kid in resealed["usage"].values())

    new_only = replace(cli, keys=new_key)  # the old key removed from the configuration
    assert new_only.json("refresh", "--due")["refreshed"] == 1  # client secret and refresh token both open
    table = new_only.run("keys", "usage")
    assert table.returncode == 0, table.stderr
    assert "connections.refresh_token_enc" in table.stdout
    again = new_only.run("keys", "reseal")
    assert again.returncode == 0, again.stderr
    assert "resealed 0 stored secret(s) under new; 0 still under another key" in again.stdout
