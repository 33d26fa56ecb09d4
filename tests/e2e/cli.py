"""Run the real ``grantkeeper`` command in a subprocess, as a user or a script would."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Cli:
    database_url: str
    keys: str | None
    cwd: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRANTKEEPER_")}
        env["GRANTKEEPER_DATABASE_URL"] = self.database_url
        if self.keys:
            env["GRANTKEEPER_ENCRYPTION_KEYS"] = self.keys
        env["COLUMNS"] = "200"
        return env | extra

    def run(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "grantkeeper", *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=self.env(**env),
            timeout=120,
            check=False,
        )

    def run_in_terminal(self, *args: str, answer: str) -> subprocess.CompletedProcess[str]:
        """Run with stdin on a pseudo-terminal (so the command may ask), typing ``answer`` to it."""
        controller, terminal = pty.openpty()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "grantkeeper", *args],
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.cwd,
                env=self.env(),
            )
            os.write(controller, answer.encode())
            stdout, stderr = process.communicate(timeout=120)
        finally:
            os.close(terminal)
            os.close(controller)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "grantkeeper", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
            env=self.env(**env),
        )

    def json(self, *args: str, stdin: str | None = None) -> Any:
        result = self.run(*args, "--json", stdin=stdin)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)
