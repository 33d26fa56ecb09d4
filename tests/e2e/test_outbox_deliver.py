"""Notifications reach people: a disconnection's email goes out through ``grantkeeper outbox deliver`` and
through the worker's delivery loop, to a real SMTP server on loopback, once."""

from __future__ import annotations

import json

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.sandbox import Behaviour
from tests.e2e.cli import Cli


def smtp_env(smtp_server) -> dict[str, str]:
    return {
        "GRANTKEEPER_SMTP_HOST": smtp_server.host,
        "GRANTKEEPER_SMTP_PORT": str(smtp_server.port),
        "GRANTKEEPER_SMTP_SECURITY": "none",
        "GRANTKEEPER_EMAIL_FROM": "grantkeeper@example.test",
        "GRANTKEEPER_PUBLIC_URL": "https://app.example.test",
    }


def disconnecting_connection(database_url, sandbox, sandbox_server, tmp_path) -> Cli:
    """A CLI on the test database with one connection whose grant needs consent again: it disconnects."""
    cli = Cli(database_url=database_url, keys=generate_key_line("mail"), cwd=tmp_path)
    cli.json(
        "providers", "add", "sandbox", "--token-url", sandbox_server.token_url,
        "--client-id", "app", "--client-secret", "app-secret",
    )  # fmt: skip
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    sandbox.set_behaviour(grant.grant_id, Behaviour.CONSENT_REQUIRED)
    row = {
        "provider": "sandbox",
        "user_id": "ana",
        "refresh_token": grant.refresh_token,
        "email": "ana@example.test",
    }
    (tmp_path / "c.jsonl").write_text(json.dumps(row) + "\n")
    cli.json("connections", "import", str(tmp_path / "c.jsonl"))
    return cli


def test_outbox_deliver_sends_the_disconnection_email_once(
    database_url, sandbox, sandbox_server, smtp_server, tmp_path
):
    cli = disconnecting_connection(database_url, sandbox, sandbox_server, tmp_path)
    assert cli.json("refresh", "--due")["newly_disconnected"] == 1
    smtp = smtp_env(smtp_server)

    unconfigured = cli.run("outbox", "deliver", "--json")
    assert unconfigured.returncode == 0
    assert json.loads(unconfigured.stdout)["delivered"] == 0
    assert "GRANTKEEPER_SMTP_HOST" in unconfigured.stderr

    first = cli.run("outbox", "deliver", "--json", **smtp)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["delivered"], summary["failed"]) == (1, 0)
    assert summary["channels"] == ["discord", "email", "email_digest", "slack", "webhook"]
    again = cli.run("outbox", "deliver", "--json", **smtp)
    assert json.loads(again.stdout)["delivered"] == 0

    (message,) = smtp_server.mailbox.messages
    assert message["To"] == "ana@example.test"
    assert "sandbox" in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "https://app.example.test/connect/" in text
    assert "sbx-" not in message.as_string()


def test_worker_delivers_the_email_of_the_disconnection_it_caused(
    database_url, sandbox, sandbox_server, smtp_server, tmp_path
):
    cli = disconnecting_connection(database_url, sandbox, sandbox_server, tmp_path)
    result = cli.run("worker", "--max-cycles", "1", "--poll-interval", "0.1", **smtp_env(smtp_server))
    assert result.returncode == 0, result.stderr
    (message,) = smtp_server.mailbox.messages
    assert message["To"] == "ana@example.test"
    (connection,) = cli.json("connections", "list")
    assert connection["status"] == "needs_reauthorization"
