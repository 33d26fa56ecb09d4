"""Map what the token client's transport raises to the ``NetworkFault`` it means, and describe it safely.

Every request goes through the lean HTTP/1.1 transport (``lean.py``, ADR 0008); its exceptions
(``lean_errors.py``) and what they mean::

    LeanHttpError
    +-- InvalidURLError          a URL it cannot send to (no IDNA form, bad port)        -> protocol_error
    +-- ConnectTimeoutError      pool wait + DNS + TCP + TLS past connect_timeout        -> connect_timeout
    +-- ConnectError             by its ``os_error`` (an OSError), see _connect_fault:
    |                              socket.gaierror                                       -> dns_failure
    |                              ssl.SSLError (certificate, handshake)                 -> tls_error
    |                              TimeoutError (the kernel gave up)                     -> connect_timeout
    |                              ECONNRESET / EPIPE / ECONNABORTED                     -> connection_reset
    |                              refused, unreachable, anything else                   -> connection_refused
    +-- ReadTimeoutError         no byte for read_timeout, or past connect + read        -> read_timeout
    +-- ConnectionClosedError    closed or reset before a complete response              -> connection_reset
    +-- ProtocolError            not HTTP/1.1 (httptools.HttpParserError), bad gzip      -> protocol_error

Raw ``OSError``s (a reset while writing, a TLS failure after the handshake) map by their type and errno, and
the builtin ``TimeoutError`` is a read timeout.

Nothing here says anything about the grant, so ``classify_fault`` makes every one of them transient.
"""

from __future__ import annotations

import errno
import socket
import ssl

from grantkeeper.adapters.http.lean_errors import (
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    LeanHttpError,
    ReadTimeoutError,
)
from grantkeeper.core.classify import sanitize
from grantkeeper.core.model import NetworkFault

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_RESET_TYPES = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_LEAN_FAULTS: tuple[tuple[type[LeanHttpError], NetworkFault], ...] = (
    (ConnectTimeoutError, NetworkFault.CONNECT_TIMEOUT),
    (ReadTimeoutError, NetworkFault.READ_TIMEOUT),
    (ConnectionClosedError, NetworkFault.CONNECTION_RESET),
)

#: Everything the transport may raise for reasons outside our code; the token client catches exactly these.
#: (asyncio.TimeoutError is the builtin TimeoutError, an OSError, on 3.11.)
TRANSPORT_ERRORS = (LeanHttpError, OSError)


def network_fault(exc: BaseException) -> NetworkFault:
    """The fault ``exc`` stands for; only called for instances of ``TRANSPORT_ERRORS``."""
    if isinstance(exc, LeanHttpError):
        return _lean_fault(exc)
    if isinstance(exc, ssl.SSLError):
        return NetworkFault.TLS_ERROR
    if isinstance(exc, TimeoutError):
        return NetworkFault.READ_TIMEOUT
    if isinstance(exc, _RESET_TYPES) or (isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS):
        return NetworkFault.CONNECTION_RESET
    return NetworkFault.PROTOCOL_ERROR


def _lean_fault(exc: LeanHttpError) -> NetworkFault:
    if isinstance(exc, ConnectError):
        return _connect_fault(exc.os_error)
    for kind, fault in _LEAN_FAULTS:
        if isinstance(exc, kind):
            return fault
    return NetworkFault.PROTOCOL_ERROR  # InvalidURLError, ProtocolError


def _connect_fault(os_error: OSError) -> NetworkFault:
    """Why a connection could not be opened.

    There is no separate fault for "network or host unreachable": like a refusal, it means nothing listened
    where the token URL points, so it is reported as ``connection_refused`` with the reason in the detail.
    """
    if isinstance(os_error, socket.gaierror):
        return NetworkFault.DNS_FAILURE
    if isinstance(os_error, ssl.SSLError):
        return NetworkFault.TLS_ERROR
    if isinstance(os_error, TimeoutError):
        return NetworkFault.CONNECT_TIMEOUT
    if os_error.errno in _RESET_ERRNOS:
        return NetworkFault.CONNECTION_RESET
    return NetworkFault.CONNECTION_REFUSED


def describe(exc: BaseException, secrets: tuple[str, ...]) -> str:
    """A one-line ``Type: message`` with every secret cut out.

    The lean transport's messages name the host, the port and the reason, never the request line's target,
    a header or the body. The redaction is there anyway, because an ``OSError`` quoted in a message, or a
    future version, might say more.
    """
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return sanitize(text, secrets)
