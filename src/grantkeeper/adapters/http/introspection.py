"""What an introspection response means (RFC 7662 section 2.2), for ``HttpTokenEndpoint.introspect``.

Only ``active`` matters here: a JSON boolean, required by the RFC. Anything else (an error status, a body that
is not JSON, ``"active": "true"`` as a string) is an unknown answer, and the caller then does what it did
before it could ask: it sends the refresh. Error codes pass through the same redaction and shaping as a
revocation's (``revocation.error_code_of``).
"""

from __future__ import annotations

from typing import Final

from grantkeeper.adapters.http.revocation import error_code_of
from grantkeeper.core.model import NetworkFault
from grantkeeper.core.oauth_wire import RawResponse, parse_body
from grantkeeper.ports import IntrospectionResult, TokenStatus

#: The provider has no RFC 7662 endpoint configured: nothing was sent.
NO_INTROSPECTION_ENDPOINT: Final = "no_introspection_endpoint"
#: The configured introspection URL breaks the endpoint URL rule (DESIGN section 4): nothing was sent.
INVALID_INTROSPECTION_URL: Final = "invalid_introspection_url"
#: A 200 whose body has no boolean ``active``.
MALFORMED_RESPONSE: Final = "malformed_response"


def not_sent(error_code: str) -> IntrospectionResult:
    return IntrospectionResult(TokenStatus.UNKNOWN, None, error_code)


def fault_result(fault: NetworkFault) -> IntrospectionResult:
    return IntrospectionResult(TokenStatus.UNKNOWN, None, fault.value)


def read_introspection_response(
    raw: RawResponse, *, is_oversized: bool, redact: tuple[str, ...]
) -> IntrospectionResult:
    """RFC 7662 section 2.2: a 200 with ``{"active": true|false, ...}``; section 2.3: errors as RFC 6749
    section 5.2 (a 401 for bad client credentials). ``active: false`` also covers a token the server does
    not know, one it revoked, and one issued to another client (section 4)."""
    if raw.status != 200 or is_oversized:
        code = None if is_oversized else error_code_of(raw, redact)
        return IntrospectionResult(TokenStatus.UNKNOWN, raw.status, code or f"http_{raw.status}")
    body = parse_body(raw.body, raw.content_type)
    active = None if body is None else body.get("active")
    if not isinstance(active, bool):
        return IntrospectionResult(TokenStatus.UNKNOWN, raw.status, MALFORMED_RESPONSE)
    return IntrospectionResult(TokenStatus.ACTIVE if active else TokenStatus.INACTIVE, raw.status)
