"""``HttpTokenEndpoint`` against the sandbox and against small loopback servers that misbehave on purpose.

The sandbox proves the grant works end to end (both client authentication methods, rotation, concurrency); the
small servers show the wire details a conforming provider never exercises: what exactly is sent, redirects,
oversized or dripping bodies, broken HTTP, TLS to a plain port, a full accept queue.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from grantkeeper.adapters.http import MAX_BODY_BYTES, HttpTokenEndpoint, validate_token_url
from grantkeeper.core.model import Outcome, OutcomeClass
from grantkeeper.ports import AuthMethod, ProviderConfig
from grantkeeper.sandbox import Behaviour, Sandbox, SandboxServer
from tests.fixtures.fake_http import serve_routes

CLIENT_SECRET = "app-secret"  # the sandbox fixture's test client
TRANSIENT = OutcomeClass.TRANSIENT


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def provider_for(
    token_url: str,
    auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC,
    *,
    client_id: str = "app",
    client_secret: str = CLIENT_SECRET,
) -> ProviderConfig:
    return ProviderConfig(
        provider_id="prov-1",
        tenant_id="tenant-1",
        name="test-provider",
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        auth_method=auth_method,
    )


@pytest.fixture
async def endpoint() -> AsyncIterator[HttpTokenEndpoint]:
    async with HttpTokenEndpoint(WallClock(), connect_timeout=2.0, read_timeout=1.0) as endpoint:
        yield endpoint


def assert_fault(outcome: Outcome, code: str) -> None:
    assert outcome.klass is TRANSIENT
    assert outcome.http_status is None
    assert outcome.tokens is None
    assert outcome.error is not None
    assert outcome.error.code == code, outcome.error


# --- against the sandbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize("auth_method", list(AuthMethod))
async def test_both_client_auth_methods_refresh_at_the_sandbox(
    auth_method: AuthMethod, sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    outcome = await endpoint.refresh(provider_for(sandbox_server.token_url, auth_method), grant.refresh_token)
    assert outcome.klass is OutcomeClass.SUCCESS
    assert sandbox.stats().refreshes_ok == 1


@pytest.mark.parametrize("auth_method", list(AuthMethod))
async def test_both_client_auth_methods_really_carry_the_secret(
    auth_method: AuthMethod, sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    provider = provider_for(sandbox_server.token_url, auth_method, client_secret="wrong-secret")
    outcome = await endpoint.refresh(provider, grant.refresh_token)
    assert outcome.klass is OutcomeClass.CONFIG
    assert outcome.error is not None
    assert outcome.error.code == "invalid_client"


async def test_rotation_returns_a_new_refresh_token_that_works_next_time(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    grant = sandbox.issue_grant(client_id="app")
    provider = provider_for(sandbox_server.token_url)

    first = await endpoint.refresh(provider, grant.refresh_token)
    assert first.tokens is not None
    assert first.tokens.refresh_token is not None
    assert first.tokens.refresh_token != grant.refresh_token

    second = await endpoint.refresh(provider, first.tokens.refresh_token)
    assert second.klass is OutcomeClass.SUCCESS
    assert sandbox.stats().refreshes_ok == 2


async def test_replaying_a_rotated_refresh_token_is_an_auth_failure(
    sandbox: Sandbox, sandbox_server: SandboxServer, endpoint: HttpTokenEndpoint
) -> None:
    # Why the client never retries on its own: a replayed grant revokes the whole grant (RFC 9700 4.14.2).
    grant = sandbox.issue_grant(client_id="app")
    provider = provider_for(sandbox_server.token_url)
    assert (await endpoint.refresh(provider, grant.refresh_token)).klass is OutcomeClass.SUCCESS
    replay = await endpoint.refresh(provider, grant.refresh_token)
    assert replay.klass is OutcomeClass.AUTH
    assert sandbox.stats().reuse_detected == 1


async def test_64_concurrent_refreshes_share_one_session(
    sandbox: Sandbox, sandbox_server: SandboxServer
) -> None:
    grants = [sandbox.issue_grant(client_id="app") for _ in range(64)]
    provider = provider_for(sandbox_server.token_url)
    async with HttpTokenEndpoint(WallClock(), max_connections=16) as endpoint:
        outcomes = await asyncio.gather(*(endpoint.refresh(provider, g.refresh_token) for g in grants))
    assert [o.klass for o in outcomes] == [OutcomeClass.SUCCESS] * 64
    new_tokens = {o.tokens.refresh_token for o in outcomes if o.tokens is not None}
    assert len(new_tokens) == 64
    assert sandbox.stats().refreshes_ok == 64


@pytest.mark.parametrize("behaviour", list(Behaviour), ids=str)
async def test_no_token_or_secret_in_outcomes_or_logs(
    behaviour: Behaviour,
    sandbox: Sandbox,
    sandbox_server: SandboxServer,
    endpoint: HttpTokenEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("aiohttp", "aiohttp.client", "aiohttp.internal", "asyncio", "grantkeeper"):
        caplog.set_level(logging.DEBUG, logger=name)
    grant = sandbox.issue_grant(client_id="app")
    sandbox.set_behaviour(grant.grant_id, behaviour)

    outcomes = [
        await endpoint.refresh(provider_for(sandbox_server.token_url, method), grant.refresh_token)
        for method in AuthMethod
    ]

    basic = base64.b64encode(f"app:{CLIENT_SECRET}".encode()).decode()
    secrets = {grant.refresh_token, grant.access_token, CLIENT_SECRET, basic}
    for outcome in outcomes:
        if outcome.tokens is not None:
            secrets.add(outcome.tokens.access_token)
            secrets.update({outcome.tokens.refresh_token} - {None})  # type: ignore[arg-type]
    texts = [caplog.text, *(repr(o) for o in outcomes)]
    texts += [f"{o.error.code} {o.error.description}" for o in outcomes if o.error is not None]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert any(getattr(r, "action", None) == "token_refresh" for r in caplog.records)  # we did log


# --- what goes over the wire -----------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    peer_port: int


@dataclass
class FakeProvider:
    """A loopback token endpoint whose answers the tests choose by path."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


