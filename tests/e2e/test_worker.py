"""The worker keeps going through trouble that is not its own: a database that disappears mid-run is
logged and retried with backoff, and SIGTERM still stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from sqlalchemy.engine import make_url

from grantkeeper.adapters.crypto import generate_key_line
from grantkeeper.sandbox import GrantTokens
from grantkeeper.service.attempt import SHUTDOWN_COMMIT_GRACE
from tests.e2e.cli import Cli
from tests.fixtures.tcp_proxy import tcp_proxy


def one_connection(cli: Cli, sandbox, sandbox_server, tmp_path) -> GrantTokens:
    """The sandbox as a provider and one connection to it, due at once; returns its grant."""
    cli.json(
        "providers", "add", "sandbox", "--token-url", sandbox_server.token_url,
        "--client-id", "app", "--client-secret", "app-secret",
    )  # fmt: skip
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=3600)
    line = json.dumps({"provider": "sandbox", "user_id": "u", "refresh_token": grant.refresh_token})
    (tmp_path / "c.jsonl").write_text(line + "\n")
    cli.json("connections", "import", str(tmp_path / "c.jsonl"))
    return grant


def stop_worker(worker: subprocess.Popen[str]) -> str:
    """SIGTERM, then the worker's log; a worker still running 30 s later fails the test with that log."""
    worker.send_signal(signal.SIGTERM)
    try:
        _, err = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        _, err = worker.communicate()
        pytest.fail(f"the worker did not stop within 30 s of SIGTERM; its log:\n{err[-4000:]}")
    return err


def test_worker_survives_losing_its_database_and_stops_on_sigterm(
    postgres_server, sandbox, sandbox_server, tmp_path
):
    name = postgres_server.create(template=postgres_server.template)
    cli = Cli(database_url=postgres_server.url_for(name), keys=generate_key_line("w"), cwd=tmp_path)
    one_connection(cli, sandbox, sandbox_server, tmp_path)

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
        err = stop_worker(worker)
    assert worker.returncode == 0, err[-2000:]
    assert "cycle failed" in err
    assert "Traceback" not in err


def test_sigterm_during_an_outage_gives_a_held_answer_a_bounded_grace_then_stops(
    postgres_server, sandbox, sandbox_server, tmp_path
):
    """A refreshed token that cannot be committed is kept in memory and retried, but SIGTERM bounds that:
    the worker retries for ``SHUTDOWN_COMMIT_GRACE`` more, gives the answer up loudly and exits (an outage
    must not keep a stopping worker alive for the full commit patience, ten minutes)."""
    name = postgres_server.create(template=postgres_server.template)
    url = make_url(postgres_server.url_for(name))
    try:
        with tcp_proxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            cli = Cli(database_url=proxied, keys=generate_key_line("w"), cwd=tmp_path)
            grant = one_connection(cli, sandbox, sandbox_server, tmp_path)
            sandbox.set_latency(1.0)  # the window in which the database goes away

            worker = cli.popen("worker", "--poll-interval", "0.2")
            try:
                deadline = time.monotonic() + 20
                while sandbox.stats().requests < 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert sandbox.stats().requests == 1
                proxy.cut()  # the answer comes back to a database that is gone
                deadline = time.monotonic() + 10
                while sandbox.stats().refreshes_ok < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.5)  # the commit fails and is retried
            finally:
                stopped_at = time.monotonic()
                err = stop_worker(worker)
            took = time.monotonic() - stopped_at
    finally:
        postgres_server.drop(name)
    assert worker.returncode == 0, err[-2000:]
    assert "keeping the answer in memory" in err
    assert "the worker is stopping" in err, err[-2000:]
    assert took < SHUTDOWN_COMMIT_GRACE.total_seconds() + 10, took
    assert grant.refresh_token not in err
