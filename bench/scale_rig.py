"""The processes of ``bench/scale_out.py``: the sandbox provider, a pool of ``grantkeeper worker`` processes
(killable and restartable one by one), and the local PostgreSQL cluster (stoppable, always started again).

Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from support import CLIENT_ID, CLIENT_SECRET

#: Short timings: an attempt's deadline (connect + read timeout + 5 s) is 10 s instead of 25 s.
SHORT_TIMINGS = {"GRANTKEEPER_CONNECT_TIMEOUT_SECONDS": "2", "GRANTKEEPER_READ_TIMEOUT_SECONDS": "3"}

#: Log lines worth counting, by the start of their message (see service/attempt.py, starting.py, ...).
LOG_EVENTS = {
    "lost_rotation": "lost rotation for ",
    "in_flight_recovered": "recovered ",
    "commit_failed": "commit failed for ",
    "commit_recovered": "committed ",
    "commit_abandoned": "gave up committing ",
    "start_failed": "cannot record the start of ",
    "cycle_failed": "cycle failed ",
    "lease_lost": "lease lost before commit ",
    "attempt_error": "attempt for ",
    "provider_alert": "provider ",
}
_LOG_LINE = re.compile(r"^(?P<at>\S+ \S+) (?P<level>[A-Z]+) (?P<logger>\S+): (?P<message>.*)$")
_LOST_AT = re.compile(r"sending a refresh at (\S+ \S+) and")


class SandboxProc:
    """``python -m grantkeeper.sandbox --port 0`` in its own process, and a client for its control API."""

    def __init__(self, run_dir: Path, *, grace_seconds: float = 0.0, latency_ms: float = 0.0) -> None:
        out_path = run_dir / "sandbox.out"
        command = [
            sys.executable, "-m", "grantkeeper.sandbox", "--port", "0",
            "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
            "--grace-seconds", str(grace_seconds), "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        with out_path.open("w") as out:  # a file, not a pipe nobody reads: the server must never block on it
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=run_dir)
        deadline = time.monotonic() + 30
        while not (first := out_path.read_text().partition("\n")[0]).startswith("http"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start: {out_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.token_url = first.strip()
        parts = urlsplit(self.token_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._local = threading.local()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One control request over a keep-alive connection per thread (reopened once if it went stale)."""
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                conn.request(method, path, payload, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
                continue
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
            result: dict[str, Any] = json.loads(data or b"{}")
            return result
        raise AssertionError("unreachable")

    def issue(self, n: int, lifetime: int = 3600) -> list[dict[str, Any]]:
        grants: list[dict[str, Any]] = []
        while len(grants) < n:
            body = {
                "client_id": CLIENT_ID,
                "count": min(5000, n - len(grants)),
                "access_token_lifetime": lifetime,
            }
            grants += self.call("POST", "/_sandbox/grants", body)["grants"]
        return grants

    def stats(self) -> dict[str, Any]:
        return self.call("GET", "/_sandbox/stats/full")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


class Workers:
    """``count`` worker processes in slots; a slot's process can be SIGKILLed and restarted at once.

    Each worker's stdout (``--json`` cycle reports, unbuffered) and stderr (WARNING and up) are appended to
    ``w<slot>.out`` / ``w<slot>.err`` in the run directory, across restarts."""

    def __init__(
        self,
        count: int,
        run_dir: Path,
        url_for: Any,
        key_line: str,
        *,
        concurrency: int | None,
        poll_interval: float,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.count = count
        self._url_for = url_for
        self._lock = threading.Lock()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.spawns: Counter[int] = Counter()
        self.names: dict[int, str] = {}  # the current process's application_name, per slot
        base = {k: v for k, v in os.environ.items() if not k.startswith("GRANTKEEPER_")}
        self._env = (
            base
            | SHORT_TIMINGS
            | (extra_env or {})
            | {
                "GRANTKEEPER_ENCRYPTION_KEYS": key_line,
                "GRANTKEEPER_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.command = [sys.executable, "-m", "grantkeeper", "worker", "--json",
                        "--poll-interval", str(poll_interval)]  # fmt: skip
        if concurrency is not None:
            self.command += ["--concurrency", str(concurrency)]

    def start_all(self) -> None:
        for slot in range(self.count):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        """Start the slot's next process; its database sessions are named ``gk-scale-w<slot>-g<n>``."""
        self.names[slot] = f"gk-scale-w{slot}-g{self.spawns[slot] + 1}"
        env = self._env | {"GRANTKEEPER_DATABASE_URL": self._url_for(self.names[slot])}
        with (
            (self.run_dir / f"w{slot}.out").open("ab") as out,
            (self.run_dir / f"w{slot}.err").open("ab") as err,
        ):
            self.procs[slot] = subprocess.Popen(
                self.command, env=env, stdout=out, stderr=err, cwd=self.run_dir
            )
        self.spawns[slot] += 1

    def pids(self) -> dict[int, int]:
        with self._lock:
            return {slot: proc.pid for slot, proc in self.procs.items() if proc.poll() is None}

    def kill_and_restart(self, slot: int) -> None:
        """SIGKILL the slot's worker and start a new one at once."""
        with self._lock:
            proc = self.procs[slot]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self._spawn(slot)

    def exited(self) -> dict[int, int | None]:
        """Slots whose process has exited, with its code (a worker should never exit during a run)."""
        return {slot: proc.poll() for slot, proc in self.procs.items() if proc.poll() is not None}

    def stop_all(self, timeout: float = 30) -> dict[int, bool]:
        """SIGTERM every worker; per slot, whether it exited by itself within ``timeout`` (else SIGKILL)."""
        with self._lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.terminate()
            clean: dict[int, bool] = {}
            deadline = time.monotonic() + timeout
            for slot, proc in self.procs.items():
                try:
                    proc.wait(max(deadline - time.monotonic(), 0.1))
                    clean[slot] = True
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    clean[slot] = False
            return clean

    def log_events(self) -> dict[str, int]:
        """How often each of ``LOG_EVENTS`` appears in the workers' stderr, plus ERROR lines in total."""
        counts: Counter[str] = Counter()
        for path in self.run_dir.glob("w*.err"):
            for line in path.read_text(errors="replace").splitlines():
                match = _LOG_LINE.match(line)
                if match is None:
                    continue
                counts[f"level_{match['level']}"] += 1
                message = match["message"]
                for name, prefix in LOG_EVENTS.items():
                    if message.startswith(prefix):
                        counts[name] += 1
        return dict(counts)

    def lost_rotation_gaps(self) -> list[float]:
        """Per ``lost rotation`` log line: seconds from the lost attempt's start (its ``in_flight_since``) to
        the retry that found the grant dead (the line's own time; workers log in UTC on this machine)."""
        gaps: list[float] = []
        for path in self.run_dir.glob("w*.err"):
            for line in path.read_text(errors="replace").splitlines():
                match = _LOG_LINE.match(line)
                sent = _LOST_AT.search(line)
                if (
                    match is None
                    or sent is None
                    or not match["message"].startswith(LOG_EVENTS["lost_rotation"])
                ):
                    continue
                logged = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
                gaps.append((logged - datetime.fromisoformat(sent[1])).total_seconds())
        return sorted(gaps)

    def reports(self, slot: int | None = None) -> list[dict[str, Any]]:
        """The cycle reports (``--json``) the workers printed; ones cut off by a SIGKILL are skipped."""
        found: list[dict[str, Any]] = []
        decoder = json.JSONDecoder()
        slots = range(self.count) if slot is None else [slot]
        for s in slots:
            path = self.run_dir / f"w{s}.out"
            data = path.read_text(errors="replace") if path.exists() else ""
            index = 0
            while (start := data.find("{", index)) != -1:
                try:
                    value, index = decoder.raw_decode(data, start)
                except json.JSONDecodeError:
                    index = start + 1
                    continue
                if isinstance(value, dict) and "due" in value:
                    found.append(value)
        return found


class Postgres:
    """The local cluster (version from ``/etc/postgresql``), stopped and started with ``pg_ctlcluster``."""

    def __init__(self) -> None:
        self.version = sorted(os.listdir("/etc/postgresql"), key=lambda v: float(v))[-1]

    def _ctl(self, *args: str) -> None:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, "main", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def is_online(self) -> bool:
        out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
        return any(
            line.split()[:2] == [self.version, "main"] and "online" in line for line in out.splitlines()
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (every commit's WAL written out first); ``immediate``: a crash, as
        far as the database can tell (no shutdown checkpoint, recovery from the WAL on the next start)."""
        print(
            f"\n*** {time.strftime('%H:%M:%S')} STOPPING PostgreSQL {self.version}/main ({mode}) ***",
            file=sys.stderr,
        )
        self._ctl("stop", "-m", mode)
        print(f"*** {time.strftime('%H:%M:%S')} PostgreSQL is STOPPED ***", file=sys.stderr, flush=True)

    def start(self) -> None:
        print(f"*** {time.strftime('%H:%M:%S')} STARTING PostgreSQL {self.version}/main ***", file=sys.stderr)
        self._ctl("start")
        print(f"*** {time.strftime('%H:%M:%S')} PostgreSQL is STARTED ***\n", file=sys.stderr, flush=True)

    @contextmanager
    def always_started(self) -> Iterator[None]:
        """Whatever happens inside (an error, Ctrl-C, SIGTERM), the cluster is online again afterwards."""
        try:
            yield
        finally:
            if not self.is_online():
                for attempt in range(5):
                    try:
                        self.start()
                        break
                    except (subprocess.SubprocessError, OSError) as exc:
                        print(f"*** start failed ({exc}); retrying ***", file=sys.stderr)
                        time.sleep(2 + attempt)
