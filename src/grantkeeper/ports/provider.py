"""The ports for talking to an OAuth provider: refresh (RFC 6749 section 6), introspection (RFC 7662) and
revocation (RFC 7009). ``TokenEndpoint`` and ``TokenRevoker`` are Protocols that the HTTP client in
``adapters.http`` implements; ``TokenStatus``, ``IntrospectionResult`` and ``RevocationResult`` are what they
answer, so the service layer acts on a provider's answers without knowing how they were fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from grantkeeper.core.model import Outcome
from grantkeeper.ports.records import ProviderConfig


class TokenEndpoint(Protocol):
    """Performs one refresh_token grant (RFC 6749 section 6) and classifies whatever comes back; asks whether
    a refresh token still works (RFC 7662) where the provider has an introspection endpoint."""

    async def refresh(self, provider: ProviderConfig, refresh_token: str) -> Outcome: ...

    async def introspect(self, provider: ProviderConfig, refresh_token: str) -> IntrospectionResult: ...


class CodeExchanger(Protocol):
    """Redeems an authorization code with its PKCE verifier (RFC 6749 section 4.1.3, RFC 7636) and classifies
    the answer as a refresh's: the browser side of connecting and reconnecting."""

    async def exchange_code(
        self, provider: ProviderConfig, code: str, code_verifier: str, redirect_uri: str
    ) -> Outcome: ...


class TokenStatus(StrEnum):
    """What an RFC 7662 introspection said about a token: it works, it does not, or no usable answer."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IntrospectionResult:
    """One RFC 7662 introspection; never holds a token. ``error_code`` says why the status is unknown (an
    RFC 6749 section 5.2 code, a network fault value, ``malformed_response``, or a local reason nothing was
    sent, such as ``no_introspection_endpoint``)."""

    status: TokenStatus
    http_status: int | None
    error_code: str | None = None


@dataclass(frozen=True)
class RevocationResult:
    """What one RFC 7009 revocation request came to; never holds a token or a secret.

    ``is_revoked`` is True for a 200 (RFC 7009 section 2.2: also sent for a token the server does not know,
    so it means "this token no longer works", not "it was valid"). ``error_code`` is an RFC 7009 section
    2.2.1 / RFC 6749 section 5.2 code (``unsupported_token_type``, ``invalid_client``), a network fault value
    (``connect_timeout``), or a local reason nothing was sent (``no_revocation_endpoint``).
    """

    is_revoked: bool
    http_status: int | None
    error_code: str | None


class TokenRevoker(Protocol):
    """Revokes one token at the provider (RFC 7009 section 2), e.g. when an app deletes a connection.

    Never raises for anything the provider or the network does: a 503 (RFC 7009 section 2.2.1) or a network
    fault comes back as a result with ``is_revoked`` False, and the caller decides whether to try again.
    """

    async def revoke(
        self, provider: ProviderConfig, token: str, token_type_hint: str
    ) -> RevocationResult: ...
