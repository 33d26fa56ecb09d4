"""Every benchmark under ``bench/`` still runs, at a size that takes seconds.

The benchmarks are where the speed and memory targets are shown, and nothing else imports them, so a change to
the code they drive can break one without any test noticing: the SQLite refresh path moving off SQLAlchemy's
cursor events left ``claim_cost.py`` failing on SQLite until this file ran it. Each script runs here as an
operator would run it, in its own process, with sizes far too small to measure anything; what is checked is
that it finishes and reports what it was asked for, not its figures. Seeds go to a throwaway cache, and the
PostgreSQL databases a script seeds are dropped afterwards.

Not here: wrk, which ``worker_vs_server.py`` runs for the server's capacity (``--seconds 0`` leaves it out;
the load loops on aiohttp and on the engine's HTTP client, the engine, both bare loops and both Authlib
refreshers run), and the scale-out scenarios (``scale_out.py``: ``test_scale_scenarios.py`` runs them, marked
``scale``, apart from the default run).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.db import PostgresServer

BENCH = Path(__file__).resolve().parents[2] / "bench"
ROOT = BENCH.parent
TIMEOUT = 100  # under pytest-timeout's 120 s, so a hung script fails with its own command line
#: A database kind for ``--database``, and how a test notes the (stored, due) sizes a script seeds.
Backend = tuple[str, Callable[[int, int], None]]


def run_script(script: str, *arguments: str, environment: dict[str, str]) -> str:
    """Run ``bench/<script>`` to completion; its standard output and error, together."""
    command = [sys.executable, str(BENCH / script), *arguments]
    done = subprocess.run(
        command, cwd=ROOT, env=os.environ | environment, capture_output=True, text=True, timeout=TIMEOUT
    )
    output = done.stdout + done.stderr
    called = " ".join([script, *arguments])
    assert done.returncode == 0, f"{called} failed ({done.returncode}):\n{output[-4000:]}"
    return output


def json_lines(output: str) -> list[dict[str, object]]:
    """The JSON objects a script printed one per line (its machine-readable results)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def bench_environment(tmp_path: Path) -> dict[str, str]:
    """A throwaway seed cache, and ``src`` first on the path as ``bench/`` expects."""
    return {"GRANTKEEPER_BENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, bench_environment: dict[str, str]) -> Iterator[Backend]:
    """A database kind for ``--database``, and a function to note each (stored, due) size the script seeds:
    on PostgreSQL those databases are dropped at the end (the seed cache that would reuse them is gone)."""
    seeded: list[tuple[int, int]] = []
    if request.param == "sqlite":
        yield "sqlite", lambda n, due: None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")  # fails when PostgreSQL is down
    # the server's URL without a database, as bench/support.py expects it
    bench_environment["GRANTKEEPER_BENCH_PG"] = server.url_for("postgres").rsplit("/", 1)[0]
    yield "postgresql", lambda n, due: seeded.append((n, due))
    sys.path.insert(0, str(BENCH))
    try:
        from seed import database_name
    finally:
        sys.path.remove(str(BENCH))
    for n, due in seeded:
        server.drop(database_name(n, due))


def test_refresh_throughput(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, _ = backend
    output = run_script(
        "refresh_throughput.py", "--database", kind, "--n", "150", environment=bench_environment
    )
    (result,) = json_lines(output)
    assert result["database"] == kind
    assert result["n"] == 150
    assert float(str(result["cycle_per_s"])) > 0
    assert result["reuse_detected"] == 0


def test_claim_cost(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, seeds = backend
    for n in (1_300, 2_600):
        seeds(n, 1_300)
    output = run_script(
        "claim_cost.py", "--database", kind, "--n", "1300", "--n", "2600", "--min-due", "1300",
        "--rounds", "2", "--warmup", "1", environment=bench_environment,
    )  # fmt: skip
    results = json_lines(output)
    assert [(r["database"], r["n"]) for r in results] == [(kind, 1_300), (kind, 2_600)]
    for result in results:  # the claim statement was found and timed (it was not, on SQLite, for a while)
        assert float(str(result["statement_median_ms"])) > 0
        assert float(str(result["median_ms"])) >= float(str(result["statement_median_ms"]))
    assert "### plan:" in output


def test_worker_memory(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, seeds = backend
    seeds(1_700, 170)
    output = run_script(
        "worker_memory.py", "--database", kind, "--n", "1700", "--due", "170", "--max-cycles", "1",
        environment=bench_environment,
    )  # fmt: skip
    row = re.search(rf"^\| {kind} \| 1,700 \| 170 \| (\d+) \|.*\| (yes|no) \|$", output, re.MULTILINE)
    assert row is not None, output[-3000:]
    assert row.group(1) == "170"


def test_reseal_cost(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, seeds = backend
    seeds(600, 600)
    output = run_script("reseal_cost.py", "--database", kind, "--n", "600", environment=bench_environment)
    (result,) = json_lines(output)
    assert result["database"] == kind
    assert result["connections"] == 600
    assert result["unreadable"] == 0
    assert result["left_under_other_keys"] == {}
    assert result["readable_with_the_new_key_alone"] is True


def test_provider_wake(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, seeds = backend
    seeds(900, 900)
    output = run_script(
        "provider_wake.py", "--database", kind, "--stored", "900", "--backed-off", "300", "--rounds", "1",
        environment=bench_environment,
    )  # fmt: skip
    (result,) = json_lines(output)
    assert (result["database"], result["stored"], result["backed_off"]) == (kind, 900, 300)
    assert 290 <= int(str(result["all_woken"])) <= 300  # a retry drawn within the set-up's second is due
    assert result["limited_woken"] == 8


def test_notification_prune(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, _ = backend
    output = run_script(
        "notification_prune.py", "--database", kind, "--old", "1500", "--pending", "40",
        environment=bench_environment,
    )  # fmt: skip
    (result,) = json_lines(output)
    assert (result["database"], result["deleted"], result["left"]) == (kind, 1_500, 40)
    assert result["batches"] == 2  # 1,000 and 500


def test_recovery_commit(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, _ = backend
    output = run_script(
        "recovery_commit.py", "--database", kind, "--n", "70", "--rounds", "1", environment=bench_environment
    )
    (result,) = json_lines(output)
    assert (result["database"], result["n"]) == (kind, 70)
    # the script itself checks each kind's notices and paused workflows (70 + 35) before it reports
    for kind_of_commit in ("plain", "recovery", "disconnection", "paused"):
        assert float(str(result[f"{kind_of_commit}_us"])) > 0


def test_token_endpoint(backend: Backend, bench_environment: dict[str, str]) -> None:
    kind, _ = backend
    output = run_script(
        "token_endpoint.py", "--database", kind, "--n", "40", "--concurrency", "4", "--duration", "0.5",
        "--warmup", "0.2", "--rounds", "1", environment=bench_environment,
    )  # fmt: skip
    results = json_lines(output)
    assert results
    assert all(r["database"] == kind and r["errors"] == 0 for r in results)
    assert all(int(str(r["requests"])) > 0 for r in results)


def test_engine_ab_and_collector_time(bench_environment: dict[str, str]) -> None:
    output = run_script(
        "engine_ab.py", "--arm", "a=src", "--arm", "b=src", "--rounds", "1", "--n", "150",
        environment=bench_environment,
    )  # fmt: skip
    assert re.search(r"^\| a \| 1 \| [\d,]+ ", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^\| b \| 1 \| [\d,]+ ", output, re.MULTILINE), output[-3000:]
    output = run_script("collector_time.py", "--rounds", "1", "--n", "150", environment=bench_environment)
    assert re.search(r"^\| defaults \| 1 \|", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^\| settled \| 1 \|", output, re.MULTILINE), output[-3000:]


def test_store_floor_replays_the_engines_sql_exactly(
    backend: Backend, bench_environment: dict[str, str]
) -> None:
    # the script itself stops when the replay leaves the database other than the engine did
    kind, _note = backend  # it seeds fresh databases of its own each round and drops them
    output = run_script(
        "store_floor.py", "--database", kind, "--n", "150", "--rounds", "1", "--seconds", "0",
        environment=bench_environment,
    )  # fmt: skip
    (result,) = json_lines(output)
    assert result["database"] == kind
    assert result["reuse_detected"] == 0
    (round_,) = result["rounds"]  # type: ignore[misc]
    for statement in ("claim", "start", "commit_update", "attempt_log", "COMMIT"):
        assert float(round_[f"sql_{statement}_us"]) > 0, round_
    assert float(round_["sql_wall_us"]) > 0, round_
    assert float(round_["lean_cpu_us"]) > 0, round_
    assert float(round_["engine_per_s"]) > 0, round_
    ceiling_row = rf"^\| {kind} \| \d+\.\d\d \| \d+ \| \d+ \| [\d,]+ \| nan \| nan \| [\d,]+ \| \d+\.\d\d \| "
    assert re.search(ceiling_row, output, re.MULTILINE), output[-3000:]


def test_http_client_choice(bench_environment: dict[str, str]) -> None:
    output = run_script(
        "http_client_choice.py", "--refreshes", "40", "--rounds", "1", environment=bench_environment
    )
    answered = re.search(r"sandbox answered (\d+) requests, (\d+) ok", output)
    assert answered is not None, output[-3000:]
    assert answered.group(1) == answered.group(2)


def test_cli_startup_and_sqlite_sort_memory(bench_environment: dict[str, str]) -> None:
    output = run_script("cli_startup.py", "--rounds", "1", environment=bench_environment)
    assert "`grantkeeper --version`" in output
    output = run_script("sqlite_sort_memory.py", "--rows", "500", environment=bench_environment)
    assert re.search(r"^\| FILE \| 500 \|", output, re.MULTILINE), output
    assert re.search(r"^\| MEMORY \| 500 \|", output, re.MULTILINE), output


def test_steady_state(backend: Backend, bench_environment: dict[str, str]) -> None:
    """Mostly waiting: a few refreshes due over three seconds from three seconds on, one worker polling
    every five."""
    kind, seeds = backend
    seeds(2_900, 1)
    output = run_script(
        "steady_state.py", "--database", kind, "--n", "2900", "--minutes", "0.05", "--workers", "1",
        "--start-delay", "3", environment=bench_environment,
    )  # fmt: skip
    (result,) = json_lines(output)
    assert result["database"] == kind
    assert result["n"] == 2_900
    assert int(str(result["due_in_window"])) > 0
    assert result["refreshed"] == result["due_in_window"]
    assert result["reuse_detected"] == 0


def test_worker_vs_server_without_wrk(bench_environment: dict[str, str]) -> None:
    output = run_script(
        "worker_vs_server.py", "--seconds", "0", "--n", "160", "--rounds", "1", environment=bench_environment
    )
    (result,) = json_lines(output)
    assert result["reuse_detected"] == 0
    (round_,) = result["rounds"]  # type: ignore[misc]
    for client in ("aiohttp", "lean", "engine", "bare", "bare_lean", "authlib", "authlib_inline"):
        assert float(round_[f"{client}_per_s"]) > 0, round_
    assert re.search(r"^\| sqlite \| 32 \| nan \| ", output, re.MULTILINE), output[-3000:]
    # each bar round by round: a ratio and whether it was met (never without wrk's figure)
    bar_row = r"^\| engine/aiohttp loop \| 0.6 \| \d+\.\d\d \| [01] of 1 \|$"
    assert re.search(bar_row, output, re.MULTILINE), output[-3000:]
    no_wrk_row = r"^\| engine/raw \(wrk\) \| 0.6 \| nan \| 0 of 1 \|$"
    assert re.search(no_wrk_row, output, re.MULTILINE), output[-3000:]
    # the engine against loops on its own HTTP client: without wrk only engine/bare-lean is a number
    parts_row = r"^\| [\d,]+ \| nan \| [\d,]+ \| \d+ \| nan \| \d+\.\d\d \|$"
    assert re.search(parts_row, output, re.MULTILINE), output[-3000:]
