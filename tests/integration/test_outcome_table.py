"""DESIGN section 2's outcome table, row by row, from real HTTP answers and real network faults over loopback.

Each sandbox behaviour is a real provider answer; ``HttpTokenEndpoint`` sends a real refresh_token grant
(RFC 6749 section 6) and must put the answer in the class the table names. Faults below HTTP (DNS, refused,
reset, read timeout) are produced for real too, never mocked.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.core.classify import missing_refresh_token
from grantkeeper.core.model import Outcome, OutcomeClass
from grantkeeper.ports import AuthMethod, ProviderConfig
from grantkeeper.sandbox import Behaviour, Sandbox, SandboxServer

SUCCESS = OutcomeClass.SUCCESS
AUTH = OutcomeClass.AUTH
REAUTH = OutcomeClass.REAUTH_REQUIRED
TRANSIENT = OutcomeClass.TRANSIENT
CONFIG = OutcomeClass.CONFIG

LIFETIME = 900  # the sandbox's access token lifetime, distinct from the provider default below
DEFAULT_EXPIRES_IN = 3600
READ_TIMEOUT = 1.0  # the sandbox fixture hangs for 5 s, so a hang ends as our read timeout


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def provider_for(token_url: str, *, client_secret: str = "app-secret") -> ProviderConfig:
    return ProviderConfig(
        provider_id="prov-1",
        tenant_id="tenant-1",
        name="sandbox",
        token_url=token_url,
        client_id="app",
        client_secret=client_secret,
        auth_method=AuthMethod.CLIENT_SECRET_BASIC,
        default_expires_in=DEFAULT_EXPIRES_IN,
    )


@pytest.fixture
async def endpoint() -> AsyncIterator[HttpTokenEndpoint]:
    async with HttpTokenEndpoint(WallClock(), connect_timeout=2.0, read_timeout=READ_TIMEOUT) as endpoint:
        yield endpoint


@dataclass(frozen=True)
class Row:
    klass: OutcomeClass
    http_status: int | None
    code: str | None


#: Every sandbox behaviour and the outcome DESIGN section 2 says it must produce.
TABLE: dict[Behaviour, Row] = {
    # success: 2xx JSON with a non-empty access_token
    Behaviour.OK: Row(SUCCESS, 200, None),
    Behaviour.OK_NO_ROTATION: Row(SUCCESS, 200, None),
    Behaviour.OK_EXPIRES_IN_STRING: Row(SUCCESS, 200, None),
    # auth: 401, 403, invalid_grant / invalid_scope, other 4xx without a known code, "bad refresh token" codes
    Behaviour.UNAUTHORIZED: Row(AUTH, 401, "unauthorized"),
    Behaviour.FORBIDDEN: Row(AUTH, 403, "forbidden"),
    Behaviour.INVALID_GRANT: Row(AUTH, 400, "invalid_grant"),
    Behaviour.INVALID_SCOPE: Row(AUTH, 400, "invalid_scope"),
    Behaviour.UNKNOWN_4XX: Row(AUTH, 400, "weird_vendor_code"),
    Behaviour.NOT_FOUND: Row(AUTH, 404, "http_404"),
    Behaviour.SLACK_INVALID_REFRESH_TOKEN: Row(AUTH, 200, "invalid_refresh_token"),
    Behaviour.GITHUB_BAD_REFRESH_TOKEN: Row(AUTH, 200, "bad_refresh_token"),
    # reauth_required: the provider says consent or interaction is required
    Behaviour.CONSENT_REQUIRED: Row(REAUTH, 400, "consent_required"),
    Behaviour.INTERACTION_REQUIRED: Row(REAUTH, 400, "interaction_required"),
    # transient: 429, 5xx, 408, timeouts, resets, a 2xx that is not a token response
    Behaviour.RATE_LIMIT: Row(TRANSIENT, 429, "rate_limited"),
    Behaviour.RATE_LIMIT_HTTP_DATE: Row(TRANSIENT, 429, "rate_limited"),
    Behaviour.UNAVAILABLE: Row(TRANSIENT, 503, "http_503"),
    Behaviour.SERVER_ERROR: Row(TRANSIENT, 500, "server_error"),
    Behaviour.BAD_GATEWAY: Row(TRANSIENT, 502, "http_502"),
    Behaviour.REQUEST_TIMEOUT: Row(TRANSIENT, 408, "request_timeout"),
    Behaviour.HANG: Row(TRANSIENT, None, "read_timeout"),
    Behaviour.RESET: Row(TRANSIENT, None, "connection_reset"),
    Behaviour.NOT_JSON: Row(TRANSIENT, 200, "malformed_response"),
    Behaviour.NO_ACCESS_TOKEN: Row(TRANSIENT, 200, "malformed_response"),
    # config: our client credentials or request are wrong
    Behaviour.INVALID_CLIENT: Row(CONFIG, 401, "invalid_client"),
    Behaviour.UNAUTHORIZED_CLIENT: Row(CONFIG, 400, "unauthorized_client"),
    Behaviour.UNSUPPORTED_GRANT_TYPE: Row(CONFIG, 400, "unsupported_grant_type"),
    Behaviour.INVALID_REQUEST: Row(CONFIG, 400, "invalid_request"),
}


def assert_row(outcome: Outcome, row: Row) -> None:
    assert (outcome.klass, outcome.http_status) == (row.klass, row.http_status), outcome
    if row.klass is SUCCESS:
        assert outcome.error is None
        assert outcome.tokens is not None
        assert outcome.tokens.access_token
    else:
        assert outcome.tokens is None, (
            "only a success may carry tokens (a malformed 2xx never overwrites them)"
        )
        assert outcome.error is not None
        assert outcome.error.code == row.code


def test_the_table_covers_every_sandbox_behaviour() -> None:
    assert set(TABLE) == set(Behaviour)


@pytest.mark.parametrize("behaviour", list(TABLE), ids=str)
async def test_sandbox_behaviour_is_classified_as_the_table_says(
    behaviour: Behaviour, sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=LIFETIME)
    sandbox.set_behaviour(grant.grant_id, behaviour)

    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)

    assert_row(outcome, TABLE[behaviour])
    assert sandbox.stats().by_behaviour == {behaviour.value: 1}  # the sandbox really acted this out, once


# --- success details -------------------------------------------------------------------------------------


async def test_success_with_rotation_returns_the_new_refresh_token(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=LIFETIME)
    started_at = datetime.now(UTC)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert outcome.tokens is not None
    assert (
        outcome.tokens.refresh_token == sandbox.current_refresh_token(grant.grant_id) != grant.refresh_token
    )
    assert outcome.tokens.access_token != grant.access_token
    assert outcome.tokens.expires_at is not None
    assert started_at <= outcome.tokens.expires_at - timedelta(seconds=LIFETIME) <= datetime.now(UTC)


async def test_success_without_rotation_returns_no_refresh_token(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=LIFETIME)
    sandbox.set_behaviour(grant.grant_id, Behaviour.OK_NO_ROTATION)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert outcome.klass is SUCCESS
    assert outcome.tokens is not None
    assert outcome.tokens.refresh_token is None  # the caller keeps the stored one


async def test_success_with_expires_in_as_a_string(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app", access_token_lifetime=LIFETIME)
    sandbox.set_behaviour(grant.grant_id, Behaviour.OK_EXPIRES_IN_STRING)
    started_at = datetime.now(UTC)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert outcome.tokens is not None
    assert outcome.tokens.expires_at is not None
    # "900" was read as 900 s, not ignored in favour of the provider default of 3600 s
    assert started_at <= outcome.tokens.expires_at - timedelta(seconds=LIFETIME) <= datetime.now(UTC)


# --- transient details -----------------------------------------------------------------------------------


async def test_rate_limit_retry_after_seconds(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    sandbox.set_behaviour(grant.grant_id, Behaviour.RATE_LIMIT)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert outcome.klass is TRANSIENT
    assert outcome.retry_after == timedelta(seconds=7)


async def test_rate_limit_retry_after_http_date(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    sandbox.set_behaviour(grant.grant_id, Behaviour.RATE_LIMIT_HTTP_DATE)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert outcome.klass is TRANSIENT
    assert outcome.retry_after is not None
    # the sandbox sends now + 120 s as an HTTP-date (whole seconds), read against our clock
    assert timedelta(seconds=115) <= outcome.retry_after <= timedelta(seconds=121)


async def test_dns_failure(endpoint: HttpTokenEndpoint) -> None:
    outcome = await endpoint.refresh(provider_for("https://grantkeeper-test.invalid/token"), "rt-dns")
    assert_row(outcome, Row(TRANSIENT, None, "dns_failure"))


async def test_connection_refused(endpoint: HttpTokenEndpoint) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connecting is refused
        outcome = await endpoint.refresh(provider_for(f"http://127.0.0.1:{port}/oauth/token"), "rt-refused")
    assert_row(outcome, Row(TRANSIENT, None, "connection_refused"))


async def test_hang_past_the_read_timeout_is_a_read_timeout_not_a_wait_for_the_504(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    sandbox.set_behaviour(grant.grant_id, Behaviour.HANG)
    started = datetime.now(UTC)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    waited = datetime.now(UTC) - started
    assert_row(outcome, Row(TRANSIENT, None, "read_timeout"))
    assert timedelta(seconds=READ_TIMEOUT * 0.9) <= waited < timedelta(seconds=sandbox.hang_seconds)


# --- config and reauth details ---------------------------------------------------------------------------


async def test_wrong_client_secret_is_config(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    provider = provider_for(sandbox_server.token_url, client_secret="not-the-secret")
    outcome = await endpoint.refresh(provider, grant.refresh_token)
    assert_row(outcome, Row(CONFIG, 401, "invalid_client"))
    assert sandbox.stats().refreshes_ok == 0


async def test_revoked_grant_is_auth(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    sandbox.revoke(grant.grant_id)
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url), grant.refresh_token)
    assert_row(outcome, Row(AUTH, 400, "invalid_grant"))


def test_no_refresh_token_on_file_requires_reauthorization() -> None:
    # Nothing is sent: without a refresh token there is no grant to attempt (DESIGN section 2).
    assert_row(missing_refresh_token(), Row(REAUTH, None, "no_refresh_token"))
