"""The sandbox's outage switch, latency and the stats benchmarks check limits with; and their CLI flags.

Real HTTP over loopback. Latencies are a few tenths of a second at most, so the whole file stays quick.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest

from grantkeeper.sandbox import Behaviour, GrantTokens, Sandbox, SandboxServer, SandboxStats, serve_sandbox
from grantkeeper.sandbox.__main__ import _parser, main
from tests.fixtures.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, ManualClock, read_line

AUTH = (SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)


@pytest.fixture
def http(sandbox_server: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_server.base_url, timeout=5) as client:
        yield client


@pytest.fixture
def grant(sandbox: Sandbox) -> GrantTokens:
    return sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)


def refresh(http: httpx.Client, token: str, auth: tuple[str, str] = AUTH) -> httpx.Response:
    return http.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=auth)


# --- outage ----------------------------------------------------------------------------------------------


def test_an_outage_answers_every_token_request_until_it_ends(
    sandbox: Sandbox, http: httpx.Client, grant: GrantTokens
) -> None:
    assert http.put("/_sandbox/outage", json={"behaviour": "unavailable"}).status_code == 200
    assert http.get("/_sandbox/outage").json() == {"behaviour": "unavailable"}
    answers = [
        refresh(http, grant.refresh_token),
        refresh(http, "sbx-rt-unknown"),
        refresh(http, grant.refresh_token, auth=("app", "wrong")),  # even before client authentication
        http.post("/oauth/token", data={"grant_type": "password"}),
        http.get("/oauth/token"),
    ]
    assert [a.status_code for a in answers] == [503] * 5
    assert all("503 Service Unavailable" in a.text for a in answers)
    stats = sandbox.stats()
    assert (stats.requests, stats.refreshes_ok, stats.by_behaviour) == (5, 0, {"unavailable": 5})
    assert stats.by_grant == {}  # the gateway answered: no grant was looked at

    assert http.delete("/_sandbox/outage").status_code == 200
    assert http.get("/_sandbox/outage").json() == {"behaviour": None}
    assert refresh(http, grant.refresh_token).status_code == 200  # nothing rotated during the outage
    assert sandbox.stats().by_behaviour == {"unavailable": 5, "ok": 1}


def test_the_python_outage_switch_takes_any_error_behaviour(
    sandbox: Sandbox, http: httpx.Client, grant: GrantTokens
) -> None:
    sandbox.set_outage(Behaviour.RATE_LIMIT)
    assert sandbox.outage is Behaviour.RATE_LIMIT
    limited = refresh(http, grant.refresh_token)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    sandbox.set_outage(None)
    assert refresh(http, grant.refresh_token).status_code == 200
    with pytest.raises(ValueError, match="cannot issue tokens"):
        sandbox.set_outage(Behaviour.OK_NO_ROTATION)
    assert sandbox.outage is None


# --- latency and in-flight requests ----------------------------------------------------------------------


def test_latency_delays_every_token_answer(sandbox: Sandbox, http: httpx.Client, grant: GrantTokens) -> None:
    assert http.put("/_sandbox/latency", json={"seconds": 0.2}).status_code == 200
    assert sandbox.latency == 0.2
    assert http.get("/_sandbox/latency").json() == {"seconds": 0.2}
    for auth in (AUTH, ("app", "wrong")):
        started = time.monotonic()
        response = refresh(http, grant.refresh_token, auth=auth)
        assert time.monotonic() - started >= 0.2, response.status_code
    started = time.monotonic()
    assert http.get("/_sandbox/stats").status_code == 200
    assert time.monotonic() - started < 0.2  # the control API is not delayed


async def test_max_in_flight_counts_requests_answered_at_the_same_time(
    sandbox: Sandbox, sandbox_server: SandboxServer
) -> None:
    grants = sandbox.issue_grants(client_id=SANDBOX_CLIENT_ID, count=4)
    sandbox.set_latency(0.3)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def post(token: str, login: tuple[str, str] = AUTH) -> int:
            data = {"grant_type": "refresh_token", "refresh_token": token}
            headers = {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()}
            async with session.post(sandbox_server.token_url, data=data, headers=headers) as response:
                await response.read()
                return response.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(post(g.refresh_token) for g in grants), post("x", ("app", "no")))
        elapsed = time.monotonic() - started
    assert statuses == [200, 200, 200, 200, 401]
    assert 0.3 <= elapsed < 1.2  # they waited side by side, not one after another
    stats = sandbox.stats()
    assert stats.max_in_flight == 5
    assert stats.max_in_flight_by_client == {SANDBOX_CLIENT_ID: 4}  # the failed login is nobody's

    sandbox.set_latency(0)
    sandbox.reset_stats()
    with httpx.Client(base_url=sandbox_server.base_url, timeout=5) as http:
        for g in grants:
            assert refresh(http, sandbox.current_refresh_token(g.grant_id)).status_code == 200
    assert sandbox.stats().max_in_flight == 1


# --- stats -----------------------------------------------------------------------------------------------


def test_requests_are_counted_by_the_second_they_arrive_in() -> None:
    wall = ManualClock(1_700_000_000.75)
    sandbox = Sandbox(wall_clock=wall)
    sandbox.add_client(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    grant = sandbox.issue_grant(client_id=SANDBOX_CLIENT_ID)
    with serve_sandbox(sandbox) as server, httpx.Client(base_url=server.base_url, timeout=5) as http:
        token = refresh(http, grant.refresh_token).json()["refresh_token"]
        refresh(http, "sbx-rt-unknown")
        wall.now += 0.5
        for _ in range(3):
            token = refresh(http, token).json()["refresh_token"]

        full = http.get("/_sandbox/stats/full").json()
        assert full["requests_by_second"] == {"1700000000": 2, "1700000001": 3}
        assert set(full) == {f.name for f in dataclasses.fields(SandboxStats)}
        assert (full["max_in_flight"], full["grace_uses"]) == (1, 0)
        assert full["max_in_flight_by_client"] == {SANDBOX_CLIENT_ID: 1}
        # The original stats document keeps exactly its original fields.
        assert set(http.get("/_sandbox/stats").json()) == {
            "requests",
            "refreshes_ok",
            "reuse_detected",
            "by_behaviour",
            "by_grant",
        }
        assert sandbox.stats().requests_by_second == {1_700_000_000: 2, 1_700_000_001: 3}

        assert http.post("/_sandbox/stats/reset").status_code == 200
        assert sandbox.stats() == SandboxStats()


def test_older_positional_construction_of_stats_still_works() -> None:
    stats = SandboxStats(3, 2, 1, {"ok": 2}, {"grant-1": 3})
    assert (stats.grace_uses, stats.requests_by_second, stats.max_in_flight) == (0, {}, 0)


# --- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "fragment"),
    [
        ("PUT", "/outage", b'{"behaviour": "explode"}', "unknown behaviour"),
        ("PUT", "/outage", b'{"behaviour": "ok"}', "cannot issue tokens"),
        ("PUT", "/outage", b"{}", "behaviour"),
        ("PUT", "/outage", b"[]", "JSON object"),
        ("PUT", "/latency", b'{"seconds": -1}', "seconds must be a finite number"),
        ("PUT", "/latency", b'{"seconds": "slow"}', "seconds must be a finite number"),
        ("PUT", "/latency", b'{"seconds": NaN}', "seconds must be a finite number"),
        ("PUT", "/latency", b'{"seconds": true}', "seconds must be a finite number"),
        ("PUT", "/latency", b'{"ms": 5}', "seconds is required"),
        (
            "POST",
            "/clients",
            b'{"client_id": "x", "client_secret": "y", "rotation_grace_seconds": -5}',
            "rotation_grace_seconds must be a finite number",
        ),
        (
            "POST",
            "/clients",
            b'{"client_id": "app", "client_secret": "new", "rotation_grace_seconds": "30s"}',
            "rotation_grace_seconds must be a finite number",
        ),
    ],
)
def test_bad_control_input_gets_400_and_changes_nothing(
    sandbox: Sandbox,
    http: httpx.Client,
    grant: GrantTokens,
    method: str,
    path: str,
    body: bytes,
    fragment: str,
) -> None:
    response = http.request(method, "/_sandbox" + path, content=body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert (sandbox.outage, sandbox.latency) == (None, 0.0)
    with pytest.raises(ValueError, match="unknown client_id"):
        sandbox.issue_grant(client_id="x")
    assert refresh(http, grant.refresh_token).status_code == 200  # "app" keeps its secret


def test_wrong_methods_on_the_new_control_routes(http: httpx.Client) -> None:
    assert http.delete("/_sandbox/latency").status_code == 405
    assert http.post("/_sandbox/outage").status_code == 405
    assert http.put("/_sandbox/stats/full").status_code == 405


@pytest.mark.parametrize("seconds", [-0.1, math.inf, math.nan])
def test_bad_latencies_are_refused(sandbox: Sandbox, seconds: float) -> None:
    with pytest.raises(ValueError, match="latency"):
        sandbox.set_latency(seconds)
    assert sandbox.latency == 0.0


# --- the command line ------------------------------------------------------------------------------------


def test_cli_flags_parse() -> None:
    argv = ["--client-id", "b", "--client-secret", "s", "--grace-seconds", "1.5"]
    args = _parser().parse_args([*argv, "--latency-ms", "20", "--cpu", "1"])
    assert (args.grace_seconds, args.latency_ms, args.cpu) == (1.5, 20.0, 1)
    defaults = _parser().parse_args([])
    assert (defaults.grace_seconds, defaults.latency_ms, defaults.cpu) == (0.0, 0.0, None)


@pytest.mark.parametrize(
    "argv",
    [
        ["--latency-ms", "-1"],
        ["--latency-ms", "soon"],
        ["--cpu", "-1"],
        ["--cpu", "first"],
        ["--grace-seconds", "nan", "--client-id", "b", "--client-secret", "s"],
        ["--grace-seconds", "30"],  # no --client-id to apply it to
    ],
)
def test_cli_refuses_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--port", "0"])
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_reports_a_cpu_it_cannot_pin_to(capsys: pytest.CaptureFixture[str]) -> None:
    before = os.sched_getaffinity(0)
    assert main(["--cpu", "100000", "--port", "0"]) == 1
    assert "cannot pin to CPU 100000" in capsys.readouterr().err
    assert os.sched_getaffinity(0) == before


def test_standalone_sandbox_applies_cpu_grace_and_latency() -> None:
    cpu = min(os.sched_getaffinity(0))
    command = [sys.executable, "-m", "grantkeeper.sandbox", "--port", "0", "--cpu", str(cpu)]
    command += ["--client-id", "bench", "--client-secret", "bench-secret"]
    command += ["--grace-seconds", "30", "--latency-ms", "100"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            base = read_line(proc.stdout, timeout=10).removesuffix("/oauth/token")
            assert os.sched_getaffinity(proc.pid) == {cpu}
            with httpx.Client(base_url=base, timeout=5) as http:
                assert http.get("/_sandbox/latency").json() == {"seconds": 0.1}
                grant = http.post("/_sandbox/grants", json={"client_id": "bench"}).json()["grants"][0]
                started = time.monotonic()
                auth = ("bench", "bench-secret")
                assert refresh(http, grant["refresh_token"], auth).status_code == 200
                assert time.monotonic() - started >= 0.1
                assert refresh(http, grant["refresh_token"], auth).status_code == 200  # in grace
                stats = http.get("/_sandbox/stats/full").json()
                assert (stats["grace_uses"], stats["reuse_detected"]) == (1, 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
