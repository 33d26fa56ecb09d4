"""``HttpTokenEndpoint.revoke`` (RFC 7009) over real loopback HTTP: the sandbox and small aiohttp servers.

The sandbox proves a revoked refresh token's grant is dead afterwards; the small servers show what is sent
(both client authentication methods), the answers the sandbox never gives (503, 400 unsupported_token_type,
a redirect, an echo of the request), and that nothing secret reaches a result or a log line.
"""

from __future__ import annotations

import base64
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from grantkeeper.adapters.http.token_client import HttpTokenEndpoint
from grantkeeper.core.model import OutcomeClass
from grantkeeper.ports import AuthMethod, ProviderConfig, RevocationResult, TokenRevoker
from grantkeeper.sandbox import Sandbox, SandboxServer
from tests.fixtures.fake_http import serve_routes

CLIENT_ID = "app"
CLIENT_SECRET = "app-secret"  # the sandbox fixture's test client


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def provider_for(
    revocation_url: str | None,
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC,
    *,
    token_url: str = "http://127.0.0.1:9/oauth/token",
    client_secret: str = CLIENT_SECRET,
) -> ProviderConfig:
    return ProviderConfig(
        provider_id="prov-1",
        tenant_id="tenant-1",
        name="test-provider",
        token_url=token_url,
        client_id=CLIENT_ID,
        client_secret=client_secret,
        auth_method=auth_method,
        revocation_url=revocation_url,
    )


def sandbox_provider(server: SandboxServer, auth_method: AuthMethod) -> ProviderConfig:
    return provider_for(server.revocation_url, auth_method, token_url=server.token_url)


@pytest.fixture
async def endpoint() -> AsyncIterator[HttpTokenEndpoint]:
    async with HttpTokenEndpoint(WallClock(), connect_timeout=2.0, read_timeout=1.0) as endpoint:
        yield endpoint


def test_the_http_endpoint_is_a_token_revoker(endpoint: HttpTokenEndpoint) -> None:
    revoker: TokenRevoker = endpoint
    assert revoker is endpoint


# --- against the sandbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", list(AuthMethod))
async def test_a_revoked_refresh_token_no_longer_refreshes(
    auth_method: AuthMethod, sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id=CLIENT_ID)
    provider = sandbox_provider(sandbox_server, auth_method)

    result = await endpoint.revoke(provider, grant.refresh_token)

    assert result == RevocationResult(is_revoked=True, http_status=200, error_code=None)
    outcome = await endpoint.refresh(provider, grant.refresh_token)
    assert outcome.klass is OutcomeClass.AUTH
    assert outcome.error is not None
    assert outcome.error.code == "invalid_grant"


async def test_a_revoked_access_token_ends_its_grant_too(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id=CLIENT_ID)
    provider = sandbox_provider(sandbox_server, AuthMethod.CLIENT_SECRET_POST)
    result = await endpoint.revoke(provider, grant.access_token, token_type_hint="access_token")
    assert result.is_revoked
    outcome = await endpoint.refresh(provider, grant.refresh_token)
    assert outcome.error is not None
    assert outcome.error.code == "invalid_grant"