TOKEN_JSON = {"access_token": "at-new", "refresh_token": "rt-new", "token_type": "Bearer", "expires_in": 60}


def _fake_routes(fake: FakeProvider) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    async def record(request: web.Request) -> None:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        fake.seen.append(
            Seen(request.method, request.path, dict(request.headers), dict(parse_qsl(body.decode())), peer[1])
        )

    @routes.post("/token")
    async def token(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(float(request.query.get("delay", "0")))
        return web.json_response(TOKEN_JSON)

    @routes.post("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPTemporaryRedirect("/token")  # 307 keeps the POST: following it would resend the secret

    @routes.post("/big")
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (MAX_BODY_BYTES + 1), content_type="application/json")

    @routes.post("/exactly-the-cap")
    async def exactly_the_cap(request: web.Request) -> web.Response:
        body = json.dumps(TOKEN_JSON).encode()
        return web.Response(body=body + b" " * (MAX_BODY_BYTES - len(body)), content_type="application/json")

    @routes.post("/big-chunked")
    async def big_chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Retry-After": "30"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(MAX_BODY_BYTES // 4096 + 8):
            await response.write(b" " * 4096)
        await response.write_eof()
        return response

    @routes.post("/drip")
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(100):  # one byte every 0.1 s: never idle long enough for the per-read timeout
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    @routes.post("/gzip")
    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps(TOKEN_JSON).encode())
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    @routes.post("/echo")
    async def echo(request: web.Request) -> web.Response:
        # A careless provider quoting the whole request back, secrets included.
        text = (await request.read()).decode() + " " + request.headers.get("Authorization", "")
        return web.json_response({"error": text, "error_description": text}, status=400)

    return routes


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fake = FakeProvider()
    async with serve_routes(_fake_routes(fake)) as base_url:
        fake.base_url = base_url
        yield fake


