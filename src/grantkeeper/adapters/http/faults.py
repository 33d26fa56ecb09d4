"""Map what aiohttp raises to the ``NetworkFault`` it means, and describe it without leaking a secret.

The exception tree as far as it matters here (aiohttp >= 3.10.10; more specific classes are tested first)::

    TimeoutError (asyncio.TimeoutError)           aiohttp's total deadline ran out     -> read_timeout
    aiohttp.ClientError
    +-- ClientConnectionError
    |   +-- ServerTimeoutError                                                        -> read_timeout
    |   |   +-- ConnectionTimeoutError           sock_connect / connect (pool) limit  -> connect_timeout
    |   |   +-- SocketTimeoutError               sock_read limit                      -> read_timeout
    |   +-- ServerDisconnectedError              peer closed before a full response   -> connection_reset
    |   +-- ServerFingerprintMismatch                                                 -> tls_error
    |   +-- ClientOSError                        ECONNRESET / EPIPE / ECONNABORTED    -> connection_reset
    |       +-- ClientConnectionResetError                                            -> connection_reset
    |       +-- ClientConnectorError             by its ``os_error``, see _connect_fault
    |           +-- ClientConnectorDNSError                                           -> dns_failure
    |           +-- ClientSSLError (certificate, handshake)                           -> tls_error
    +-- ClientPayloadError                       body cut short or badly encoded      -> connection_reset
    +-- anything else (bad status line, header too long, invalid URL)                 -> protocol_error

Nothing here says anything about the grant, so ``classify_fault`` makes every one of them transient.
"""

from __future__ import annotations

import errno
import socket
import ssl

import aiohttp

from grantkeeper.core.classify import sanitize
from grantkeeper.core.model import NetworkFault

_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_RESET_TYPES = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientPayloadError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
_TLS_TYPES = (aiohttp.ClientSSLError, aiohttp.ServerFingerprintMismatch, ssl.SSLError)

#: Everything the transport may raise for reasons outside our code; the token client catches exactly these.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)  # asyncio.TimeoutError is the builtin (an OSError) on 3.11


def network_fault(exc: BaseException) -> NetworkFault:
    """The fault ``exc`` stands for; only called for instances of ``TRANSPORT_ERRORS``."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return NetworkFault.CONNECT_TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return NetworkFault.DNS_FAILURE
    if isinstance(exc, _TLS_TYPES):
        return NetworkFault.TLS_ERROR
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _connect_fault(exc.os_error)
    if isinstance(exc, TimeoutError):  # ServerTimeoutError, SocketTimeoutError and the total deadline
        return NetworkFault.READ_TIMEOUT
    if isinstance(exc, _RESET_TYPES) or (isinstance(exc, OSError) and exc.errno in _RESET_ERRNOS):
        return NetworkFault.CONNECTION_RESET
    return NetworkFault.PROTOCOL_ERROR


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

    aiohttp's messages hold the host, sometimes the URL, never the request body or headers; the redaction is
    there anyway because a future version, or an exception chained from a proxy, might quote more.
    """
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return sanitize(text, secrets)
