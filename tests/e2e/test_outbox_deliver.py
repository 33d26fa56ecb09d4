"""``grantkeeper outbox deliver`` sends what the refresh policy queued: a disconnection's email reaches a real
SMTP server on loopback once, and a second run sends nothing more."""

from __future__ import annotations

import json

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.sandbox import Behaviour
from tests.e2e.cli import Cli


def test_outbox_deliver_sends_the_disconnection_email_once(
    database_url, sandbox, sandbox_server, smtp_server, tmp_path
):
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
    assert cli.json("refresh", "--due")["newly_disconnected"] == 1

    smtp = {
        "GRANTKEEPER_SMTP_HOST": smtp_server.host,
        "GRANTKEEPER_SMTP_PORT": str(smtp_server.port),
        "GRANTKEEPER_SMTP_SECURITY": "none",
        "GRANTKEEPER_EMAIL_FROM": "grantkeeper@example.test",
        "GRANTKEEPER_PUBLIC_URL": "https://app.example.test",
    }
    unconfigured = cli.run("outbox", "deliver", "--json")
    assert unconfigured.returncode == 0
    assert json.loads(unconfigured.stdout)["delivered"] == 0
    assert "GRANTKEEPER_SMTP_HOST" in unconfigured.stderr

    first = cli.run("outbox", "deliver", "--json", **smtp)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["delivered"], summary["failed"], summary["channels"]) == (1, 0, ["email"])
    again = cli.run("outbox", "deliver", "--json", **smtp)
    assert json.loads(again.stdout)["delivered"] == 0

    (message,) = smtp_server.mailbox.messages
    assert message["To"] == "ana@example.test"
    assert "sandbox" in message["Subject"]
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "https://app.example.test/connect/" in text
    assert "sbx-" not in message.as_string()
