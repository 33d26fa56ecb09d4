"""The worker keeps going through trouble that is not its own: a database that disappears mid-run is
logged and retried with backoff, and SIGTERM still stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from grantkeeper.adapters.crypto import generate_key_line
from tests.e2e.cli import Cli


def test_worker_survives_losing_its_database_and_stops_on_sigterm(
    postgres_server, sandbox, sandbox_server, tmp_path
):
    name = postgres_server.create(template=postgres_server.template)
    cli = Cli(database_url=postgres_server.url_for(name), keys=generate_key_line("w"), cwd=tmp_path)
    cli.json(
        "providers", "add", "sandbox", "--token-url", sandbox_server.token_url,
        "--client-id", "app", "--client-secret", "app-secret",
    )  # fmt: skip
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    line = json.dumps({"provider": "sandbox", "user_id": "u", "refresh_token": grant.refresh_token})
    (tmp_path / "c.jsonl").write_text(line + "\n")
    cli.json("connections", "import", str(tmp_path / "c.jsonl"))

    worker = cli.popen("worker", "--poll-interval", "0.2")
    try:
        deadline = time.monotonic() + 20
        while sandbox.stats().refreshes_ok < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sandbox.stats().refreshes_ok == 1
        postgres_server.drop(name)  # the database goes away under the running worker
        time.sleep(2)
        assert worker.poll() is None, "the worker exited instead of retrying"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            _, err = worker.communicate()
            pytest.fail(f"the worker did not stop within 30 s of SIGTERM; its log:\n{err[-4000:]}")
    assert worker.returncode == 0, err[-2000:]
    assert "cycle failed" in err
    assert "Traceback" not in err
