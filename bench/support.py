"""What every benchmark here needs: free loopback ports, the sandbox provider in its own process, and a
fresh database of either kind that is dropped afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_SERVER = os.environ.get("GRANTKEEPER_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
CLIENT_ID, CLIENT_SECRET = "bench", "bench-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a child and wait for it; kill it if it does not go."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


@contextmanager
def sandbox_process() -> Iterator[str]:
    """The sandbox provider in its own process (client ``CLIENT_ID``); yields its base URL once it listens."""
    port = free_port()
    command = [sys.executable, "-m", "grantkeeper.sandbox", "--port", str(port),
               "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # the token URL: it is listening
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@contextmanager
def fresh_database(kind: str, tmp: Path, label: str, template: str | None = None) -> Iterator[str]:
    """A new database for one measurement: a SQLite file in ``tmp`` or a PostgreSQL database; empty, or a
    copy of ``template`` (a SQLite file's path, or a PostgreSQL database's name)."""
    if kind == "sqlite":
        path = tmp / (label + ".db")
        if template is not None:
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    from grantkeeper.adapters.db.engine import make_engine

    name = f"gk_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    clause = f' TEMPLATE "{template}"' if template is not None else ""
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
