"""The sandbox's control API: the ``Sandbox`` methods over HTTP, for benchmarks running it in another process.

Plain functions from (method, path, body) to (status, JSON object), keeping the rules apart from ASGI.
Bad input changes nothing and gets a 400 naming what is wrong.

``GET /_sandbox/stats`` keeps its original five fields, which existing callers compare exactly;
``GET /_sandbox/stats/full`` has every ``SandboxStats`` field (``requests_by_second`` keys become strings,
as JSON object keys must), the authorization-code counts included.

``POST /_sandbox/clients`` takes ``client_id``, ``client_secret`` and optionally ``rotate_refresh_tokens``,
``rotation_grace_seconds``, ``redirect_uris`` (a list of absolute http or https URLs without a fragment)
and ``access_token_lifetime`` (of the grants its code exchanges create).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final

from grantkeeper.sandbox.authorize import redirect_uri_problem
from grantkeeper.sandbox.behaviour import Behaviour
from grantkeeper.sandbox.state import Sandbox

Result = tuple[int, dict[str, object]]
MAX_BULK_GRANTS: Final = 1_000_000
_BEHAVIOURS: Final = ", ".join(b.value for b in Behaviour)
_BASIC_STATS: Final = ("requests", "refreshes_ok", "reuse_detected", "by_behaviour", "by_grant")


class BadInputError(ValueError):
    """Control input that cannot be acted on; its message is the 400's explanation."""


def _ok() -> Result:
    return 200, {"ok": True}


def _error(status: int, message: str) -> Result:
    return status, {"error": message}


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadInputError("body must be a JSON object")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadInputError(f"{key} must be a non-empty string")
    return value


