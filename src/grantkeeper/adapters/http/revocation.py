"""What a revocation response means (RFC 7009 section 2.2), for ``HttpTokenEndpoint.revoke``.

Kept apart from the sending so the reading rules are plain functions: the status decides, the body is read
only for an error code, and that code passes through the same redaction and shaping as a refresh error code
(``grantkeeper.core.classify``) so a provider quoting the request back cannot get a token into a result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from grantkeeper.core.classify import DEFAULT_PROFILE, sanitize
from grantkeeper.core.model import NetworkFault
from grantkeeper.core.oauth_wire import RawResponse, parse_body
from grantkeeper.ports import RevocationResult

#: The provider has no RFC 7009 endpoint configured: nothing was sent, the token may still be live.
NO_REVOCATION_ENDPOINT: Final = "no_revocation_endpoint"
#: The configured revocation URL breaks the endpoint URL rule (DESIGN section 4): nothing was sent.
INVALID_REVOCATION_URL: Final = "invalid_revocation_url"
#: An empty token: RFC 7009 section 2.1 makes ``token`` required, so nothing was sent.
NO_TOKEN: Final = "no_token"  # noqa: S105 (a reason code, not a secret)

#: RFC 7009 section 2.2.1: 503 means "try later"; with no code in the body this is the RFC 6749 name for it.
_UNAVAILABLE_CODE: Final = "temporarily_unavailable"
_STATUS_CODES: Final = {401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited"}


def not_sent(error_code: str) -> RevocationResult:
    """Nothing went over the wire (no endpoint, bad URL, no token)."""
    return RevocationResult(is_revoked=False, http_status=None, error_code=error_code)


def fault_result(fault: NetworkFault) -> RevocationResult:
    """The request may or may not have arrived; RFC 7009 revocation is idempotent, so a retry is safe."""
    return RevocationResult(is_revoked=False, http_status=None, error_code=fault.value)


def read_revocation_response(
    raw: RawResponse, *, is_oversized: bool, redact: tuple[str, ...]
) -> RevocationResult:
    """RFC 7009 section 2.2: a 2xx means the token is revoked, whatever the body says.

    The RFC names 200, sent also for a token the server does not know (section 2.2); any 2xx is taken the
    same way since the body is ignored. Anything else is not revoked, and ``error_code`` says why: the code
    in an RFC 6749 section 5.2 error body (``unsupported_token_type``, section 2.2.1, comes with a 400), else
    ``temporarily_unavailable`` for a 503 (section 2.2.1) or a name for the status (``http_307`` for a
    redirect, which is never followed). An oversized error body is judged by its status alone.
    """
    if 200 <= raw.status < 300:
        return RevocationResult(is_revoked=True, http_status=raw.status, error_code=None)
    code = None if is_oversized else error_code_of(raw, redact)
    if code is None:
        code = _UNAVAILABLE_CODE if raw.status == 503 else _STATUS_CODES.get(raw.status, f"http_{raw.status}")
    return RevocationResult(is_revoked=False, http_status=raw.status, error_code=code)


def error_code_of(raw: RawResponse, redact: tuple[str, ...]) -> str | None:
    """The body's ``error`` as a short identifier, with every secret we sent cut out before it is shaped.

    Redacting first matters: shaping lowercases the text, after which a token could no longer be found in it.
    """
    body = parse_body(raw.body, raw.content_type)
    if body is None:
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        error = error.get("code")
    if not isinstance(error, str):
        return None
    return DEFAULT_PROFILE.extract_error_code({"error": sanitize(error, redact)})
