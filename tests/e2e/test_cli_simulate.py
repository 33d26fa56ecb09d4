"""``grantkeeper simulate`` from outside: JSON shape, human output, exit code 2 on bad input, no database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grantkeeper.entrypoints.cli import app

QUICK = ("--connections", "300", "--days", "0.25")
EXPECTED_KEYS = {
    "connections",
    "simulated_connections",
    "scale",
    "note",
    "days",
    "token_lifetime_seconds",
    "attempts",
    "successes",
    "failures",
    "false_disconnections",
    "true_disconnections",
    "revocations",
    "notifications",
    "transient_streaks",
    "refresh_rate",
    "lag_seconds",
    "capacity",
    "wall_seconds",
}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """No settings at all, in an empty directory: simulate needs neither a database nor a key."""
    for name in ("GRANTKEEPER_DATABASE_URL", "GRANTKEEPER_ENCRYPTION_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def test_json_prints_one_object_with_the_report_fields(runner: CliRunner, tmp_path: Path):
    result = runner.invoke(
        app,
        [
            "simulate",
            *QUICK,
            "--rate-429",
            "0.2",
            "--outage",
            "2:30",
            "--revocations-per-day",
            "0.2",
            "--json",
        ],
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == EXPECTED_KEYS
    assert report["connections"] == 300
    assert report["failures"]["by_cause"]["outage"] > 0
    assert set(report["notifications"]) >= {"total", "by_type", "per_user_mean", "per_user_max"}
    assert set(report["refresh_rate"]) == {"per_minute_peak", "per_minute_mean", "per_second_peak"}
    assert set(report["lag_seconds"]) == {"p50", "p99"}
    assert report["capacity"]["workers"] is None  # unlimited: the report says how many are needed
    assert report["capacity"]["workers_needed"] >= 1
    assert report["capacity"]["worker_rate_per_second"] == 2000  # the default ceiling
    assert list(tmp_path.iterdir()) == []  # no database file, no key file


def test_worker_rate_sets_a_workers_ceiling_and_0_lifts_it(runner: CliRunner):
    fast = ("--connections", "1000000", "--sample", "500", "--days", "0.1", "--latency-ms", "1", "--json")
    capped = json.loads(runner.invoke(app, ["simulate", *fast, "--worker-rate", "10"]).stdout)["capacity"]
    lifted = json.loads(runner.invoke(app, ["simulate", *fast, "--worker-rate", "0"]).stdout)["capacity"]

    assert capped["worker_rate_per_second"] == 10
    assert lifted["worker_rate_per_second"] is None
    # about 280 due a second: 10 a second each takes dozens of workers, 32 slots at 1 ms take one
    assert capped["workers_needed"] > 20
    assert lifted["workers_needed"] == 1
    assert "worker rate" in capped["workers_formula"]
    assert "worker rate" not in lifted["workers_formula"]


def test_provider_limits_are_reported_and_say_whether_they_keep_up(runner: CliRunner):
    args = ["simulate", "--connections", "1000000", "--sample", "500", "--days", "0.1", "--json"]
    tight = json.loads(runner.invoke(app, [*args, "--provider-rate-limit", "100"]).stdout)
    ample = json.loads(runner.invoke(app, [*args, "--provider-max-concurrency", "200"]).stdout)

    assert tight["capacity"]["provider"] == {
        "rate_limit_per_second": 100,
        "max_concurrency": None,
        "capacity_per_second": 100,
        "keeps_up": False,
    }
    assert tight["refresh_rate"]["per_second_peak"] <= 100.1
    assert ample["capacity"]["provider"]["capacity_per_second"] == 1000  # 200 in flight at 200 ms
    assert ample["capacity"]["provider"]["keeps_up"] is True

    human = runner.invoke(app, ["simulate", *QUICK, "--provider-rate-limit", "50"])
    assert human.exit_code == 0, human.output
    assert "provider limits" in human.stdout


def test_sample_is_scaled_and_said_so(runner: CliRunner):
    result = runner.invoke(
        app, ["simulate", "--connections", "100000", "--sample", "200", "--days", "0.1", "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["simulated_connections"] == 200
    assert report["scale"] == 500
    assert report["note"].startswith("sampled 200 of 100,000, counts scaled")


def test_human_output_is_a_table_with_workers_needed(runner: CliRunner):
    result = runner.invoke(app, ["simulate", *QUICK, "--workers", "2"])

    assert result.exit_code == 0, result.output
    for words in ("false disconnections", "refreshes per minute", "workers needed", "ceil(", "wall time"):
        assert words in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--connections", "0"), "connections must be at least 1"),
        (("--rate-429", "-0.1"), "429 rate must be between 0 and 1"),
        (("--rate-429", "0.7", "--rate-5xx", "0.4"), "add up to 1.1; they must not exceed 1"),
        (("--outage", "36"), "--outage '36': expected START_HOURS:DURATION_MINUTES"),
        (("--outage", "a:b"), "expected START_HOURS:DURATION_MINUTES"),
        (("--outage", "1:0"), "the duration over 0 minutes"),
        (("--outage", "48:30", "--days", "1"), "after the simulation ends"),
        (("--days", "nan"), "--days must be a finite number"),
        (("--sample", "10", "--connections", "5"), "sample must be between 1 and connections"),
        (("--latency-ms", "0"), "--latency-ms must be a finite number more than 0"),
        (("--worker-rate", "-5"), "--worker-rate must be 0 (no ceiling) or a finite number of at least 1"),
        (("--worker-rate", "nan"), "--worker-rate must be 0 (no ceiling) or a finite number"),
        (("--provider-rate-limit", "0"), "provider rate limit must be a finite number over 0"),
        (("--provider-rate-limit", "inf"), "provider rate limit must be a finite number over 0"),
        (("--provider-max-concurrency", "0"), "provider max concurrency must be at least 1"),
        (("--connections", "10000000"), "simulate a sample and scale it up (--sample 100000)"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line_and_no_report(runner: CliRunner, args, words):
    result = runner.invoke(app, ["simulate", *args, "--json"])

    assert result.exit_code == 2
    assert result.stdout == ""
    assert words in result.stderr
    assert result.stderr.startswith("error:")


def test_runs_as_the_installed_command_without_any_settings(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "grantkeeper", "simulate", *QUICK, "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["attempts"] > 0
    assert list(tmp_path.iterdir()) == []
