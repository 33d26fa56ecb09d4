"""A PostgreSQL server of the benchmark's own, with settings of its choosing, beside the machine's shared one.

The machine's server (127.0.0.1:5432) runs Debian's defaults: 128 MB of ``shared_buffers``, 1 GB of WAL
between checkpoints. That is fine for the tests, but not what anyone runs a million connections on: the
connections table and its indexes take about 1.1 GB, so a claim there waits on pages the server evicted. This
starts a second server from the same binaries on a free loopback port, with settings given as
``NAME=VALUE``, so a benchmark can measure the project against a server set up for its size, without
touching the shared one (tests and other benchmarks use it). The data directory is kept between runs under
the seed cache (``/tmp/grantkeeper-bench``), so a database seeded there is seeded once.

    .venv/bin/python bench/pg_cluster.py --setting shared_buffers=2GB   # prints its URL, Ctrl-C stops it

Used by ``claim_cost.py --own-server``. PostgreSQL refuses to run as root: when root, the directory belongs
to the ``postgres`` user and the server runs as that user.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from seed import CACHE_DIR
from support import free_port

DATA_DIR = CACHE_DIR / "postgresql-own"

#: What an operator holding a million connections sets first: shared buffers that hold the connections
#: table and its indexes (about 1.1 GB; PostgreSQL's own guidance is about a quarter of memory), and room for
#: the WAL between checkpoints. Not ``wal_compression``: measured here, compressing the claim's full-page
#: images cost more in the statement (45 against 17 ms) than it saved at the commit (0.8 against 3.5 ms).
SIZED_SETTINGS: tuple[str, ...] = ("shared_buffers=2GB", "max_wal_size=4GB")


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parent.parent.name)
    )
    if not found:
        raise SystemExit("no PostgreSQL server binaries under /usr/lib/postgresql")
    return found[-1].parent


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        shutil.chown(path, entry.pw_uid, entry.pw_gid)


def initialised(data_dir: Path = DATA_DIR) -> Path:
    """The data directory, made with ``initdb`` (trust auth on loopback) the first time."""
    if (data_dir / "PG_VERSION").exists():
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    _own(data_dir)
    command = [str(binaries() / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
               "-E", "UTF8"]  # fmt: skip
    subprocess.run(_as_server_user(command), check=True, capture_output=True, text=True)
    return data_dir


@contextmanager
def own_server(settings: Sequence[str], data_dir: Path = DATA_DIR) -> Iterator[str]:
    """Start the benchmark's own server with ``settings`` (``NAME=VALUE`` each); yields its URL (no database
    part, like ``support.PG_SERVER``) and stops it (fast shutdown) afterwards."""
    initialised(data_dir)
    port = free_port()
    options = [f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data_dir}"]
    for setting in settings:
        name, separator, value = setting.partition("=")
        if not separator or not name.replace("_", "").isalnum():
            raise SystemExit(f"a server setting is NAME=VALUE, not {setting!r}")
        options.append(f"-c {name}={value}")
    log = data_dir / "server.log"
    pg_ctl = [str(binaries() / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "120"]
    start = _as_server_user([*pg_ctl, "-o", " ".join(options), "start"])
    done = subprocess.run(start, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise SystemExit(f"the benchmark's own PostgreSQL did not start:\n{done.stdout}{done.stderr}{tail}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_server_user([*pg_ctl, "-m", "fast", "stop"]), capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setting", action="append", default=None, help="NAME=VALUE (repeatable)")
    args = parser.parse_args()
    with own_server(SIZED_SETTINGS if args.setting is None else args.setting) as url:
        print(url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
