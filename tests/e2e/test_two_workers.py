"""Two processes refreshing one database at once never refresh the same connection twice.

The sandbox rotates every refresh token and, like strict providers, counts (and punishes) any reuse of a
rotated one: a double refresh anywhere would show up as ``reuse_detected > 0``.
"""

from __future__ import annotations

import json

import pytest

from grantkeeper.adapters.crypto import generate_key_line
from tests.e2e.cli import Cli

CONNECTIONS = 3000


@pytest.mark.slow
def test_two_concurrent_cycles_never_refresh_a_connection_twice(
    database_url, sandbox, sandbox_server, tmp_path
):
    cli = Cli(database_url=database_url, keys=generate_key_line("race"), cwd=tmp_path)
    cli.json(
        "providers", "add", "sandbox", "--token-url", sandbox_server.token_url,
        "--client-id", "app", "--client-secret", "app-secret",
    )  # fmt: skip
    grants = sandbox.issue_grants(client_id="app", count=CONNECTIONS, access_token_lifetime=3600)
    lines = [
        json.dumps({"provider": "sandbox", "user_id": f"u{i}", "refresh_token": g.refresh_token})
        for i, g in enumerate(grants)
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    assert cli.json("connections", "import", str(tmp_path / "c.jsonl"))["imported"] == CONNECTIONS

    due = run_two(cli, "--due")
    assert sum(s["refreshed"] for s in due) == CONNECTIONS
    assert sandbox.stats().reuse_detected == 0
    assert set(sandbox.stats().by_grant.values()) == {1}  # every grant asked exactly once

    everything = run_two(cli, "--all")  # both try to take every connection at once
    assert CONNECTIONS <= sum(s["refreshed"] for s in everything) <= 2 * CONNECTIONS
    assert all(s["by_outcome"]["auth"] == 0 for s in everything)
    assert sandbox.stats().reuse_detected == 0

    connections = cli.json("connections", "list")
    assert len(connections) == CONNECTIONS
    assert all(c["status"] == "connected" and c["consecutive_failures"] == 0 for c in connections)


def run_two(cli: Cli, mode: str) -> list[dict]:
    workers = [cli.popen("refresh", mode, "--json", "--concurrency", "16") for _ in range(2)]
    summaries = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        summaries.append(json.loads(out))
    return summaries
