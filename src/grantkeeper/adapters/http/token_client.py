"""The token endpoint client: one RFC 6749 section 6 refresh_token grant per call, over pooled connections.

It also revokes tokens (RFC 7009, ``revoke``) over the same connections, when an app deletes a connection.
Both go through the lean HTTP/1.1 transport (``lean.py``; ADR 0008 says why not aiohttp).

Everything the provider or the network does becomes an ``Outcome`` (DESIGN section 2): the wire format and the
classification live in ``core``, so this module only sends, reads with limits, and maps exceptions to faults.
It never retries: a refresh_token grant is not idempotent (with rotation a replay can revoke the whole grant,
RFC 9700 section 4.14.2), so a failure is reported and the scheduler decides when to try again.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import datetime
from types import TracebackType
from typing import Self
from urllib.parse import quote_plus

from grantkeeper.adapters.http import introspection
from grantkeeper.adapters.http.faults import TRANSPORT_ERRORS, describe, network_fault
from grantkeeper.adapters.http.lean import LeanClient, check_field_value
from grantkeeper.adapters.http.revocation import (
    INVALID_REVOCATION_URL,
    NO_REVOCATION_ENDPOINT,
    NO_TOKEN,
    fault_result,
    not_sent,
    read_revocation_response,
)
from grantkeeper.core.classify import classify_fault, classify_response, missing_refresh_token, sanitize
from grantkeeper.core.model import ErrorInfo, Outcome, OutcomeClass
from grantkeeper.core.oauth_wire import (
    RawResponse,
    TokenRequest,
    build_code_request,
    build_introspection_request,
    build_refresh_request,
    build_revocation_request,
    parse_retry_after,
)
from grantkeeper.core.urls import validate_token_url
from grantkeeper.ports import (
    AuthMethod,
    Clock,
    IntrospectionResult,
    ProviderConfig,
    RevocationResult,
    TokenStatus,
)

_log = logging.getLogger(__name__)

#: A token response is a few kilobytes at most (a JWT id_token included); anything far bigger is not one.
MAX_BODY_BYTES = 64 * 1024


class HttpTokenEndpoint:
    """``TokenEndpoint`` over keep-alive HTTP/1.1 (RFC 6749 section 6, client authentication per 2.3.1).

    The transport is created lazily inside the running event loop, which it is bound to, and is shared by
    every refresh so connections to a provider are reused. ``connect_timeout`` bounds getting a connection
    (pool wait, DNS, TCP and TLS); ``read_timeout`` bounds each wait for data; the whole exchange is also
    capped at their sum so a server that drips bytes cannot hold a refresh forever. ``max_connections`` and
    ``max_connections_per_host`` count connections in use or being opened.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_connections: int = 100,
        max_connections_per_host: int | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        user_agent: str = "grantkeeper/0.1",
    ) -> None:
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        if max_connections < 1 or (max_connections_per_host is not None and max_connections_per_host < 1):
            raise ValueError("max_connections and max_connections_per_host must be at least 1")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        check_field_value("User-Agent", user_agent)
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._max_connections_per_host = max_connections_per_host or max_connections
        self._max_body_bytes = max_body_bytes
        self._user_agent = user_agent
        self._client: LeanClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pooled connections; a later ``refresh`` opens new ones."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def refresh(self, provider: ProviderConfig, refresh_token: str) -> Outcome:
        """Perform one refresh and classify it; never raises for anything the provider or the network does.

        Nothing is sent when there is no refresh token (reauthorization required, not a provider's
        ``invalid_request``) or when the token URL breaks DESIGN section 4 (config: the operator must fix it).
        """
        if not refresh_token.strip():
            outcome = missing_refresh_token()
        else:
            try:
                validate_token_url(provider.token_url)
            except ValueError as exc:
                error = ErrorInfo("invalid_token_url", sanitize(str(exc)))
                outcome = Outcome(OutcomeClass.CONFIG, None, error)
            else:
                outcome = await self._exchange(provider, refresh_token)
        if _log.isEnabledFor(logging.DEBUG):  # it runs for every refresh: skip building the extra fields
            _log_refresh(provider, outcome)
        return outcome

    async def _exchange(self, provider: ProviderConfig, refresh_token: str) -> Outcome:
        """Send and classify; ``now`` is read before sending, so ``expires_at`` errs on the early side."""
        request = build_refresh_request(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            refresh_token=refresh_token,
            use_basic_auth=provider.auth_method is AuthMethod.CLIENT_SECRET_BASIC,
        )
        started_at = self._clock.now()
        try:
            raw, is_oversized = await self._post(provider.token_url, request)
        except TRANSPORT_ERRORS as exc:
            return classify_fault(
                network_fault(exc), describe(exc, _secrets_of(provider, refresh_token, request))
            )
        secrets = _secrets_of(provider, refresh_token, request)
        if is_oversized and 200 <= raw.status < 300:
            return self._oversized(raw, started_at)
        return classify_response(
            raw, now=started_at, default_expires_in=provider.default_expires_in, redact=secrets
        )

    async def exchange_code(
        self, provider: ProviderConfig, code: str, code_verifier: str, redirect_uri: str
    ) -> Outcome:
        """Redeem an authorization code (RFC 6749 section 4.1.3, PKCE verifier per RFC 7636 section 4.5) and
        classify the answer as a refresh's; never raises for anything the provider or the network does.

        A code is single use, so, as with a refresh, nothing here ever retries. The code, the verifier and
        the client secret are redacted from anything the outcome carries."""
        try:
            validate_token_url(provider.token_url)
        except ValueError as exc:
            return Outcome(OutcomeClass.CONFIG, None, ErrorInfo("invalid_token_url", sanitize(str(exc))))
        request = build_code_request(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            use_basic_auth=provider.auth_method is AuthMethod.CLIENT_SECRET_BASIC,
        )
        secrets = _secrets_of(provider, code, request) + _token_forms(code_verifier)
        started_at = self._clock.now()
        try:
            raw, is_oversized = await self._post(provider.token_url, request)
        except TRANSPORT_ERRORS as exc:
            return classify_fault(network_fault(exc), describe(exc, secrets))
        if is_oversized and 200 <= raw.status < 300:
            return self._oversized(raw, started_at)
        return classify_response(
            raw,
            now=started_at,
            default_expires_in=provider.default_expires_in,
            redact=secrets,
            account_field=provider.account_field,
        )

    async def revoke(
        self,
        provider: ProviderConfig,
        token: str,
        token_type_hint: str = "refresh_token",  # noqa: S107
    ) -> RevocationResult:
        """Revoke ``token`` at ``provider.revocation_url`` (RFC 7009 section 2.1); never raises for anything
        the provider or the network does.

        RFC 7009 section 2.2: 200 means revoked (also for a token the server did not know); 503 means try
        later (section 2.2.1); a 400 carries a code such as ``unsupported_token_type``. A network fault gives
        its ``NetworkFault`` value, as a refresh would. Revocation is idempotent, so unlike a refresh the
        caller may simply try again. Nothing is sent without a revocation URL, with one that breaks the URL
        rule of DESIGN section 4 (it receives the client secret too), or with an empty token.
        """
        url = provider.revocation_url
        detail = ""
        if url is None or not url.strip():
            result = not_sent(NO_REVOCATION_ENDPOINT)
        elif not token.strip():
            result = not_sent(NO_TOKEN)
        else:
            try:
                validate_token_url(url, field="revocation URL")
            except ValueError as exc:
                result, detail = not_sent(INVALID_REVOCATION_URL), sanitize(str(exc))
            else:
                result, detail = await self._revoke(provider, url, token, token_type_hint)
        _log.debug(
            "token revocation for provider %s: %s%s",
            provider.name,
            "revoked" if result.is_revoked else result.error_code,
            f" ({detail})" if detail else "",
            extra={
                "action": "token_revocation",
                "provider": provider.name,
                "is_revoked": result.is_revoked,
                "http_status": result.http_status,
                "error_code": result.error_code,
            },
        )
        return result

    async def _revoke(
        self, provider: ProviderConfig, url: str, token: str, token_type_hint: str
    ) -> tuple[RevocationResult, str]:
        """Send and read one revocation; the text is a fault's redacted description, for the log only."""
        request = build_revocation_request(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            token=token,
            token_type_hint=token_type_hint,
            use_basic_auth=provider.auth_method is AuthMethod.CLIENT_SECRET_BASIC,
        )
        secrets = _secrets_of(provider, token, request)
        try:
            raw, is_oversized = await self._post(url, request)
        except TRANSPORT_ERRORS as exc:
            return fault_result(network_fault(exc)), describe(exc, secrets)
        return read_revocation_response(raw, is_oversized=is_oversized, redact=secrets), ""

    async def introspect(self, provider: ProviderConfig, refresh_token: str) -> IntrospectionResult:
        """Ask ``provider.introspection_url`` whether ``refresh_token`` still works (RFC 7662 section 2.1);
        never raises for anything the provider or the network does.

        Introspection changes nothing at the provider, so unlike a refresh it is safe to send when in doubt.
        Nothing is sent without an introspection URL, with one that breaks the URL rule of DESIGN section 4
        (it receives the client secret too), or with an empty token.
        """
        url = provider.introspection_url
        detail = ""
        if url is None or not url.strip():
            result = introspection.not_sent(introspection.NO_INTROSPECTION_ENDPOINT)
        elif not refresh_token.strip():
            result = introspection.not_sent(NO_TOKEN)
        else:
            try:
                validate_token_url(url, field="introspection URL")
            except ValueError as exc:
                result = introspection.not_sent(introspection.INVALID_INTROSPECTION_URL)
                detail = sanitize(str(exc))
            else:
                request = build_introspection_request(
                    client_id=provider.client_id,
                    client_secret=provider.client_secret,
                    token=refresh_token,
                    use_basic_auth=provider.auth_method is AuthMethod.CLIENT_SECRET_BASIC,
                )
                secrets = _secrets_of(provider, refresh_token, request)
                try:
                    raw, is_oversized = await self._post(url, request)
                except TRANSPORT_ERRORS as exc:
                    result = introspection.fault_result(network_fault(exc))
                    detail = describe(exc, secrets)
                else:
                    result = introspection.read_introspection_response(
                        raw, is_oversized=is_oversized, redact=secrets
                    )
        level = logging.WARNING if result.status is TokenStatus.UNKNOWN else logging.DEBUG
        _log.log(
            level,
            "token introspection for provider %s: %s%s",
            provider.name,
            result.status.value if result.error_code is None else result.error_code,
            f" ({detail})" if detail else "",
            extra={
                "action": "token_introspection",
                "provider": provider.name,
                "status": result.status.value,
                "http_status": result.http_status,
                "error_code": result.error_code,
            },
        )
        return result

    async def _post(self, url: str, request: TokenRequest) -> tuple[RawResponse, bool]:
        """POST the form (RFC 6749 section 6 / appendix B, RFC 7009 section 2.1) without following redirects;
        read at most the cap.

        Returns the response and whether its body was over the cap (the body is then empty, and the
        connection that carried it closed with the rest unread).
        """
        client = self._client or self._new_client()
        response = await client.post(url, request.headers, encode_form(request.form))
        raw = RawResponse(
            status=response.status,
            content_type=response.header(b"content-type") or "",
            body=response.body,
            retry_after=response.header(b"retry-after"),
        )
        return raw, response.is_oversized

    def _oversized(self, raw: RawResponse, started_at: datetime) -> Outcome:
        """A 2xx body past the cap cannot be read: transient, stored tokens untouched.

        An oversized error body (a 403 with a huge HTML page) is classified by its status alone, as an
        unreadable body would be.
        """
        retry_after = parse_retry_after(raw.retry_after, started_at)
        error = ErrorInfo("malformed_response", f"response body over {self._max_body_bytes} bytes")
        return Outcome(OutcomeClass.TRANSIENT, raw.status, error, retry_after)

    def _new_client(self) -> LeanClient:
        """The shared transport, made on first use in this loop; using it from another loop is a bug."""
        self._client = LeanClient(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            max_connections=self._max_connections,
            max_connections_per_host=self._max_connections_per_host,
            max_body_bytes=self._max_body_bytes,
            user_agent=self._user_agent,
        )
        return self._client


