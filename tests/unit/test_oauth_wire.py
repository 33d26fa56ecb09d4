"""The wire format of the refresh_token grant (RFC 6749 sections 2.3.1, 5 and 6), without a network."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.oauth_wire import (
    FORM_CONTENT_TYPE,
    basic_credentials,
    build_refresh_request,
    non_empty_str,
    parse_body,
    parse_expires_in,
    parse_retry_after,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _decode_basic(header: str) -> tuple[str, str]:
    """What an RFC 6749 section 2.3.1 server does: base64, split at the first ':', form-decode each part."""
    scheme, _, param = header.partition(" ")
    assert scheme == "Basic"
    raw_id, sep, raw_secret = base64.b64decode(param, validate=True).decode().partition(":")
    assert sep == ":"
    return unquote_plus(raw_id), unquote_plus(raw_secret)


# --- client credentials (RFC 6749 section 2.3.1) -----------------------------------------------------------


def test_basic_credentials_plain_ascii() -> None:
    assert basic_credentials("app", "app-secret") == "Basic " + base64.b64encode(b"app:app-secret").decode()


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [
        ("id:with:colons", "secret"),
        ("app", "p@ss:w0rd/+=&%"),
        ("app id", "secret with spaces"),
        ("émoji-🔑", "sécret-ü"),
        ("a+b", "100%"),
    ],
)
def test_basic_credentials_form_encode_each_part_before_joining(client_id: str, client_secret: str) -> None:
    header = basic_credentials(client_id, client_secret)
    pair = base64.b64decode(header.removeprefix("Basic ")).decode("ascii")  # encoding leaves only ASCII
    assert pair.count(":") == 1  # a ':' in the id is percent-encoded, so the server splits in the right place
    assert _decode_basic(header) == (client_id, client_secret)


@given(client_id=st.text(min_size=1), client_secret=st.text(min_size=1))
def test_basic_credentials_round_trip_for_any_text(client_id: str, client_secret: str) -> None:
    # Lone surrogates cannot be UTF-8 encoded by anyone; real ids and secrets never hold them.
    try:
        client_id.encode(), client_secret.encode()
    except UnicodeEncodeError:
        return
    assert _decode_basic(basic_credentials(client_id, client_secret)) == (client_id, client_secret)


# --- the request (RFC 6749 section 6) ----------------------------------------------------------------------


def test_build_refresh_request_basic_puts_credentials_in_the_header_only() -> None:
    request = build_refresh_request(
        client_id="app", client_secret="s3cret", refresh_token="rt-1", use_basic_auth=True
    )
    assert request.form == {"grant_type": "refresh_token", "refresh_token": "rt-1"}
    assert _decode_basic(request.headers["Authorization"]) == ("app", "s3cret")
    assert request.headers["Content-Type"] == FORM_CONTENT_TYPE
    assert request.headers["Accept"] == "application/json"


def test_build_refresh_request_post_puts_credentials_in_the_body_only() -> None:
    request = build_refresh_request(
        client_id="app", client_secret="s3cret", refresh_token="rt-1", use_basic_auth=False
    )
    assert request.form == {
        "grant_type": "refresh_token",
        "refresh_token": "rt-1",
        "client_id": "app",
        "client_secret": "s3cret",
    }
    assert "Authorization" not in request.headers


def test_build_refresh_request_sends_scope_only_when_given() -> None:
    with_scope = build_refresh_request(
        client_id="a", client_secret="s", refresh_token="r", use_basic_auth=True, scope="read write"
    )
    without = build_refresh_request(client_id="a", client_secret="s", refresh_token="r", use_basic_auth=True)
    assert with_scope.form["scope"] == "read write"
    assert "scope" not in without.form


def test_token_request_repr_shows_no_secret() -> None:
    request = build_refresh_request(
        client_id="app", client_secret="s3cret-xyz", refresh_token="rt-abc", use_basic_auth=False
    )
    assert "s3cret-xyz" not in repr(request)
    assert "rt-abc" not in repr(request)


# --- Retry-After (RFC 9110 section 10.2.3) -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [("7", 7), (" 120 ", 120), ("0", 0), ("86400", 86400)])
def test_retry_after_delay_seconds(value: str, seconds: int) -> None:
    assert parse_retry_after(value, NOW) == timedelta(seconds=seconds)


def test_retry_after_http_date_in_the_future_is_the_delay_until_then() -> None:
    value = format_datetime(NOW + timedelta(minutes=2), usegmt=True)  # "Sat, 01 Mar 2025 12:02:00 GMT"
    assert parse_retry_after(value, NOW) == timedelta(minutes=2)


def test_retry_after_http_date_with_numeric_offset() -> None:
    assert parse_retry_after("Sat, 01 Mar 2025 13:00:30 +0100", NOW) == timedelta(seconds=30)


def test_retry_after_http_date_in_the_past_is_ignored() -> None:
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=1), usegmt=True), NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "soon",
        "-5",
        "1.5",
        "7 seconds",
        "²",  # str.isdigit() says yes, int() says no
        "٣",  # Arabic-Indic three: not delay-seconds (RFC 9110 says 1*DIGIT, ASCII)
        "99999999999999999999",  # would overflow timedelta
        "Wed, 21 Oct 2015 07:28:00 +99999999999999999999",  # would overflow the offset
        "Mon, 99 Foo 2025 99:99:99 GMT",
        "Sat, 01 Mar 2025 12:02:00",  # no zone: ambiguous, ignored
    ],
)
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_beyond_a_week_is_ignored_as_absurd() -> None:
    assert parse_retry_after(str(8 * 86400), NOW) is None
    assert parse_retry_after(format_datetime(NOW + timedelta(days=30), usegmt=True), NOW) is None


@given(st.text())
def test_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or timedelta(0) <= result <= timedelta(days=7)


# --- expires_in (RFC 6749 section 5.1) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"), [(3600, 3600), ("3600", 3600), (" 3599 ", 3599), (3600.0, 3600), (1, 1)]
)
def test_expires_in_int_or_numeric_string(value: object, seconds: int) -> None:
    assert parse_expires_in(value) == seconds


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "1h", "3600.5", 3600.5, True, False, 0, -5, "-5", [3600], {"s": 1}, "²", 1e300,
     "99999999999999999999", float("inf"), float("nan")],
)  # fmt: skip
def test_expires_in_garbage_or_missing_is_unknown(value: object) -> None:
    assert parse_expires_in(value) is None


# --- bodies (RFC 6749 sections 5.1 and 5.2) ----------------------------------------------------------------


def test_parse_body_json_object() -> None:
    assert parse_body(b'{"access_token":"at","expires_in":60}', "application/json") == {
        "access_token": "at",
        "expires_in": 60,
    }


def test_parse_body_json_without_a_json_content_type_is_still_read() -> None:
    assert parse_body(b'{"error":"invalid_grant"}', "text/plain") == {"error": "invalid_grant"}


def test_parse_body_form_encoded_as_github_answers_without_accept_json() -> None:
    body = b"error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect"
    parsed = parse_body(body, "application/x-www-form-urlencoded; charset=utf-8")
    assert parsed == {
        "error": "bad_refresh_token",
        "error_description": "The refresh token passed is incorrect",
    }


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>oops</html>", "text/html"),
        (b"[1, 2]", "application/json"),
        (b'"just a string"', "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[" * 70_000, "application/json"),  # deeper than the recursion limit
        (b"no equals sign", "application/x-www-form-urlencoded"),
        (b"a=\xff", "application/x-www-form-urlencoded"),
    ],
)
def test_parse_body_anything_else_is_none(body: bytes, content_type: str) -> None:
    assert parse_body(body, content_type) is None


@given(body=st.binary(max_size=2048), content_type=st.text(max_size=60))
def test_parse_body_never_raises(body: bytes, content_type: str) -> None:
    result = parse_body(body, content_type)
    assert result is None or isinstance(result, dict)


@pytest.mark.parametrize(
    ("value", "expected"), [("x", "x"), (" a ", " a "), ("", None), ("  ", None), (5, None)]
)
def test_non_empty_str(value: object, expected: str | None) -> None:
    assert non_empty_str(value) == expected
