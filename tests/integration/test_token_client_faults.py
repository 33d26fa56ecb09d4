"""Every exception the token client's transport can raise maps to the right ``NetworkFault``, described
without a secret.

The real faults are produced over loopback in ``test_token_client``, ``test_lean_http`` and
``test_outcome_table``; this file pins the mapping for those a loopback test cannot provoke reliably
(certificate errors, unreachable networks, the raw ``OSError`` fallbacks) by building the exceptions directly.
"""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from grantkeeper.adapters.http.faults import TRANSPORT_ERRORS, describe, network_fault
from grantkeeper.core.model import NetworkFault

F = NetworkFault
CASES: list[tuple[BaseException, NetworkFault]] = [
    (TimeoutError(), F.READ_TIMEOUT),
    (ssl.SSLError(1, "decryption failed"), F.TLS_ERROR),
    (ConnectionResetError(errno.ECONNRESET, "reset"), F.CONNECTION_RESET),
    (BrokenPipeError(errno.EPIPE, "Broken pipe"), F.CONNECTION_RESET),
    (OSError(errno.ECONNABORTED, "aborted"), F.CONNECTION_RESET),
    (OSError(errno.EINVAL, "Invalid argument"), F.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(
    ("exc", "fault"), CASES, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else ""
)
def test_exception_maps_to_fault(exc: BaseException, fault: NetworkFault) -> None:
    assert isinstance(exc, TRANSPORT_ERRORS)  # the client catches it, so refresh never raises
    assert network_fault(exc) is fault


def test_programming_errors_are_not_transport_errors() -> None:
    for exc in (TypeError("bug"), KeyError("bug"), AttributeError("bug")):
        assert not isinstance(exc, TRANSPORT_ERRORS)


def test_describe_names_the_exception_and_cuts_out_secrets() -> None:
    exc = OSError("POST https://provider.example/token failed: refresh_token=rt-SECRET&x=1\nmore")
    text = describe(exc, ("rt-SECRET", "app-secret"))
    assert text.startswith("OSError: POST https://provider.example/token failed")
    assert "rt-SECRET" not in text
    assert "\n" not in text


def test_describe_an_exception_without_a_message() -> None:
    assert describe(ConnectionResetError(), ()) == "ConnectionResetError"
    assert describe(TimeoutError(), ()) == "TimeoutError"


# --- the lean transport's exceptions (ADR 0008): what the token client raises since ------------------------

from grantkeeper.adapters.http.lean_errors import (  # noqa: E402
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    InvalidURLError,
    LeanHttpError,
    ProtocolError,
    ReadTimeoutError,
)


def _connect_error(os_error: OSError) -> ConnectError:
    return ConnectError(f"cannot connect to provider.example: {os_error}", os_error)


LEAN_CASES: list[tuple[BaseException, NetworkFault]] = [
    (ConnectTimeoutError("no connection to provider.example within 5 s"), F.CONNECT_TIMEOUT),
    (ReadTimeoutError("no data from the server for 15 s"), F.READ_TIMEOUT),
    (ReadTimeoutError("the response was not complete by the exchange's deadline"), F.READ_TIMEOUT),
    (ConnectionClosedError("the server closed the connection too early"), F.CONNECTION_RESET),
    (ProtocolError("malformed HTTP response: Invalid status code"), F.PROTOCOL_ERROR),
    (InvalidURLError("host has no IDNA form"), F.PROTOCOL_ERROR),
    (LeanHttpError("anything else"), F.PROTOCOL_ERROR),
    (_connect_error(socket.gaierror(-2, "Name or service not known")), F.DNS_FAILURE),
    (_connect_error(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")), F.CONNECTION_REFUSED),
    (_connect_error(OSError(errno.ENETUNREACH, "Network is unreachable")), F.CONNECTION_REFUSED),
    (_connect_error(OSError("Multiple exceptions: [Errno 111] ..., [Errno 99] ...")), F.CONNECTION_REFUSED),
    (_connect_error(ssl.SSLCertVerificationError(1, "self-signed certificate")), F.TLS_ERROR),
    (_connect_error(ssl.SSLError(1, "wrong version number")), F.TLS_ERROR),
    (_connect_error(ConnectionResetError(errno.ECONNRESET, "reset in the handshake")), F.CONNECTION_RESET),
    (_connect_error(TimeoutError(errno.ETIMEDOUT, "Connection timed out")), F.CONNECT_TIMEOUT),
]


@pytest.mark.parametrize(
    ("exc", "fault"), LEAN_CASES, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else ""
)
def test_lean_transport_exception_maps_to_fault(exc: BaseException, fault: NetworkFault) -> None:
    assert isinstance(exc, TRANSPORT_ERRORS)
    assert network_fault(exc) is fault


def test_a_header_value_refused_by_the_lean_transport_is_not_a_transport_error() -> None:
    # A CR or LF in a header value is our bug: refresh lets the ValueError through, it is no fault.
    assert not isinstance(ValueError("header Authorization has a CR, LF or NUL"), TRANSPORT_ERRORS)


def test_describe_a_lean_error_cuts_out_secrets() -> None:
    exc = ConnectionClosedError("closed while sending refresh_token=rt-SECRET")
    text = describe(exc, ("rt-SECRET",))
    assert text == "ConnectionClosedError: closed while sending refresh_token=[redacted]"
