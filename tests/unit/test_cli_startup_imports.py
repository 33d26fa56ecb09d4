"""The ``grantkeeper`` command starts without the libraries only some commands use.

Each command is a new process, and scripts run many of them: importing the web stack (FastAPI, uvicorn),
Alembic and the notification channels' clients used to take most of a second of every command's start-up.
They are imported by the commands that use them; this keeps them from creeping back into the start-up path.
The check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: Imported by some commands only: serve and demo (web), migrate (Alembic), the dispatcher (channels).
ON_DEMAND = ("fastapi", "starlette", "uvicorn", "alembic", "mako", "aiohttp", "aiosmtplib", "jinja2",
             "standardwebhooks")  # fmt: skip

PROBE = f"""
import json, sys
import grantkeeper.entrypoints.cli
print(json.dumps([name for name in {ON_DEMAND!r} if name in sys.modules]))
"""


def _loaded_at_start_up() -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


def test_the_command_line_starts_without_the_web_stack_alembic_or_the_channel_clients() -> None:
    assert _loaded_at_start_up() == []


def test_the_probe_sees_an_import_when_there_is_one() -> None:
    """The check itself works: naming a module that start-up does import is caught."""
    probe = PROBE.replace("import grantkeeper.entrypoints.cli", "import grantkeeper.entrypoints.api.app")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert {"fastapi", "starlette"} <= set(json.loads(done.stdout))