async def test_basic_auth_request_is_a_form_post_with_the_header(
    fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    provider = provider_for(fake.url("/token"), client_id="my:app", client_secret="p@ss word+/")
    outcome = await endpoint.refresh(provider, "rt/with+special=chars")
    assert outcome.klass is OutcomeClass.SUCCESS
    (seen,) = fake.seen
    assert seen.method == "POST"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"] == "grantkeeper/0.1"
    assert (
        seen.headers["Authorization"] == "Basic " + base64.b64encode(b"my%3Aapp:p%40ss%20word%2B%2F").decode()
    )
    assert seen.form == {"grant_type": "refresh_token", "refresh_token": "rt/with+special=chars"}


async def test_post_auth_request_carries_the_credentials_in_the_form(
    fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    provider = provider_for(fake.url("/token"), AuthMethod.CLIENT_SECRET_POST, client_secret="p@ss word+/")
    await endpoint.refresh(provider, "rt-1")
    (seen,) = fake.seen
    assert "Authorization" not in seen.headers
    assert seen.form == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "app",
        "client_secret": "p@ss word+/",
    }


async def test_user_agent_is_configurable(fake: FakeProvider) -> None:
    async with HttpTokenEndpoint(WallClock(), user_agent="acme-sync/2.0 (grantkeeper)") as endpoint:
        await endpoint.refresh(provider_for(fake.url("/token")), "rt-1")
    assert fake.seen[0].headers["User-Agent"] == "acme-sync/2.0 (grantkeeper)"


async def test_redirects_are_not_followed(fake: FakeProvider, endpoint: HttpTokenEndpoint) -> None:
    outcome = await endpoint.refresh(provider_for(fake.url("/redirect")), "rt-1")
    assert outcome.klass is OutcomeClass.CONFIG  # a token URL that redirects is misconfigured
    assert outcome.http_status == 307
    assert [s.path for s in fake.seen] == ["/redirect"]  # the secret went nowhere else


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_body_over_the_cap_is_transient_malformed(
    path: str, fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    outcome = await endpoint.refresh(provider_for(fake.url(path)), "rt-1")
    assert outcome.klass is TRANSIENT
    assert outcome.http_status == 200
    assert outcome.tokens is None
    assert outcome.error is not None
    assert outcome.error.code == "malformed_response"
    if path == "/big-chunked":
        assert outcome.retry_after == timedelta(seconds=30)


async def test_body_of_exactly_the_cap_is_read(fake: FakeProvider, endpoint: HttpTokenEndpoint) -> None:
    outcome = await endpoint.refresh(provider_for(fake.url("/exactly-the-cap")), "rt-1")
    assert outcome.klass is OutcomeClass.SUCCESS


async def test_gzip_body_is_decompressed(fake: FakeProvider, endpoint: HttpTokenEndpoint) -> None:
    outcome = await endpoint.refresh(provider_for(fake.url("/gzip")), "rt-1")
    assert outcome.tokens is not None
    assert outcome.tokens.access_token == "at-new"


async def test_a_dripping_body_hits_the_overall_deadline(fake: FakeProvider) -> None:
    async with HttpTokenEndpoint(WallClock(), connect_timeout=0.5, read_timeout=0.5) as endpoint:
        started = asyncio.get_running_loop().time()
        outcome = await endpoint.refresh(provider_for(fake.url("/drip")), "rt-1")
        elapsed = asyncio.get_running_loop().time() - started
    assert_fault(outcome, "read_timeout")
    assert elapsed < 3.0  # capped near connect + read (1 s), not the 10 s the drip would take


async def test_a_provider_echoing_the_request_leaks_nothing(
    fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    refresh_token = "rt-Echo.Me~Please"
    for method in AuthMethod:
        outcome = await endpoint.refresh(provider_for(fake.url("/echo"), method), refresh_token)
        assert outcome.klass is OutcomeClass.AUTH  # unknown code, 400
        assert outcome.error is not None
        text = f"{outcome.error.code} {outcome.error.description}".lower()
        assert refresh_token.lower() not in text
        assert CLIENT_SECRET not in text
        assert base64.b64encode(f"app:{CLIENT_SECRET}".encode()).decode().lower() not in text


async def test_requests_share_pooled_connections(fake: FakeProvider) -> None:
    provider = provider_for(fake.url("/token?delay=0.05"))
    async with HttpTokenEndpoint(WallClock(), max_connections=8) as endpoint:
        for _ in range(2):
            outcomes = await asyncio.gather(*(endpoint.refresh(provider, f"rt-{i}") for i in range(64)))
            assert all(o.klass is OutcomeClass.SUCCESS for o in outcomes)
    assert len(fake.seen) == 128
    assert len({s.peer_port for s in fake.seen}) <= 8  # at most 8 connections, reused across both rounds


# --- faults below HTTP -----------------------------------------------------------------------------------

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _raw_server(handler: RawHandler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/token"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


def _answer_then_close(raw: bytes) -> RawHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    return handler


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "connection_reset"),  # closed without a response
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"access', "connection_reset"),  # body cut short
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "protocol_error"),  # not HTTP at all
    ],
    ids=["closed", "truncated", "not-http"],
)
async def test_broken_http_is_a_transient_fault(raw: bytes, code: str, endpoint: HttpTokenEndpoint) -> None:
    server, url = await _raw_server(_answer_then_close(raw))
    async with server:
        outcome = await endpoint.refresh(provider_for(url), "rt-1")
    assert_fault(outcome, code)