def _log_refresh(provider: ProviderConfig, outcome: Outcome) -> None:
    _log.debug(
        "token refresh for provider %s: %s",
        provider.name,
        outcome.klass.value,
        extra={
            "action": "token_refresh",
            "provider": provider.name,
            "outcome": outcome.klass.value,
            "http_status": outcome.http_status,
            "error_code": outcome.error.code if outcome.error else None,
        },
    )


def _secrets_of(provider: ProviderConfig, token: str, request: TokenRequest) -> tuple[str, ...]:
    """What must never reach an outcome: token and secret, also as the form and Basic header carry them."""
    authorization = request.headers.get("Authorization", "")
    return _token_forms(token) + _credential_forms(provider.client_secret, authorization)


def _token_forms(token: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value for value in (token, _quoted(token)) if value))


@functools.lru_cache(maxsize=1024)
def _credential_forms(client_secret: str, authorization: str) -> tuple[str, ...]:
    """A provider's secret as sent (raw, form-quoted, inside the Basic header); the same for every request."""
    values = (client_secret, quote_plus(client_secret), authorization.removeprefix("Basic ").strip())
    return tuple(dict.fromkeys(value for value in values if value))


#: Characters ``quote_plus`` leaves alone: most tokens are made of these only and need no quoting.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quoted(value: str) -> str:
    return value if _UNRESERVED.fullmatch(value) else quote_plus(value)


def encode_form(form: dict[str, str]) -> bytes:
    """``application/x-www-form-urlencoded`` (RFC 6749 appendix B), as ``urlencode`` writes it, without
    quoting the values that need none: it runs for every refresh."""
    return "&".join(f"{_quoted(key)}={_quoted(value)}" for key, value in form.items()).encode("ascii")
