"""What the lean HTTP/1.1 transport raises when the network or the server lets a request down.

Every class is a ``LeanHttpError``, so the token client catches one base class; ``faults.network_fault`` maps
each to its ``NetworkFault``. Messages name the host, the port and the reason, never a header or the body, so
a description cannot carry a token or a secret (``faults.describe`` redacts anyway). Errors in our own use of
the transport (a header value with CR or LF) are ``ValueError``, not these: they are bugs, not faults.
"""

from __future__ import annotations


class LeanHttpError(Exception):
    """The request produced no response we could read, for a reason outside our code."""


class InvalidURLError(LeanHttpError):
    """A URL the transport cannot send to (a host with no IDNA form, a bad port)."""


class ConnectTimeoutError(LeanHttpError):
    """No connection within ``connect_timeout``: pool wait, DNS, TCP and TLS together."""


class ConnectError(LeanHttpError):
    """The connection could not be opened; ``os_error`` says why (DNS, refused, unreachable, TLS)."""

    def __init__(self, message: str, os_error: OSError) -> None:
        super().__init__(message)
        self.os_error = os_error


class ReadTimeoutError(LeanHttpError):
    """The server sent nothing for ``read_timeout``, or the whole exchange ran past its deadline."""


class ConnectionClosedError(LeanHttpError):
    """The connection was closed or reset before a complete response arrived."""


class ProtocolError(LeanHttpError):
    """The server's answer is not a valid HTTP/1.1 response (or an undecodable compressed body)."""
