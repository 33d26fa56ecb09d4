"""Read a JSONL import file: one connection per line, every bad line reported by number, all or nothing.

Validation is pure (text in, rows or errors out); the caller imports only when the whole file is clean, so a
file with one broken line changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from grantkeeper.ports import NewConnection

_REQUIRED = ("provider", "user_id", "refresh_token")
_KNOWN = frozenset(
    ("provider", "user_id", "refresh_token", "access_token", "expires_at", "email", "workflows")
)
_MAX_FIELD = 4096


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_time(value: object) -> datetime:
    """ISO 8601 (with offset; a naive time is taken as UTC) or Unix seconds, as DESIGN section 4 says.

    Only 1970 to 9000 is accepted: times at the calendar's edges overflow date arithmetic and mean nothing
    for a token's expiry.
    """
    parsed = _parse_any_time(value)
    try:
        in_utc = parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("time is out of range") from exc
    if not _EARLIEST <= in_utc < _LATEST:
        raise ValueError("time must be between 1970 and 9000")
    return in_utc


def _parse_any_time(value: object) -> datetime:
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 time or Unix seconds")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("Unix seconds out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _parse_any_time(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError as exc:
            raise ValueError(f"{_preview(text)!r} is not an ISO 8601 time or Unix seconds") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError("must be an ISO 8601 time or Unix seconds")


def _preview(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _string(obj: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing required field {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} must be a non-empty string")
    if len(value) > _MAX_FIELD:
        raise ValueError(f"field {key!r} is longer than {_MAX_FIELD} characters")
    return value


def _workflows(obj: dict[str, Any]) -> tuple[str, ...]:
    value = obj.get("workflows", [])
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError("field 'workflows' must be a list of non-empty strings")
    return tuple(dict.fromkeys(w.strip() for w in value))


def parse_line(text: str, providers: Set[str]) -> NewConnection:
    """One JSON object -> a validated ``NewConnection``; raises ValueError with a message safe to print."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("must be a JSON object")
    unknown = sorted(set(obj) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(repr(k) for k in unknown)}")
    provider = _string(obj, "provider", required=True) or ""
    if provider not in providers:
        raise ValueError(f"unknown provider {provider!r} (add it with `grantkeeper providers add`)")
    try:
        expires_at = parse_time(obj["expires_at"]) if obj.get("expires_at") is not None else None
    except ValueError as exc:
        raise ValueError(f"field 'expires_at': {exc}") from None
    return NewConnection(
        provider=provider,
        user_id=_string(obj, "user_id", required=True) or "",
        refresh_token=_string(obj, "refresh_token", required=True),
        access_token=_string(obj, "access_token", required=False),
        expires_at=expires_at,
        email=_string(obj, "email", required=False),
        workflows=_workflows(obj),
    )


def parse_import(lines: Iterable[str], providers: Set[str]) -> tuple[list[NewConnection], list[LineError]]:
    """Every line is checked; blank lines are skipped. Errors name fields, never echo a token."""
    rows: list[NewConnection] = []
    errors: list[LineError] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            rows.append(parse_line(text, providers))
        except ValueError as exc:
            errors.append(LineError(number, str(exc)))
    if not rows and not errors:
        errors.append(LineError(0, "the file holds no connections"))
    return rows, errors
