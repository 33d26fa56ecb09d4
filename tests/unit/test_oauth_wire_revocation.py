"""The wire format of an RFC 7009 revocation request (section 2.1), and how its response is read (2.2)."""

from __future__ import annotations

import base64
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.adapters.http.revocation import read_revocation_response
from grantkeeper.core.oauth_wire import (
    FORM_CONTENT_TYPE,
    RawResponse,
    build_refresh_request,
    build_revocation_request,
)
from grantkeeper.ports import RevocationResult


def _decode_basic(header: str) -> tuple[str, str]:
    """What an RFC 6749 section 2.3.1 server does: base64, split at the first ':', form-decode each part."""
    scheme, _, param = header.partition(" ")
    assert scheme == "Basic"
    raw_id, sep, raw_secret = base64.b64decode(param, validate=True).decode().partition(":")
    assert sep == ":"
    return unquote_plus(raw_id), unquote_plus(raw_secret)


# --- the request (RFC 7009 section 2.1) --------------------------------------------------------------------


def test_basic_puts_credentials_in_the_header_only() -> None:
    request = build_revocation_request(
        client_id="app",
        client_secret="s3cret",
        token="rt-1",
        token_type_hint="refresh_token",
        use_basic_auth=True,
    )
    assert request.form == {"token": "rt-1", "token_type_hint": "refresh_token"}
    assert _decode_basic(request.headers["Authorization"]) == ("app", "s3cret")
    assert request.headers["Content-Type"] == FORM_CONTENT_TYPE
    assert request.headers["Accept"] == "application/json"


def test_post_puts_credentials_in_the_body_only() -> None:
    request = build_revocation_request(
        client_id="app",
        client_secret="s3cret",
        token="at-1",
        token_type_hint="access_token",
        use_basic_auth=False,
    )
    assert request.form == {
        "token": "at-1",
        "token_type_hint": "access_token",
        "client_id": "app",
        "client_secret": "s3cret",
    }
    assert "Authorization" not in request.headers
    assert request.headers["Content-Type"] == FORM_CONTENT_TYPE


@pytest.mark.parametrize("hint", [None, ""])
def test_the_hint_is_optional(hint: str | None) -> None:
    request = build_revocation_request(
        client_id="app", client_secret="s", token="rt-1", token_type_hint=hint, use_basic_auth=True
    )
    assert request.form == {"token": "rt-1"}


@pytest.mark.parametrize("use_basic_auth", [True, False])
def test_client_authentication_is_the_same_as_for_a_refresh(use_basic_auth: bool) -> None:
    # RFC 7009 section 2.1 points at RFC 6749 section 2.3: the same credentials, carried the same way.
    credentials = {"client_id": "my:app", "client_secret": "p@ss word+/"}
    revocation = build_revocation_request(
        **credentials, token="rt-1", token_type_hint="refresh_token", use_basic_auth=use_basic_auth
    )
    refresh = build_refresh_request(**credentials, refresh_token="rt-1", use_basic_auth=use_basic_auth)
    assert revocation.headers == refresh.headers
    for key in ("client_id", "client_secret"):
        assert revocation.form.get(key) == refresh.form.get(key)


@given(client_id=st.text(min_size=1), client_secret=st.text(min_size=1), token=st.text(min_size=1))
def test_basic_credentials_round_trip_and_stay_out_of_the_form(
    client_id: str, client_secret: str, token: str
) -> None:
    try:
        client_id.encode(), client_secret.encode()
    except UnicodeEncodeError:  # lone surrogates: no real id or secret holds one
        return
    request = build_revocation_request(
        client_id=client_id,
        client_secret=client_secret,
        token=token,
        token_type_hint="refresh_token",
        use_basic_auth=True,
    )
    assert _decode_basic(request.headers["Authorization"]) == (client_id, client_secret)
    assert set(request.form) == {"token", "token_type_hint"}


def test_repr_shows_no_secret() -> None:
    request = build_revocation_request(
        client_id="app", client_secret="s3cret", token="rt-SECRET", token_type_hint=None, use_basic_auth=False
    )
    assert "s3cret" not in repr(request)
    assert "rt-SECRET" not in repr(request)


# --- the response (RFC 7009 section 2.2) -------------------------------------------------------------------


def _read(status: int, body: bytes = b"", *, is_oversized: bool = False) -> RevocationResult:
    raw = RawResponse(status=status, content_type="application/json", body=body)
    return read_revocation_response(raw, is_oversized=is_oversized, redact=("rt-Secret.Token", "s3cret"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"", RevocationResult(True, 200, None)),
        (200, b'{"error": "invalid_token"}', RevocationResult(True, 200, None)),  # the body is ignored
        (200, b"<html>not json</html>", RevocationResult(True, 200, None)),
        (400, b'{"error": "unsupported_token_type"}', RevocationResult(False, 400, "unsupported_token_type")),
        (401, b'{"error": "invalid_client"}', RevocationResult(False, 401, "invalid_client")),
        (400, b'{"error": {"code": "Invalid_Request"}}', RevocationResult(False, 400, "invalid_request")),
        (400, b"", RevocationResult(False, 400, "http_400")),
        (401, b"Unauthorized", RevocationResult(False, 401, "unauthorized")),
        (503, b"", RevocationResult(False, 503, "temporarily_unavailable")),
        (503, b'{"error": "server_error"}', RevocationResult(False, 503, "server_error")),
        (307, b"", RevocationResult(False, 307, "http_307")),
        (500, b"<html>oops</html>", RevocationResult(False, 500, "http_500")),
    ],
)
def test_response_reading(status: int, body: bytes, expected: RevocationResult) -> None:
    assert _read(status, body) == expected


def test_an_oversized_error_body_is_judged_by_status() -> None:
    assert _read(400, b"", is_oversized=True) == RevocationResult(False, 400, "http_400")
    assert _read(200, b"", is_oversized=True) == RevocationResult(True, 200, None)


def test_an_echoed_token_never_becomes_the_error_code() -> None:
    result = _read(400, b'{"error": "no such token rt-Secret.Token (client s3cret)"}')
    assert result.error_code is not None
    assert "secret" not in result.error_code.lower()
    assert "s3cret" not in result.error_code
