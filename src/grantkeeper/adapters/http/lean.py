"""A lean HTTP/1.1 client for form POSTs to token endpoints: keep-alive pool, httptools parsing, no extras.

Why not aiohttp here (ADR 0008): a refresh is one small POST and one small JSON answer, and aiohttp's general
machinery cost about five times the CPU of the exchange itself. This client does only what a token endpoint
needs: http and https (certificates verified), a pool per (scheme, host, port), the connect / read / total
timeouts, a body cap, and gzip or deflate bodies from a provider that compresses unasked. It never follows
a redirect, never reads proxy settings from the environment and never retries: a refresh_token grant is not
idempotent (RFC 9700 section 4.14.2), so whether to try again is the scheduler's call.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

from grantkeeper.adapters.http.lean_errors import (
    ConnectError,
    ConnectTimeoutError,
    InvalidURLError,
    ProtocolError,
)
from grantkeeper.adapters.http.lean_pool import IDLE_TTL_SECONDS, ConnectionPool, HostPool
from grantkeeper.adapters.http.lean_protocol import HttpConnection, Response

__all__ = ["LeanClient", "Response", "check_field_value"]

#: Try the next address of a dual-stack host after this long (RFC 8305), as aiohttp does. asyncio's own loops
#: only: uvloop (the CLI and uvicorn run on it) has no such argument and tries the addresses in turn.
HAPPY_EYEBALLS_DELAY = 0.25
#: URLs and header sets remembered; far more than the providers one deployment talks to.
_CACHE_SIZE = 1024
#: What may stay unescaped in an origin-form request target (RFC 3986 pchar, "/", "?", and "%" escapes).
_TARGET_SAFE = "!$&'()*+,;=:@/?%"
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a token, RFC 9110 section 5.1
_SET_BY_TRANSPORT = frozenset({"host", "user-agent", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL means to the transport, worked out once per URL."""

    host: str  # to connect to, and to verify the certificate against (IDNA, no brackets)
    port: int
    is_tls: bool
    authority: str  # the Host header (RFC 9110 section 7.2), and how messages name the server
    request_target: str  # origin-form path and query (RFC 9112 section 3.2.1)
    host_pool: HostPool


class LeanClient:
    """POSTs over pooled keep-alive connections; bound to the event loop it is made in.

    ``connect_timeout`` bounds getting a connection (pool wait, DNS, TCP and TLS, under one deadline);
    ``read_timeout`` bounds each wait for data; the whole exchange is capped at their sum, so a server that
    drips bytes cannot hold a request forever. Limits count connections in use or being opened.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        max_connections_per_host: int,
        max_body_bytes: int,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
        idle_ttl: float = IDLE_TTL_SECONDS,
    ) -> None:
        check_field_value("User-Agent", user_agent)
        self._loop = asyncio.get_running_loop()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._total_timeout = connect_timeout + read_timeout
        self._max_body_bytes = max_body_bytes
        self._user_agent = user_agent
        self._ssl_context = ssl_context  # the default one is made on the first https request: it takes ms
        self._pool = ConnectionPool(
            self._loop,
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            idle_ttl=idle_ttl,
        )
        self._targets: dict[str, Target] = {}
        self._heads: dict[tuple[object, ...], bytes] = {}
        self._create_connection = self._loop.create_connection
        if isinstance(self._loop, asyncio.BaseEventLoop):
            self._create_connection = functools.partial(
                self._loop.create_connection, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
            )

    @property
    def open_connections(self) -> int:
        return self._pool.open_connections

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Response:
        """One POST with ``headers`` (besides Host, User-Agent and Content-Length) and ``body``; no retry.

        Raises a ``LeanHttpError`` for anything the network or the server does, ``ValueError`` for a header
        that cannot be sent (a CR or LF in a value: our bug) and ``RuntimeError`` from another event loop.
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise RuntimeError("this HTTP client is bound to another event loop; make one per loop")
        target = self._targets.get(url) or self.target(url)
        key = (url, *headers.items())
        head = self._heads.get(key) or self._head(key, target, headers)
        request = head + b"%d\r\n\r\n" % len(body) + body
        started_at = loop.time()
        connection = self._pool.take_idle(target.host_pool)
        if connection is None:
            connection = await self._connect(target, started_at)
        try:
            response = await connection.send(request, self._read_timeout, started_at + self._total_timeout)
        finally:
            self._pool.release(target.host_pool, connection)
        if b"content-encoding" in response.headers:
            return decode_content(response, self._max_body_bytes)
        return response

    async def close(self) -> None:
        """Close every connection; an exchange in flight fails with ``ConnectionClosedError``."""
        self._pool.close()
        await asyncio.sleep(0)  # let the transports run connection_lost and release their sockets

    async def _connect(self, target: Target, started_at: float) -> HttpConnection:
        try:
            async with asyncio.timeout_at(started_at + self._connect_timeout):
                return await self._pool.acquire(target.host_pool, functools.partial(self._open, target))
        except TimeoutError:  # only the deadline's: OSErrors became ConnectError in _open
            message = f"no connection to {target.authority} within {self._connect_timeout:g} s"
            raise ConnectTimeoutError(message) from None

    async def _open(self, target: Target) -> HttpConnection:
        """A new connection; DNS, refusal and TLS failures (certificate, handshake) raise ``ConnectError``."""
        try:
            _, connection = await self._create_connection(
                self._new_connection,
                target.host,
                target.port,
                ssl=self._tls_context() if target.is_tls else None,
                server_hostname=target.host if target.is_tls else None,
            )
        except OSError as exc:  # socket.gaierror, ConnectionRefusedError, ssl.SSLError, ... are all OSErrors
            raise ConnectError(f"cannot connect to {target.authority}: {exc}", exc) from exc
        return connection

    def _new_connection(self) -> HttpConnection:
        return HttpConnection(self._loop, self._max_body_bytes, self._pool.forget)

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()  # verifies certificates and host names
        return self._ssl_context

    def target(self, url: str) -> Target:
        """What ``url`` means to the transport, worked out on first use and remembered."""
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _CACHE_SIZE:
                self._targets.clear()
            target = self._targets[url] = parse_target(url, self._pool)
        return target

    def _head(self, key: tuple[object, ...], target: Target, headers: Mapping[str, str]) -> bytes:
        if len(self._heads) >= _CACHE_SIZE:
            self._heads.clear()
        head = self._heads[key] = request_head(target, self._user_agent, headers)
        return head