async def test_tls_to_a_plain_http_port_is_a_tls_error(
    fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    https_url = fake.url("/token").replace("http://", "https://")
    outcome = await endpoint.refresh(provider_for(https_url), "rt-1")
    assert_fault(outcome, "tls_error")


@pytest.fixture
def full_accept_queue() -> Iterator[int]:
    """A port that listens but never accepts, with its queue full: new SYNs go unanswered."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # the handshake completes in the background
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_unanswered_connect_is_a_connect_timeout(full_accept_queue: int) -> None:
    url = f"http://127.0.0.1:{full_accept_queue}/token"
    async with HttpTokenEndpoint(WallClock(), connect_timeout=0.3, read_timeout=5.0) as endpoint:
        outcome = await endpoint.refresh(provider_for(url), "rt-1")
    assert_fault(outcome, "connect_timeout")


async def test_invalid_token_url_is_config_and_nothing_is_sent(endpoint: HttpTokenEndpoint) -> None:
    outcome = await endpoint.refresh(provider_for("http://provider.example/token"), "rt-1")
    assert outcome.klass is OutcomeClass.CONFIG
    assert outcome.error is not None
    assert outcome.error.code == "invalid_token_url"
    assert "https" in outcome.error.description


@pytest.mark.parametrize("refresh_token", ["", "  "])
async def test_empty_refresh_token_requires_reauthorization_and_nothing_is_sent(
    refresh_token: str, fake: FakeProvider, endpoint: HttpTokenEndpoint
) -> None:
    outcome = await endpoint.refresh(provider_for(fake.url("/token")), refresh_token)
    assert outcome.klass is OutcomeClass.REAUTH_REQUIRED
    assert fake.seen == []


# --- lifecycle -------------------------------------------------------------------------------------------


async def test_close_is_idempotent_and_a_closed_endpoint_reopens(fake: FakeProvider) -> None:
    endpoint = HttpTokenEndpoint(WallClock())
    await endpoint.close()  # never opened
    assert (await endpoint.refresh(provider_for(fake.url("/token")), "rt-1")).klass is OutcomeClass.SUCCESS
    await endpoint.close()
    await endpoint.close()
    assert (await endpoint.refresh(provider_for(fake.url("/token")), "rt-2")).klass is OutcomeClass.SUCCESS
    await endpoint.close()


def test_constructing_outside_a_loop_is_fine_and_bad_settings_are_refused() -> None:
    HttpTokenEndpoint(WallClock())  # no session until the first refresh, so no loop is needed here
    with pytest.raises(ValueError, match="positive"):
        HttpTokenEndpoint(WallClock(), read_timeout=0)
    with pytest.raises(ValueError, match="at least 1"):
        HttpTokenEndpoint(WallClock(), max_connections=0)


# --- validate_token_url (DESIGN section 4) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://oauth2.googleapis.com/token",
        "https://login.microsoftonline.com/common/oauth2/v2.0/token?api-version=2",
        "HTTPS://Example.COM:8443/token",
        "http://127.0.0.1:8765/oauth/token",
        "http://127.10.20.30/token",
        "http://[::1]:8080/token",
        "http://localhost/token",
        "http://LOCALHOST:9000/token",
    ],
)
def test_validate_token_url_accepts_https_and_loopback_http(url: str) -> None:
    validate_token_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://provider.example/token", "must use https"),
        ("http://10.0.0.1/token", "must use https"),
        ("http://localhost.evil.example/token", "must use https"),
        ("http://127.0.0.1.nip.io/token", "must use https"),
        ("http://[::ffff:8.8.8.8]/token", "must use https"),
        ("ftp://provider.example/token", "absolute https URL"),
        ("provider.example/token", "absolute https URL"),
        ("https:///token", "absolute https URL"),
        ("", "non-empty"),
        ("https://provider.example/to ken", "whitespace"),
        ("https://provider.example/token\n", "whitespace"),
        ("https://provider.example/token#frag", "fragment"),
        ("https://user:pw@provider.example/token", "credentials"),
        ("https://provider.example:99999/token", "not a valid URL"),
        ("https://[::1/token", "not a valid URL"),
    ],
)
def test_validate_token_url_refuses_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_token_url(url)


def test_validate_token_url_message_never_repeats_credentials() -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        validate_token_url("https://user:hunter2@provider.example/token")
    assert "hunter2" not in str(caught.value)