async def test_an_unknown_token_is_reported_revoked(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    # RFC 7009 section 2.2: "invalid tokens do not cause an error response"; other grants are untouched.
    grant = sandbox.issue_grant(client_id=CLIENT_ID)
    provider = sandbox_provider(sandbox_server, AuthMethod.CLIENT_SECRET_BASIC)
    result = await endpoint.revoke(provider, "sbx-rt-never-issued")
    assert result == RevocationResult(True, 200, None)
    assert (await endpoint.refresh(provider, grant.refresh_token)).klass is OutcomeClass.SUCCESS


# --- what goes over the wire, and answers the sandbox never gives ----------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class FakeRevoker:
    """A loopback revocation endpoint whose answer the tests choose by path."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


def _routes(fake: FakeRevoker) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    async def record(request: web.Request) -> None:
        body = await request.read()
        fake.seen.append(Seen(request.path, dict(request.headers), dict(parse_qsl(body.decode()))))

    @routes.post("/revoke")
    async def revoke(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=200)

    @routes.post("/unavailable")
    async def unavailable(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=503, headers={"Retry-After": "30"})

    @routes.post("/unsupported")
    async def unsupported(request: web.Request) -> web.Response:
        # RFC 7009 section 2.2.1: the server does not revoke this type of token.
        await record(request)
        return web.json_response({"error": "unsupported_token_type"}, status=400)

    @routes.post("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPTemporaryRedirect("/revoke")  # 307 keeps the POST: following it would resend the secret

    @routes.post("/echo")
    async def echo(request: web.Request) -> web.Response:
        # A careless provider quoting the whole request back, secrets included.
        text = (await request.read()).decode() + " " + request.headers.get("Authorization", "")
        return web.json_response({"error": text, "error_description": text}, status=400)

    return routes


@pytest.fixture
async def fake() -> AsyncIterator[FakeRevoker]:
    fake = FakeRevoker()
    async with serve_routes(_routes(fake)) as base_url:
        fake.base_url = base_url
        yield fake


async def test_basic_auth_revocation_sends_the_header_and_the_token(
    fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    provider = provider_for(fake.url("/revoke"), client_secret="p@ss word+/")
    result = await endpoint.revoke(provider, "rt/with+special=chars")
    assert result == RevocationResult(True, 200, None)
    (seen,) = fake.seen
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"app:p%40ss%20word%2B%2F").decode()
    assert seen.form == {"token": "rt/with+special=chars", "token_type_hint": "refresh_token"}


async def test_post_auth_revocation_sends_the_credentials_in_the_form(
    fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    provider = provider_for(fake.url("/revoke"), AuthMethod.CLIENT_SECRET_POST)
    result = await endpoint.revoke(provider, "at-1", token_type_hint="access_token")
    assert result.is_revoked
    (seen,) = fake.seen
    assert "Authorization" not in seen.headers
    assert seen.form == {
        "token": "at-1",
        "token_type_hint": "access_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }


async def test_503_means_try_later(fake: FakeRevoker, endpoint: HttpTokenEndpoint) -> None:
    result = await endpoint.revoke(provider_for(fake.url("/unavailable")), "rt-1")
    assert result == RevocationResult(False, 503, "temporarily_unavailable")


@pytest.mark.parametrize("auth_method", list(AuthMethod))
async def test_400_unsupported_token_type_is_reported(
    auth_method: AuthMethod, fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    result = await endpoint.revoke(
        provider_for(fake.url("/unsupported"), auth_method), "at-1", "access_token"
    )
    assert result == RevocationResult(False, 400, "unsupported_token_type")


async def test_redirects_are_not_followed(fake: FakeRevoker, endpoint: HttpTokenEndpoint) -> None:
    result = await endpoint.revoke(provider_for(fake.url("/redirect")), "rt-1")
    assert result == RevocationResult(False, 307, "http_307")
    assert [s.path for s in fake.seen] == ["/redirect"]  # the secret went nowhere else


async def test_a_provider_echoing_the_request_leaks_nothing(
    fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    token = "rt-Echo.Me~Please"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    for method in AuthMethod:
        result = await endpoint.revoke(provider_for(fake.url("/echo"), method), token)
        assert not result.is_revoked
        assert result.http_status == 400
        text = repr(result).lower()
        for secret in (token, CLIENT_SECRET, basic):
            assert secret.lower() not in text


# --- nothing sent ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("revocation_url", [None, "", "  "])
async def test_no_revocation_endpoint_sends_nothing(
    revocation_url: str | None, endpoint: HttpTokenEndpoint
) -> None:
    result = await endpoint.revoke(provider_for(revocation_url), "rt-1")
    assert result == RevocationResult(False, None, "no_revocation_endpoint")


@pytest.mark.parametrize(
    "suffix_or_url",
    [
        "http://provider.example/revoke",  # plain http off loopback
        "ftp://127.0.0.1/revoke",
        "#fragment",  # RFC 6749 section 3.2, appended to the fake's real URL
        "\n",
    ],
)
async def test_a_bad_revocation_url_sends_nothing(
    suffix_or_url: str, fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    url = suffix_or_url if "://" in suffix_or_url else fake.url("/revoke") + suffix_or_url
    result = await endpoint.revoke(provider_for(url), "rt-1")
    assert result == RevocationResult(False, None, "invalid_revocation_url")
    assert fake.seen == []


async def test_an_empty_token_sends_nothing(fake: FakeRevoker, endpoint: HttpTokenEndpoint) -> None:
    result = await endpoint.revoke(provider_for(fake.url("/revoke")), " ")
    assert result == RevocationResult(False, None, "no_token")
    assert fake.seen == []


# --- faults below HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port that was just free: nothing listens there, so a connect is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_closed_port_is_a_network_error_not_an_exception(
    closed_port: int, endpoint: HttpTokenEndpoint
) -> None:
    result = await endpoint.revoke(provider_for(f"http://127.0.0.1:{closed_port}/revoke"), "rt-1")
    assert result == RevocationResult(False, None, "connection_refused")


async def test_tls_to_a_plain_http_port_is_a_tls_error(
    fake: FakeRevoker, endpoint: HttpTokenEndpoint
) -> None:
    https_url = fake.url("/revoke").replace("http://", "https://")
    result = await endpoint.revoke(provider_for(https_url), "rt-1")
    assert result == RevocationResult(False, None, "tls_error")


# --- secrets ---------------------------------------------------------------------------------------------


async def test_no_token_or_secret_in_results_or_logs(
    sandbox: Sandbox,
    sandbox_server: SandboxServer,
    fake: FakeRevoker,
    closed_port: int,
    endpoint: HttpTokenEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "aiohttp.client", "aiohttp.internal", "asyncio", "grantkeeper"):
        caplog.set_level(logging.DEBUG, logger=name)
    grant = sandbox.issue_grant(client_id=CLIENT_ID)
    urls = [
        sandbox_server.revocation_url,
        fake.url("/unavailable"),
        fake.url("/unsupported"),
        fake.url("/echo"),
        fake.url("/redirect"),
        fake.url("/revoke") + "#bad",
        f"http://127.0.0.1:{closed_port}/revoke",
        fake.url("/revoke").replace("http://", "https://"),
        None,
    ]

    results = [
        await endpoint.revoke(provider_for(url, method, token_url=sandbox_server.token_url), token)
        for url in urls
        for method in AuthMethod
        for token in (grant.access_token, grant.refresh_token)
    ]

    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    secrets = {grant.refresh_token, grant.access_token, CLIENT_SECRET, basic}
    texts = [caplog.text, *(repr(r) for r in results)]
    texts += [str(r.__dict__) for r in caplog.records]  # the structured ``extra`` fields too
    for text in texts:
        for secret in secrets:
            assert secret not in text
    logged = [r for r in caplog.records if getattr(r, "action", None) == "token_revocation"]
    assert len(logged) == len(results)  # we did log, once per call
