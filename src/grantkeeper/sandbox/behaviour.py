"""The answers the sandbox provider can give to a refresh request.

Each ``Behaviour`` imitates something a real authorization server does (RFC 6749 section 5.2 error codes,
HTTP failures, vendor quirks), so grantkeeper's outcome classification (DESIGN section 2) is exercised over
real HTTP. Fixed answers are rendered once, at import, to keep the token endpoint's hot path free of work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

Headers = list[tuple[bytes, bytes]]


class Behaviour(StrEnum):
    """How the sandbox answers one refresh request; the value is the name used over HTTP and in stats."""

    OK = "ok"
    OK_NO_ROTATION = "ok_no_rotation"
    OK_EXPIRES_IN_STRING = "ok_expires_in_string"
    RATE_LIMIT = "rate_limit"
    RATE_LIMIT_HTTP_DATE = "rate_limit_http_date"
    UNAVAILABLE = "unavailable"
    SERVER_ERROR = "server_error"
    BAD_GATEWAY = "bad_gateway"
    REQUEST_TIMEOUT = "request_timeout"
    HANG = "hang"
    RESET = "reset"
    INVALID_GRANT = "invalid_grant"
    INVALID_SCOPE = "invalid_scope"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_4XX = "unknown_4xx"
    NOT_FOUND = "not_found"
    INVALID_CLIENT = "invalid_client"
    UNAUTHORIZED_CLIENT = "unauthorized_client"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
    INVALID_REQUEST = "invalid_request"
    CONSENT_REQUIRED = "consent_required"
    INTERACTION_REQUIRED = "interaction_required"
    NOT_JSON = "not_json"
    NO_ACCESS_TOKEN = "no_access_token"  # noqa: S105
    SLACK_INVALID_REFRESH_TOKEN = "slack_invalid_refresh_token"  # noqa: S105
    GITHUB_BAD_REFRESH_TOKEN = "github_bad_refresh_token"  # noqa: S105


#: Behaviours whose answer is a 200 carrying a usable access token (they count as ``refreshes_ok``).
TOKEN_ISSUING: Final = frozenset({Behaviour.OK, Behaviour.OK_NO_ROTATION, Behaviour.OK_EXPIRES_IN_STRING})

#: Behaviours the ASGI layer must act out itself instead of sending a canned response.
DYNAMIC: Final = TOKEN_ISSUING | {Behaviour.RATE_LIMIT_HTTP_DATE, Behaviour.HANG, Behaviour.RESET}


@dataclass(frozen=True, slots=True)
class Canned:
    """A complete HTTP response rendered ahead of time."""

    status: int
    headers: Headers
    body: bytes


_JSON = b"application/json"
_HTML = b"text/html; charset=utf-8"
_TEXT = b"text/plain; charset=utf-8"
#: RFC 6749 section 5.1/5.2: token responses, errors included, must not be cached.
NO_STORE: Final[Headers] = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
#: RFC 6749 section 5.2: a 401 for client authentication names the scheme the client should use.
WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Basic realm="sandbox"')


def canned(
    status: int, body: bytes = b"", content_type: bytes | None = None, extra: Headers | None = None
) -> Canned:
    """Render a response with ``content-length`` (and ``content-type`` when there is a body)."""
    headers: Headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    headers.extend(extra or [])
    return Canned(status, headers, body)


def json_response(status: int, payload: dict[str, object], extra: Headers | None = None) -> Canned:
    """A JSON response with the no-store headers token responses need (RFC 6749 sections 5.1 and 5.2)."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return canned(status, body, _JSON, [*NO_STORE, *(extra or [])])


def _code(status: int, code: str, description: str | None = None, extra: Headers | None = None) -> Canned:
    payload: dict[str, object] = {"error": code}
    if description is not None:
        payload["error_description"] = description
    return json_response(status, payload, extra)


#: The fixed answers, by behaviour; the dynamic ones (see ``DYNAMIC``) are built per request.
CANNED: Final[dict[Behaviour, Canned]] = {
    Behaviour.RATE_LIMIT: _code(429, "rate_limited", "slow down", [(b"retry-after", b"7")]),
    Behaviour.UNAVAILABLE: canned(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", _HTML),
    Behaviour.SERVER_ERROR: _code(500, "server_error"),
    Behaviour.BAD_GATEWAY: canned(502, b"Bad Gateway", _TEXT),
    Behaviour.REQUEST_TIMEOUT: canned(408),
    Behaviour.INVALID_GRANT: _code(400, "invalid_grant", "Token has been expired or revoked."),
    Behaviour.INVALID_SCOPE: _code(400, "invalid_scope", "The requested scope is invalid."),
    Behaviour.UNAUTHORIZED: canned(401, extra=[WWW_AUTHENTICATE]),
    Behaviour.FORBIDDEN: canned(403, b"<html><body><h1>403 Forbidden</h1></body></html>", _HTML),
    Behaviour.UNKNOWN_4XX: _code(400, "weird_vendor_code"),
    Behaviour.NOT_FOUND: canned(404, b"<html><body><h1>404 Not Found</h1></body></html>", _HTML),
    Behaviour.INVALID_CLIENT: _code(401, "invalid_client", extra=[WWW_AUTHENTICATE]),
    Behaviour.UNAUTHORIZED_CLIENT: _code(400, "unauthorized_client"),
    Behaviour.UNSUPPORTED_GRANT_TYPE: _code(400, "unsupported_grant_type"),
    Behaviour.INVALID_REQUEST: _code(400, "invalid_request"),
    Behaviour.CONSENT_REQUIRED: _code(400, "consent_required"),
    Behaviour.INTERACTION_REQUIRED: _code(400, "interaction_required"),
    Behaviour.NOT_JSON: canned(200, b"<html>oops</html>", _HTML),
    Behaviour.NO_ACCESS_TOKEN: json_response(200, {"token_type": "Bearer", "expires_in": 3600}),
    Behaviour.SLACK_INVALID_REFRESH_TOKEN: json_response(
        200, {"ok": False, "error": "invalid_refresh_token"}
    ),
    Behaviour.GITHUB_BAD_REFRESH_TOKEN: _code(
        200, "bad_refresh_token", "The refresh token passed is incorrect or expired."
    ),
}

#: The answer to failed client authentication; its description sets it apart from ``INVALID_CLIENT``'s.
UNKNOWN_CLIENT: Final = _code(401, "invalid_client", "unknown client or wrong secret", [WWW_AUTHENTICATE])

#: Gateway timeout sent when a ``hang`` finally gives up.
HANG_TIMEOUT: Final = canned(504, b"<html><body><h1>504 Gateway Time-out</h1></body></html>", _HTML)

assert set(CANNED) | DYNAMIC == set(Behaviour), "every behaviour needs an answer"