def parse_target(url: str, pool: ConnectionPool) -> Target:
    """Split an http(s) URL into what a request needs; ``InvalidURLError`` names only scheme and host."""
    if not url.isprintable() or any(char.isspace() for char in url):
        raise InvalidURLError("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURLError(f"not a valid URL: {exc}") from None
    scheme, hostname = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not hostname:
        raise InvalidURLError(f"not an absolute http(s) URL with a host: scheme {scheme!r}")
    try:
        host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURLError(f"host {hostname!r} has no IDNA form") from None
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    authority = f"[{host}]" if ":" in host else host
    if port != default_port:
        authority += f":{port}"
    request_target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        request_target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    host_pool = pool.host((scheme, host, port))
    return Target(host, port, scheme == "https", authority, request_target, host_pool)


def request_head(target: Target, user_agent: str, headers: Mapping[str, str]) -> bytes:
    """The request line and headers up to ``Content-Length: `` (RFC 9112 section 3); the same for every
    request with these headers, so it is built once and only the length and body are added per request."""
    lines = [
        f"POST {target.request_target} HTTP/1.1",
        f"Host: {target.authority}",
        f"User-Agent: {user_agent}",
    ]
    for name, value in headers.items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _SET_BY_TRANSPORT:
            raise ValueError(f"header name {name!r} cannot be sent or is set by the transport")
        check_field_value(name, value)
        lines.append(f"{name}: {value}")
    lines.append("Content-Length: ")
    return "\r\n".join(lines).encode("latin-1")


def check_field_value(name: str, value: str) -> None:
    """Refuse a value that would end the header early (request splitting); the message omits the value,
    which may be a secret."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header {name} has a CR, LF or NUL in its value")


def decode_content(response: Response, limit: int) -> Response:
    """Undo a gzip or deflate Content-Encoding (RFC 9110 section 8.4.1), capped at ``limit`` bytes decoded.

    We never ask for compression, but without Accept-Encoding any coding is allowed (RFC 9110 12.5.3), so a
    provider may send one. Other codings are left as they are: such a body does not parse and is classified
    by its status. A body that does not decode is a protocol error.
    """
    coding = response.headers[b"content-encoding"].strip().lower()
    body = response.body
    if response.is_oversized or not body or coding not in (b"gzip", b"x-gzip", b"deflate"):
        return response
    if coding == b"deflate":  # a zlib stream as the RFC says, or raw deflate as some servers send
        wbits = zlib.MAX_WBITS if body[:1] and body[0] & 0x0F == 8 else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        decoded = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {coding.decode()} body does not decode: {exc}") from exc
    if len(decoded) > limit or decompressor.unconsumed_tail:
        return replace(response, body=b"", is_oversized=True)
    if not decompressor.eof:
        raise ProtocolError(f"the {coding.decode()} body is cut short")
    return replace(response, body=decoded)