def _int(obj: dict[str, Any], key: str, default: int, maximum: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise BadInputError(f"{key} must be an integer from 0 to {maximum}")
    return value


def _seconds(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    value = obj.get(key, default)
    if value is None:
        raise BadInputError(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadInputError(f"{key} must be a finite number of seconds >= 0")
    return float(value)


def _behaviour(value: object) -> Behaviour:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return Behaviour(value)
    raise BadInputError(f"unknown behaviour {value!r}; one of: {_BEHAVIOURS}")


def _redirect_uris(body: dict[str, Any]) -> list[str]:
    """The optional ``redirect_uris``: a JSON list of URLs, each one fit to register (or BadInputError)."""
    value = body.get("redirect_uris", [])
    if not isinstance(value, list):
        raise BadInputError("redirect_uris must be a list of URLs")
    for index, uri in enumerate(value):
        problem = redirect_uri_problem(uri)
        if problem is not None:
            raise BadInputError(f"redirect_uris[{index}] {problem}: {uri!r}")
    return value


def _add_client(sandbox: Sandbox, body: dict[str, Any]) -> Result:
    rotate = body.get("rotate_refresh_tokens", True)
    if not isinstance(rotate, bool):
        raise BadInputError("rotate_refresh_tokens must be a boolean")
    grace = _seconds(body, "rotation_grace_seconds", 0.0)
    uris = _redirect_uris(body)
    lifetime = _int(body, "access_token_lifetime", 3600, 10**9)
    sandbox.add_client(
        _str(body, "client_id"),
        _str(body, "client_secret"),
        rotate,
        grace,
        redirect_uris=uris,
        access_token_lifetime=lifetime,
    )
    return _ok()


def _issue_grants(sandbox: Sandbox, body: dict[str, Any]) -> Result:
    count = _int(body, "count", 1, MAX_BULK_GRANTS)
    lifetime = _int(body, "access_token_lifetime", 3600, 10**9)
    raw = body.get("behaviour")
    scope = body.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise BadInputError("scope must be a string")
    behaviour = None if raw is None else _behaviour(raw)
    grants = sandbox.issue_grants(_str(body, "client_id"), count, lifetime, behaviour=behaviour, scope=scope)
    return 200, {"grants": [asdict(g) for g in grants]}


def _set_behaviour(sandbox: Sandbox, grant_id: str, body: dict[str, Any]) -> Result:
    if "behaviour" not in body:
        raise BadInputError('body must be {"behaviour": NAME} or {"behaviour": null}')
    raw = body["behaviour"]
    sandbox.set_behaviour(grant_id, None if raw is None else _behaviour(raw))
    return _ok()


def _script(sandbox: Sandbox, grant_id: str, body: dict[str, Any]) -> Result:
    raw = body.get("behaviours")
    if not isinstance(raw, list):
        raise BadInputError('body must be {"behaviours": [NAME, ...]}')
    sandbox.script(grant_id, [_behaviour(b) for b in raw])
    return _ok()


def _fractions(sandbox: Sandbox, body: dict[str, Any]) -> Result:
    fractions: dict[Behaviour, float] = {}
    for name, fraction in body.items():
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise BadInputError(f"fraction for {name!r} must be a number")
        fractions[_behaviour(name)] = float(fraction)
    sandbox.set_fractions(fractions)
    return _ok()


def _outage(sandbox: Sandbox) -> Result:
    outage = sandbox.outage
    return 200, {"behaviour": None if outage is None else outage.value}


def _set_outage(sandbox: Sandbox, body: dict[str, Any]) -> Result:
    if "behaviour" not in body:
        raise BadInputError('body must be {"behaviour": NAME} or {"behaviour": null}')
    raw = body["behaviour"]
    sandbox.set_outage(None if raw is None else _behaviour(raw))
    return _ok()


def _end_outage(sandbox: Sandbox) -> Result:
    sandbox.set_outage(None)
    return _ok()


def _set_latency(sandbox: Sandbox, body: dict[str, Any]) -> Result:
    sandbox.set_latency(_seconds(body, "seconds"))
    return _ok()


def _stats(sandbox: Sandbox, full: bool) -> Result:
    stats = asdict(sandbox.stats())
    return 200, stats if full else {key: stats[key] for key in _BASIC_STATS}


def _revoke(sandbox: Sandbox, grant_id: str) -> Result:
    sandbox.revoke(grant_id)
    return _ok()


def _reset_stats(sandbox: Sandbox) -> Result:
    sandbox.reset_stats()
    return _ok()


def _grant_route(sandbox: Sandbox, method: str, grant_id: str, action: str, body: bytes) -> Result | None:
    routes: dict[tuple[str, str], Callable[[], Result]] = {
        ("GET", ""): lambda: (200, sandbox.describe(grant_id)),
        ("PUT", "behaviour"): lambda: _set_behaviour(sandbox, grant_id, _object(body)),
        ("POST", "script"): lambda: _script(sandbox, grant_id, _object(body)),
        ("POST", "revoke"): lambda: _revoke(sandbox, grant_id),
    }
    if not any(a == action for _, a in routes):
        return None
    route = routes.get((method, action))
    return route() if route is not None else _error(405, f"{method} is not allowed here")


def handle(sandbox: Sandbox, method: str, path: str, body: bytes) -> Result:
    """Dispatch one control request; ``path`` starts with ``/_sandbox/``."""
    parts = path.removeprefix("/_sandbox/").strip("/").split("/")
    simple: dict[tuple[str, str], Callable[[], Result]] = {
        ("POST", "clients"): lambda: _add_client(sandbox, _object(body)),
        ("POST", "grants"): lambda: _issue_grants(sandbox, _object(body)),
        ("PUT", "fractions"): lambda: _fractions(sandbox, _object(body)),
        ("GET", "outage"): lambda: _outage(sandbox),
        ("PUT", "outage"): lambda: _set_outage(sandbox, _object(body)),
        ("DELETE", "outage"): lambda: _end_outage(sandbox),
        ("GET", "latency"): lambda: (200, {"seconds": sandbox.latency}),
        ("PUT", "latency"): lambda: _set_latency(sandbox, _object(body)),
        ("GET", "stats"): lambda: _stats(sandbox, full=False),
        ("GET", "stats/full"): lambda: _stats(sandbox, full=True),
        ("POST", "stats/reset"): lambda: _reset_stats(sandbox),
    }
    try:
        key = "/".join(parts)
        if any(k == key for _, k in simple):
            route = simple.get((method, key))
            return route() if route is not None else _error(405, f"{method} is not allowed on {path}")
        if len(parts) in (2, 3) and parts[0] == "grants" and parts[1]:
            result = _grant_route(sandbox, method, parts[1], parts[2] if len(parts) == 3 else "", body)
            if result is not None:
                return result
    except ValueError as exc:  # BadInputError, and the Sandbox's own checks (unknown ids, bad fractions)
        return _error(400, str(exc))
    return _error(404, f"no control endpoint {method} {path}")
