"""A full demo run at debug level: it works on a fresh directory, and no token or secret leaks anywhere.

The sandbox's tokens carry a recognisable prefix (``sbx-at-``/``sbx-rt-``), so any plaintext token in the
logs or the database file is found by a plain search.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.cli import Cli

TOKEN = re.compile(rb"sbx-(?:at|rt)-[A-Za-z0-9_-]{16,}")


@pytest.mark.slow
def test_demo_runs_on_sqlite_and_leaks_no_token_to_logs_or_database(tmp_path):
    database = tmp_path / "grantkeeper.db"
    cli = Cli(database_url=f"sqlite:///{database}", keys=None, cwd=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "grantkeeper", "demo", "--duration", "15", "--connections", "150",
         "--lifetime", "10", "--json"],
        capture_output=True,
        cwd=tmp_path,
        env=cli.env(GRANTKEEPER_LOG_LEVEL="DEBUG"),
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"generated a demo key" in result.stderr
    assert (tmp_path / "grantkeeper-demo.key").exists()
    summary = json.loads(result.stdout)
    assert summary["refreshed"] > 150
    assert summary["newly_disconnected"] > 0
    assert summary["notifications"]["integration_rate_limit"] > 0
    assert summary["sandbox"]["reuse_detected"] == 0
    assert b"DEBUG" in result.stderr  # debug logging really was on

    assert not TOKEN.search(result.stdout + result.stderr)
    for path in tmp_path.glob("grantkeeper.db*"):
        assert not TOKEN.search(path.read_bytes()), path.name

    status = cli.json("status")
    assert status["total"] == 150
    assert status["counts"]["needs_reauthorization"] == summary["newly_disconnected"]


@pytest.mark.slow
def test_demo_stops_cleanly_on_ctrl_c(tmp_path):
    cli = Cli(database_url=f"sqlite:///{tmp_path / 'grantkeeper.db'}", keys=None, cwd=tmp_path)
    demo = cli.popen("demo", "--connections", "50", "--lifetime", "10", "--json")
    deadline = time.monotonic() + 60  # start-up is slow on a loaded machine: wait until the demo runs
    while not (tmp_path / "grantkeeper-demo.key").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(3)
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["counts"]["connected"] + summary["counts"]["needs_reauthorization"] == 50
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_demo_prints_a_reconnect_link_that_works_in_a_browser(tmp_path):
    """The link the demo prints for its first broken connection runs the whole flow against the embedded
    sandbox: its consent page, a click on Allow, grantkeeper's success page; the connection is back."""
    import queue
    import threading

    import httpx

    cli = Cli(database_url=f"sqlite:///{tmp_path / 'grantkeeper.db'}", keys=None, cwd=tmp_path)
    demo = cli.popen("demo", "--connections", "60", "--lifetime", "10", "--json")
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stderr], daemon=True)
    reader.start()
    link, seen = None, []
    deadline = time.monotonic() + 90
    try:
        while link is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            found = re.search(r"reconnect it in your browser while the demo runs: (\S+)", line)
            link = found.group(1) if found else None
        assert link is not None, "".join(seen)[-2000:]
        user = re.search(r"(user-\d{4})'s sandbox connection broke", "".join(seen)).group(1)

        with httpx.Client(timeout=30) as browser:
            started = browser.get(link)
            assert started.status_code == 303
            consent_page = browser.get(started.headers["location"])
            assert "wants access to your Sandbox account" in consent_page.text
            consent = re.search(r'name="consent"[^>]*\svalue="([^"]+)"', consent_page.text).group(1)
            authorize = started.headers["location"].split("?")[0]
            back = browser.post(authorize, data={"consent": consent, "decision": "allow", "user": user})
            assert back.status_code == 302
            done = browser.get(back.headers["location"])
        assert done.status_code == 200, done.text
        assert "sandbox reconnected" in done.text
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0
    summary = json.loads(out)
    assert summary["reconnect_url"] == link
    status = cli.json("connections", "list")
    reconnected = [c for c in status if c["user_id"] == user]
    assert reconnected[0]["status"] == "connected"
