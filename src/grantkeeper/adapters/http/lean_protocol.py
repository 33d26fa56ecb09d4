"""One keep-alive HTTP/1.1 connection: an asyncio Protocol that parses responses with httptools.

A connection carries one exchange at a time (no pipelining). ``send`` writes a request and returns a future
for its response; the framing (Content-Length, chunked, or until the server closes, RFC 9112 section 6.3) is
llhttp's, read through httptools callbacks. The read timer is one ``call_at`` handle per exchange: it fires
at the earlier of "``read_timeout`` after the last byte" and the exchange's deadline, and re-arms itself when
bytes arrived meanwhile, so receiving data costs a clock read rather than a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from grantkeeper.adapters.http.lean_errors import (
    ConnectionClosedError,
    LeanHttpError,
    ProtocolError,
    ReadTimeoutError,
)

#: The response headers anything here or in the token client reads; the rest are not kept.
_KEPT_HEADERS = frozenset(
    {b"content-type", b"retry-after", b"content-length", b"transfer-encoding", b"content-encoding"}
)
#: llhttp sets no limit on the status line and headers; a token response's head is well under 1 KiB.
MAX_HEAD_BYTES = 64 * 1024
#: A timer may fire a hair early (the loop's clock resolution): this close to its due time counts as due.
_TIMER_SLACK = 0.001


@dataclass(frozen=True, slots=True)
class Response:
    """A response as read: status, the kept headers (lower-case names), and the body.

    ``is_oversized``: the body went past the cap, was not read to the end, and ``body`` is empty.
    """

    status: int
    headers: dict[bytes, bytes]
    body: bytes = field(repr=False)
    is_oversized: bool = False

    def header(self, name: bytes) -> str | None:
        """A kept header's value (``name`` in lower case), decoded as HTTP field values are (RFC 9110 5.5)."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


class HttpConnection(asyncio.Protocol):
    """A pooled connection; ``on_lost`` tells the pool once it is gone, whoever closed it."""

    __slots__ = (
        "_body",
        "_deadline",
        "_has_headers",
        "_head_bytes",
        "_headers",
        "_last_read_at",
        "_loop",
        "_max_body_bytes",
        "_on_lost",
        "_parser",
        "_read_timeout",
        "_size",
        "_timer",
        "_transport",
        "_waiter",
        "idle_since",
        "is_closed",
        "is_reusable",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        max_body_bytes: int,
        on_lost: Callable[[HttpConnection], None],
    ) -> None:
        self._loop = loop
        self._max_body_bytes = max_body_bytes
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = self._deadline = self._last_read_at = 0.0
        #: When the last response ended: the pool closes connections idle for too long.
        self.idle_since = 0.0
        self.is_closed = False
        #: The last exchange ended cleanly and the server keeps the connection open: it may carry another.
        self.is_reusable = False
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._head_bytes = 0
        self._has_headers = False

    @property
    def is_usable(self) -> bool:
        """Open, idle and not closing: a request may go out on it now."""
        transport = self._transport
        return not self.is_closed and transport is not None and not transport.is_closing()

    def send(self, request: bytes, read_timeout: float, deadline: float) -> asyncio.Future[Response]:
        """Write ``request`` and return the future of its response.

        It fails with ``ReadTimeoutError`` when no byte comes for ``read_timeout`` seconds or the response is
        not complete at ``deadline`` (loop time), else with ``ConnectionClosedError`` or ``ProtocolError``.
        """
        transport = self._transport
        if transport is None or self._waiter is not None:
            raise RuntimeError("a connection carries one exchange at a time, once connected")
        self._waiter = waiter = self._loop.create_future()
        self.is_reusable = False
        self._read_timeout, self._deadline = read_timeout, deadline
        self._last_read_at = now = self._loop.time()
        self._timer = self._loop.call_at(min(now + read_timeout, deadline), self._on_timer)
        transport.write(request)
        return waiter

    def close(self) -> None:
        """Close the connection; an exchange still waiting fails with ``ConnectionClosedError``."""
        if self._waiter is not None:
            self._fail(ConnectionClosedError("the connection was closed by the client"))
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: a server has nothing to say on an idle connection
            self.is_reusable = False
            self.close()
            return
        self._last_read_at = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"malformed HTTP response: {exc}"), cause=exc)
        else:
            if not self._has_headers and self._waiter is not None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._fail(ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_closed = True
        self.is_reusable = False
        if self._waiter is not None:
            if exc is None and self._has_headers and self._is_delimited_by_close():
                self._finish(is_reusable=False)
            else:
                message = "the server closed the connection before a complete response"
                self._fail(ConnectionClosedError(message), cause=exc)
        self._on_lost(self)

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response to one request: whatever this is, stop using it
            self.is_reusable = False
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _KEPT_HEADERS:
            self._headers.setdefault(name, value)

    def on_headers_complete(self) -> None:
        self._has_headers = True
        length = self._headers.get(b"content-length", b"").strip()
        if length.isdigit() and int(length) > self._max_body_bytes:
            self._overflow()

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:  # already answered as oversized; llhttp still walks the rest of the data
            return
        self._size += len(body)
        if self._size > self._max_body_bytes:
            self._overflow()
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if self._parser.get_status_code() < 200:  # 1xx is informational (RFC 9110 15.2): the answer follows
            self._reset_message()
            return
        parser = self._parser
        self._finish(is_reusable=parser.should_keep_alive() and parser.get_http_version() == "1.1")

    # --- ending an exchange ---

    def _is_delimited_by_close(self) -> bool:
        """No length and not chunked: the body is whatever comes until the server closes (RFC 9112 6.3)."""
        encoding = self._headers.get(b"transfer-encoding", b"").lower()
        return b"content-length" not in self._headers and b"chunked" not in encoding

    def _overflow(self) -> None:
        """Past the cap: answer now with the status and headers, and drop the connection with the rest."""
        self._answer(Response(self._parser.get_status_code(), self._headers, b"", is_oversized=True))
        if self._transport is not None:
            self._transport.abort()

    def _finish(self, *, is_reusable: bool) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.idle_since = self._last_read_at
        self._answer(Response(self._parser.get_status_code(), self._headers, body))
        self.is_reusable = is_reusable

    def _answer(self, response: Response) -> None:
        waiter, self._waiter = self._waiter, None
        self._cancel_timer()
        self._reset_message()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, error: LeanHttpError, cause: BaseException | None = None) -> None:
        """End the exchange with ``error`` and drop the connection: what is left on it cannot be trusted."""
        waiter, self._waiter = self._waiter, None
        self._cancel_timer()
        self._reset_message()
        self.is_reusable = False
        if waiter is not None and not waiter.done():
            error.__cause__ = cause
            waiter.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        due = min(self._last_read_at + self._read_timeout, self._deadline)
        if self._loop.time() < due - _TIMER_SLACK:  # bytes came since it was set: wait for the rest
            self._timer = self._loop.call_at(due, self._on_timer)
        elif due >= self._deadline:
            self._fail(ReadTimeoutError("the response was not complete by the exchange's deadline"))
        else:
            self._fail(ReadTimeoutError(f"no data from the server for {self._read_timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
