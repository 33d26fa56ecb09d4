"""Logging set-up with one redacting filter, so no token, secret or authorization header reaches a log line.

The filter is the last line of defence: the code never logs a token on purpose, but third-party libraries
(HTTP clients, servers) may log requests, and an exception message may echo a body.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    # Authorization: Bearer/Basic credentials, in headers or repr'd dicts
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # key=value and "key": "value" for anything that names a secret
    re.compile(
        r"(?i)([\"']?(?:access_token|refresh_token|id_token|client_secret|secret|password|api_key|"
        r"authorization)[\"']?\s*[:=]\s*[\"']?)([^\"'&\s,}]+)"
    ),
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _PATTERNS[1].sub(lambda m: f"{m.group(1)}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through ``redact`` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            cleaned += " | " + redact(f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}")
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = cleaned, None
        return True


def configure_logging(level: str = "INFO") -> None:
    """One stderr handler on the root logger, filtered, so library loggers are covered too."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces every migration context at INFO; that is noise on each CLI command.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
