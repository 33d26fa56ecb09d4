"""The lean HTTP/1.1 transport (``adapters/http/lean*.py``) over real loopback sockets, no mocks.

Every server here is an asyncio server started by the test that speaks raw bytes, so each test decides exactly
what goes over the wire: framing, keep-alive, closes, silences, TLS. What the transport raises is checked
through ``faults.network_fault``, the mapping the token client uses.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grantkeeper.adapters.http import HttpTokenEndpoint
from grantkeeper.adapters.http.faults import TRANSPORT_ERRORS, network_fault
from grantkeeper.adapters.http.lean import LeanClient
from grantkeeper.adapters.http.lean_errors import ConnectionClosedError, InvalidURLError, LeanHttpError
from grantkeeper.core.model import NetworkFault, OutcomeClass
from grantkeeper.ports import AuthMethod, ProviderConfig

F = NetworkFault
FORM = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
TOKEN_BODY = b'{"access_token":"at-1","token_type":"Bearer","expires_in":60}'
CAP = 1024  # max_body_bytes of the clients made here


# --- raw servers -----------------------------------------------------------------------------------------


@dataclass
class Wire:
    """What the server side saw: each request's bytes, connections opened, and the most at once of both."""

    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    peak_open: int = 0
    in_flight: int = 0  # requests read and not yet answered (by ``answering``)
    peak_in_flight: int = 0


Script = Callable[[Wire, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Served:
    port: int
    wire: Wire

    def url(self, path: str = "/token", *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@asynccontextmanager
async def serve(
    script: Script, *, wire: Wire | None = None, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Served]:
    """Run ``script`` for every connection to a loopback port; a connection is open until it returns."""
    wire = wire if wire is not None else Wire()
    tasks: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        wire.connections += 1
        wire.open_now += 1
        wire.peak_open = max(wire.peak_open, wire.open_now)
        try:
            await script(wire, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away mid-answer: that is what some tests are about
        except asyncio.CancelledError:
            pass  # the test is over; ending quietly keeps asyncio (3.11) from logging the cancellation
        finally:
            wire.open_now -= 1
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield Served(server.sockets[0].getsockname()[1], wire)
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and Content-Length body), or None once the client has closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


def reply(
    body: bytes = TOKEN_BODY,
    *,
    status: str = "200 OK",
    headers: str = "",
    version: str = "1.1",
    has_length: bool = True,
) -> bytes:
    head = f"HTTP/{version} {status}\r\nContent-Type: application/json\r\n{headers}"
    if has_length:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def chunked(*chunks: bytes) -> list[bytes]:
    """A chunked 200 (RFC 9112 section 7.1), as pieces to write one at a time."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return [head, *(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks), b"0\r\n\r\n"]


Answer = bytes | list[bytes]


def answering(*answers: Answer, delay: float = 0.0, close: bool = False) -> Script:
    """Answer the n-th request with the n-th answer (the last repeats); a list is written piece by piece.

    ``close``: close the connection after each answer, without saying so in a header.
    """

    async def script(wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            wire.requests.append(request)
            wire.in_flight += 1
            wire.peak_in_flight = max(wire.peak_in_flight, wire.in_flight)
            answer = answers[min(len(wire.requests), len(answers)) - 1]
            await asyncio.sleep(delay)
            wire.in_flight -= 1
            for piece in [answer] if isinstance(answer, bytes) else answer:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            if close:
                return

    return script


async def silent(wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a request and never answer."""
    request = await read_request(reader)
    if request is not None:
        wire.requests.append(request)
    await asyncio.sleep(3600)


def make_client(**settings: Any) -> LeanClient:
    defaults: dict[str, Any] = {
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
        "max_connections": 10,
        "max_connections_per_host": 10,
        "max_body_bytes": CAP,
        "user_agent": "grantkeeper-test/1",
    }
    return LeanClient(**(defaults | settings))


@pytest.fixture
async def client() -> AsyncIterator[LeanClient]:
    client = make_client()
    yield client
    await client.close()


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Wait for what the other side does on its own time (a close arriving), without a fixed sleep."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the state belongs to the code under test: no event to await
            await asyncio.sleep(0.01)


async def fault_of(request: Awaitable[object]) -> NetworkFault:
    """What the token client would report for this request: it must raise a transport error."""
    with pytest.raises(LeanHttpError) as caught:
        await request
    assert isinstance(caught.value, TRANSPORT_ERRORS)
    return network_fault(caught.value)


# --- URLs and what is sent -------------------------------------------------------------------------------


async def test_the_request_is_exactly_a_form_post_with_the_headers_a_token_endpoint_needs(
    client: LeanClient,
) -> None:
    async with serve(answering(reply())) as served:
        url = served.url("/oauth/token?tenant=a%2Fb&x=1")
        await client.post(url, FORM | {"Authorization": "Basic YXBwOnNlY3JldA=="}, b"a=1&b=2")
        await client.post(url, FORM, b"")
    with_auth, without_auth = served.wire.requests
    assert with_auth == (
        b"POST /oauth/token?tenant=a%2Fb&x=1 HTTP/1.1\r\n"
        b"Host: 127.0.0.1:" + str(served.port).encode() + b"\r\n"
        b"User-Agent: grantkeeper-test/1\r\n"
        b"Accept: application/json\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Authorization: Basic YXBwOnNlY3JldA==\r\n"
        b"Content-Length: 7\r\n\r\n"
        b"a=1&b=2"
    )
    assert b"authorization" not in without_auth.lower()
    assert without_auth.endswith(b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    ("url", "host", "port", "is_tls", "authority", "request_target"),
    [
        ("https://Example.COM/token", "example.com", 443, True, "example.com", "/token"),
        ("http://127.0.0.1:8080/a/b?x=1&y=%2F", "127.0.0.1", 8080, False, "127.0.0.1:8080", "/a/b?x=1&y=%2F"),
        ("http://[::1]:9000/t", "::1", 9000, False, "[::1]:9000", "/t"),
        ("https://provider.example:443", "provider.example", 443, True, "provider.example", "/"),
        ("http://localhost/t", "localhost", 80, False, "localhost", "/t"),
        (
            "https://bücher.example/tök",
            "xn--bcher-kva.example",
            443,
            True,
            "xn--bcher-kva.example",
            "/t%C3%B6k",
        ),
    ],
)
async def test_a_url_is_parsed_once_into_host_port_tls_host_header_and_target(
    url: str, host: str, port: int, is_tls: bool, authority: str, request_target: str, client: LeanClient
) -> None:
    target = client.target(url)
    assert (target.host, target.port, target.is_tls) == (host, port, is_tls)
    assert (target.authority, target.request_target) == (authority, request_target)
    assert client.target(url) is target  # remembered, not parsed again


async def test_urls_to_one_scheme_host_and_port_share_a_pool(client: LeanClient) -> None:
    a, b = client.target("https://p.example/token"), client.target("https://P.example:443/revoke?x=1")
    assert a.host_pool is b.host_pool
    assert client.target("http://p.example/token").host_pool is not a.host_pool


@pytest.mark.parametrize(
    "url",
    [
        "ftp://provider.example/token",
        "https://provider.example:99999/t",
        "https://" + "a" * 64 + ".example/t",
    ],
)
async def test_a_url_the_transport_cannot_use_is_a_protocol_error(url: str, client: LeanClient) -> None:
    with pytest.raises(InvalidURLError):
        await client.post(url, FORM, b"")
    assert await fault_of(client.post(url, FORM, b"")) is F.PROTOCOL_ERROR


@pytest.mark.parametrize("value", ["Basic abc\r\nX-Injected: 1", "Basic abc\n", "a\rb"])
async def test_a_cr_or_lf_in_a_header_value_is_our_bug_and_nothing_is_sent(
    value: str, client: LeanClient
) -> None:
    async with serve(answering(reply())) as served:
        with pytest.raises(ValueError, match="Authorization") as caught:
            await client.post(served.url(), FORM | {"Authorization": value}, b"")
    assert not isinstance(caught.value, TRANSPORT_ERRORS)  # so refresh lets it through: a bug, not a fault
    assert value not in str(caught.value)
    assert served.wire.connections == 0


async def test_a_user_agent_with_a_line_break_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="User-Agent"):
        make_client(user_agent="grantkeeper\r\nX-Injected: 1")
    with pytest.raises(ValueError, match="User-Agent"):
        HttpTokenEndpoint(WallClock(), user_agent="grantkeeper\n")


# --- the pool --------------------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_keep_alive_connection(client: LeanClient) -> None:
    async with serve(answering(reply())) as served:
        for _ in range(3):
            assert (await client.post(served.url(), FORM, b"")).status == 200
        assert client.open_connections == 1
    assert (served.wire.connections, len(served.wire.requests)) == (1, 3)


async def test_the_per_host_limit_bounds_connections_open_at_once() -> None:
    client = make_client(max_connections=10, max_connections_per_host=2)
    async with serve(answering(reply(), delay=0.05)) as served:
        responses = await asyncio.gather(*(client.post(served.url(), FORM, b"") for _ in range(8)))
    await client.close()
    assert [r.status for r in responses] == [200] * 8
    assert served.wire.peak_in_flight == 2
    assert served.wire.peak_open <= 2
    assert served.wire.connections <= 2


async def test_the_total_limit_spans_hosts() -> None:
    # Like aiohttp's, the limits count connections in use or being opened; an idle one holds no slot.
    client = make_client(max_connections=2, max_connections_per_host=2)
    wire = Wire()  # both servers count into one: the limit is on the client's requests in flight in total
    async with (
        serve(answering(reply(), delay=0.05), wire=wire) as a,
        serve(answering(reply()), wire=wire) as b,
    ):
        urls = [a.url(), b.url()] * 4
        responses = await asyncio.gather(*(client.post(url, FORM, b"") for url in urls))
    await client.close()
    assert [r.status for r in responses] == [200] * 8
    assert wire.peak_in_flight == 2


async def test_waiting_for_a_free_slot_counts_against_the_connect_timeout() -> None:
    client = make_client(max_connections=1, connect_timeout=0.2, read_timeout=2.0)
    async with serve(answering(reply(), delay=0.6)) as served:
        slow = asyncio.ensure_future(client.post(served.url(), FORM, b""))
        await asyncio.sleep(0.05)  # the slow request holds the only slot
        started = asyncio.get_running_loop().time()
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.CONNECT_TIMEOUT
        waited = asyncio.get_running_loop().time() - started
        assert (await slow).status == 200
    await client.close()
    assert 0.15 <= waited < 0.55  # the deadline, not the slot coming free at 0.6 s
    assert len(served.wire.requests) == 1  # the one that timed out never went out


async def test_an_idle_connection_the_server_closed_is_dropped_before_reuse(client: LeanClient) -> None:
    async with serve(answering(reply(), close=True)) as served:  # closes after answering, unannounced
        assert (await client.post(served.url(), FORM, b"")).status == 200
        await eventually(lambda: client.open_connections == 0)  # connection_lost came while it was idle
        assert (await client.post(served.url(), FORM, b"")).status == 200
    assert (served.wire.connections, len(served.wire.requests)) == (2, 2)


async def test_connections_idle_past_the_ttl_are_closed() -> None:
    client = make_client(idle_ttl=0.2)
    async with serve(answering(reply())) as served:
        await client.post(served.url(), FORM, b"")
        assert client.open_connections == 1
        await eventually(lambda: client.open_connections == 0)  # the sweeper runs within 1.5 TTL
        await eventually(lambda: served.wire.open_now == 0)  # the server saw it close
        assert (await client.post(served.url(), FORM, b"")).status == 200
    await client.close()
    assert served.wire.connections == 2


async def test_a_request_that_fails_on_a_reused_connection_is_not_retried(client: LeanClient) -> None:
    async def first_then_hang_up(
        wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (request := await read_request(reader)) is not None:
            wire.requests.append(request)
            if len(wire.requests) > 1:
                return  # read the second request, then close without an answer
            writer.write(reply())

    async with serve(first_then_hang_up) as served:
        assert (await client.post(served.url(), FORM, b"grant_type=refresh_token")).status == 200
        fault = await fault_of(client.post(served.url(), FORM, b"grant_type=refresh_token"))
        await asyncio.sleep(0.05)  # time for a retry, were there one, to reach the server
    assert fault is F.CONNECTION_RESET
    assert len(served.wire.requests) == 2  # a refresh_token grant is not idempotent: never sent twice
    assert served.wire.connections == 1


# --- timeouts --------------------------------------------------------------------------------------------


async def test_a_tls_handshake_that_never_completes_is_a_connect_timeout() -> None:
    client = make_client(connect_timeout=0.3)
    async with serve(silent) as served:  # plain TCP: it never answers the ClientHello
        started = asyncio.get_running_loop().time()
        fault = await fault_of(client.post(served.url(scheme="https"), FORM, b""))
        waited = asyncio.get_running_loop().time() - started
    await client.close()
    assert fault is F.CONNECT_TIMEOUT
    assert 0.25 <= waited < 2.0


async def test_silence_after_the_request_is_a_read_timeout() -> None:
    client = make_client(read_timeout=0.3)
    async with serve(silent) as served:
        started = asyncio.get_running_loop().time()
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.READ_TIMEOUT
        waited = asyncio.get_running_loop().time() - started
    await client.close()
    assert 0.27 <= waited < 2.0


async def test_silence_in_the_middle_of_a_body_is_a_read_timeout() -> None:
    client = make_client(read_timeout=0.3)
    async with serve(answering([reply(b"x" * 100)[:-90], b"", b""], delay=0)) as served:
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.READ_TIMEOUT
    await client.close()


async def test_a_dripping_response_hits_the_deadline_of_connect_plus_read() -> None:
    async def drip(wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(100):  # a byte every 0.1 s: never silent for the 0.3 s read timeout
            writer.write(b" ")
            await asyncio.sleep(0.1)

    client = make_client(connect_timeout=0.3, read_timeout=0.3)
    async with serve(drip) as served:
        started = asyncio.get_running_loop().time()
        with pytest.raises(LeanHttpError, match="deadline") as caught:
            await client.post(served.url(), FORM, b"")
        waited = asyncio.get_running_loop().time() - started
    await client.close()
    assert network_fault(caught.value) is F.READ_TIMEOUT
    assert 0.55 <= waited < 2.0  # capped at 0.6 s, where the drip would take 10 s


async def test_a_finished_exchange_leaves_no_timer_behind() -> None:
    client = make_client(read_timeout=0.2, connect_timeout=0.2)
    async with serve(answering(reply())) as served:
        await client.post(served.url(), FORM, b"")
        await asyncio.sleep(0.5)  # past both timeouts: a stray timer would have dropped the connection
        assert client.open_connections == 1
        await client.post(served.url(), FORM, b"")
    await client.close()
    assert served.wire.connections == 1


# --- reading responses -----------------------------------------------------------------------------------


async def test_status_content_type_and_retry_after_are_read(client: LeanClient) -> None:
    headers = "Retry-After: 7\r\nX-Other: ignored\r\n"
    answer = reply(b'{"error":"slow_down"}', status="429 Too Many Requests", headers=headers)
    async with serve(answering(answer.replace(b"application/json", b"application/json; charset=utf-8"))) as s:
        response = await client.post(s.url(), FORM, b"")
    assert response.status == 429
    assert response.header(b"content-type") == "application/json; charset=utf-8"
    assert response.header(b"retry-after") == "7"
    assert response.body == b'{"error":"slow_down"}'
    assert not response.is_oversized


async def test_a_chunked_body_is_put_together_and_the_connection_kept(client: LeanClient) -> None:
    async with serve(answering(chunked(b'{"access_', b"token", b'":"at-1"}'))) as served:
        first = await client.post(served.url(), FORM, b"")
        second = await client.post(served.url(), FORM, b"")
    assert first.body == second.body == b'{"access_token":"at-1"}'
    assert served.wire.connections == 1


async def test_a_body_without_length_ends_when_the_server_closes(client: LeanClient) -> None:
    answer = [reply(has_length=False)[:-10], reply(has_length=False)[-10:]]
    async with serve(answering(answer, close=True)) as served:
        first = await client.post(served.url(), FORM, b"")
        second = await client.post(served.url(), FORM, b"")
    assert first.body == second.body == TOKEN_BODY
    assert served.wire.connections == 2  # such a connection can never carry another request


@pytest.mark.parametrize(
    "answer",
    [
        reply(headers="Connection: close\r\n"),
        reply(version="1.0"),
        reply(version="1.0", headers="Connection: keep-alive\r\n"),
    ],
    ids=["connection-close", "http-1.0", "http-1.0-keep-alive"],
)
async def test_a_connection_the_server_will_not_keep_is_not_reused(answer: bytes, client: LeanClient) -> None:
    async with serve(answering(answer)) as served:
        for _ in range(2):
            assert (await client.post(served.url(), FORM, b"")).body == TOKEN_BODY
    assert served.wire.connections == 2


async def test_informational_responses_are_skipped(client: LeanClient) -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    async with serve(answering(early + reply())) as served:
        response = await client.post(served.url(), FORM, b"")
    assert (response.status, response.body) == (200, TOKEN_BODY)


BIG = b"x" * (4 * CAP)


@pytest.mark.parametrize(
    "answer",
    [reply(BIG), chunked(*[BIG[i : i + 256] for i in range(0, len(BIG), 256)]), reply(BIG, has_length=False)],
    ids=["content-length", "chunked", "until-close"],
)
async def test_a_body_over_the_cap_is_oversized_and_its_connection_dropped(
    answer: Answer, client: LeanClient
) -> None:
    async with serve(answering(answer, reply())) as served:
        response = await client.post(served.url(), FORM, b"")
        assert (response.status, response.body, response.is_oversized) == (200, b"", True)
        assert (await client.post(served.url(), FORM, b"")).body == TOKEN_BODY
    assert served.wire.connections == 2  # the rest of the big body was never read: a new connection


async def test_a_body_of_exactly_the_cap_is_read(client: LeanClient) -> None:
    async with serve(answering(reply(b"y" * CAP))) as served:
        response = await client.post(served.url(), FORM, b"")
    assert (len(response.body), response.is_oversized) == (CAP, False)


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),  # raw, as some servers send
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_a_compressed_body_is_decoded(
    coding: str, encode: Callable[[bytes], bytes], client: LeanClient
) -> None:
    answer = reply(encode(TOKEN_BODY), headers=f"Content-Encoding: {coding}\r\n")
    async with serve(answering(answer)) as served:
        assert (await client.post(served.url(), FORM, b"")).body == TOKEN_BODY


async def test_a_compressed_body_that_inflates_past_the_cap_is_oversized(client: LeanClient) -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    assert len(bomb) < CAP
    async with serve(answering(reply(bomb, headers="Content-Encoding: gzip\r\n"))) as served:
        response = await client.post(served.url(), FORM, b"")
    assert (response.body, response.is_oversized) == (b"", True)


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(TOKEN_BODY)[:-12]], ids=["corrupt", "cut"]
)
async def test_a_compressed_body_that_does_not_decode_is_a_protocol_error(
    body: bytes, client: LeanClient
) -> None:
    async with serve(answering(reply(body, headers="Content-Encoding: gzip\r\n"))) as served:
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.PROTOCOL_ERROR


# --- faults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        [b"HTTP/1.1 200 OK\r\nX-Endless: ", *[b"a" * 16384] * 8],  # llhttp alone would buffer it all
    ],
    ids=["not-http", "bad-length", "bad-status", "upgrade", "endless-head"],
)
async def test_a_malformed_response_is_a_protocol_error(answer: Answer, client: LeanClient) -> None:
    async with serve(answering(answer)) as served:
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"access',
        b"".join(chunked(b"{}"))[:-5],
    ],
    ids=["nothing", "half-a-head", "short-body", "unfinished-chunks"],
)
async def test_closing_before_a_complete_response_is_a_connection_reset(
    answer: bytes, client: LeanClient
) -> None:
    async with serve(answering(answer, close=True)) as served:
        assert await fault_of(client.post(served.url(), FORM, b"")) is F.CONNECTION_RESET


async def test_a_refused_connection(client: LeanClient, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/token"
    assert await fault_of(client.post(url, FORM, b"")) is F.CONNECTION_REFUSED


async def test_a_name_that_does_not_resolve_is_a_dns_failure(client: LeanClient) -> None:
    url = "http://grantkeeper-test.invalid/token"
    assert await fault_of(client.post(url, FORM, b"")) is F.DNS_FAILURE


# --- TLS -------------------------------------------------------------------------------------------------


@dataclass
class Certificate:
    server_context: ssl.SSLContext
    pem: str  # to trust it


def self_signed(tmp_path: Path, *names: str) -> Certificate:
    """A self-signed certificate for ``names`` (host names or IP addresses) and a server context using it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return Certificate(context, pem.decode())


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_https_to_a_trusted_certificate_verifies_the_host_name_and_sends_the_request(
    host: str, tmp_path: Path
) -> None:
    certificate = self_signed(tmp_path, "localhost", "127.0.0.1")
    client = make_client(ssl_context=ssl.create_default_context(cadata=certificate.pem))
    async with serve(answering(reply()), tls=certificate.server_context) as served:
        for _ in range(2):
            assert (await client.post(served.url(scheme="https", host=host), FORM, b"")).body == TOKEN_BODY
    await client.close()
    assert served.wire.connections == 1
    assert b"\r\nHost: %s:%d\r\n" % (host.encode(), served.port) in served.wire.requests[0]


async def test_an_untrusted_certificate_is_a_tls_error(tmp_path: Path, client: LeanClient) -> None:
    certificate = self_signed(tmp_path, "localhost", "127.0.0.1")  # the default context does not trust it
    async with serve(answering(reply()), tls=certificate.server_context) as served:
        assert await fault_of(client.post(served.url(scheme="https"), FORM, b"")) is F.TLS_ERROR
    assert served.wire.requests == []


async def test_a_certificate_for_another_host_is_a_tls_error(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path, "provider.example")
    client = make_client(ssl_context=ssl.create_default_context(cadata=certificate.pem))
    async with serve(answering(reply()), tls=certificate.server_context) as served:
        assert await fault_of(client.post(served.url(scheme="https"), FORM, b"")) is F.TLS_ERROR
    await client.close()
    assert served.wire.requests == []


# --- close and the event loop ----------------------------------------------------------------------------


async def test_close_ends_idle_connections_and_an_exchange_in_flight() -> None:
    client = make_client()
    async with serve(answering(reply())) as idle, serve(silent) as busy:
        await client.post(idle.url(), FORM, b"")
        in_flight = asyncio.ensure_future(client.post(busy.url(), FORM, b""))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(ConnectionClosedError):
            await in_flight
        await eventually(lambda: client.open_connections == 0)
        await eventually(lambda: idle.wire.open_now == 0)  # the server saw the idle connection close


async def test_a_closed_endpoint_opens_new_connections() -> None:
    endpoint = HttpTokenEndpoint(WallClock())
    async with serve(answering(reply())) as served:
        provider = provider_for(served.url())
        assert (await endpoint.refresh(provider, "rt-1")).klass is OutcomeClass.SUCCESS
        await endpoint.close()
        assert (await endpoint.refresh(provider, "rt-2")).klass is OutcomeClass.SUCCESS
        await endpoint.close()
    assert served.wire.connections == 2


async def test_the_client_is_bound_to_the_event_loop_it_was_made_in(client: LeanClient) -> None:
    def from_another_loop() -> object:
        return asyncio.run(client.post("http://127.0.0.1:9/token", FORM, b""))

    with pytest.raises(RuntimeError, match="another event loop"):
        await asyncio.to_thread(from_another_loop)


async def test_the_endpoint_is_bound_to_the_event_loop_of_its_first_refresh() -> None:
    async with serve(answering(reply())) as served, HttpTokenEndpoint(WallClock()) as endpoint:
        provider = provider_for(served.url())
        await endpoint.refresh(provider, "rt-1")
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.to_thread(lambda: asyncio.run(endpoint.refresh(provider, "rt-2")))


# --- secrets ---------------------------------------------------------------------------------------------

REFRESH_TOKEN = "rt-Sup3r.Secret~Token"
CLIENT_SECRET = "app-Secret-42"


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def provider_for(token_url: str, auth_method: AuthMethod = AuthMethod.CLIENT_SECRET_BASIC) -> ProviderConfig:
    return ProviderConfig(
        provider_id="prov-1",
        tenant_id="tenant-1",
        name="test-provider",
        token_url=token_url,
        client_id="app",
        client_secret=CLIENT_SECRET,
        auth_method=auth_method,
    )


async def echo_as_garbage(wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A broken server quoting the whole request (secrets included) back as a malformed response."""
    request = await read_request(reader)
    writer.write(b"HTTP/1.1 2xx " + (request or b"") + b"\r\n\r\n")


async def echo_then_hang_up(wire: Wire, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + (request or b""))


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_fault_description_never_carries_the_token_or_the_secret(
    tmp_path: Path, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    certificate = self_signed(tmp_path, "localhost", "127.0.0.1")
    basic = base64.b64encode(f"app:{CLIENT_SECRET}".encode()).decode()
    outcomes = []
    async with (
        HttpTokenEndpoint(WallClock(), connect_timeout=0.5, read_timeout=0.3) as endpoint,
        serve(echo_as_garbage) as garbage,
        serve(echo_then_hang_up) as hang_up,
        serve(silent) as quiet,
        serve(answering(reply()), tls=certificate.server_context) as untrusted,
    ):
        urls = [
            garbage.url(),
            hang_up.url(),
            quiet.url(),
            untrusted.url(scheme="https", host="localhost"),
            f"http://127.0.0.1:{closed_port}/token",
        ]
        for url in urls:
            for method in AuthMethod:
                outcomes.append(await endpoint.refresh(provider_for(url, method), REFRESH_TOKEN))
    codes = {o.error.code for o in outcomes if o.error is not None}
    assert codes == {"protocol_error", "connection_reset", "read_timeout", "tls_error", "connection_refused"}
    texts = [caplog.text, *(f"{o!r} {o.error.description}" for o in outcomes if o.error is not None)]
    for text in texts:
        for secret in (REFRESH_TOKEN, CLIENT_SECRET, basic):
            assert secret not in text


# --- uvloop, which the CLI and the API run on ------------------------------------------------------------


async def _scenario_on_any_loop(tmp_path: Path, closed_port: int) -> None:
    certificate = self_signed(tmp_path, "localhost", "127.0.0.1")
    client = make_client(read_timeout=0.3, ssl_context=ssl.create_default_context(cadata=certificate.pem))
    until_close = answering(reply(has_length=False), close=True)
    async with (
        serve(answering(reply())) as plain,
        serve(silent) as quiet,
        serve(until_close, tls=certificate.server_context) as tls,
    ):
        for _ in range(2):
            assert (await client.post(plain.url(), FORM, b"")).body == TOKEN_BODY
            response = await client.post(tls.url(scheme="https", host="localhost"), FORM, b"")
            assert response.body == TOKEN_BODY
        assert await fault_of(client.post(quiet.url(), FORM, b"")) is F.READ_TIMEOUT
        refused = f"http://127.0.0.1:{closed_port}/token"
        assert await fault_of(client.post(refused, FORM, b"")) is F.CONNECTION_REFUSED
    await client.close()
    assert (plain.wire.connections, tls.wire.connections) == (1, 2)


def test_the_transport_works_on_uvloop(tmp_path: Path, closed_port: int) -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_scenario_on_any_loop(tmp_path, closed_port))


async def test_the_same_scenario_on_asyncio(tmp_path: Path, closed_port: int) -> None:
    await _scenario_on_any_loop(tmp_path, closed_port)
