"""Reading RFC 7662 answers: only a JSON boolean ``active`` decides; anything else is unknown."""

from __future__ import annotations

import json

import pytest

from grantkeeper.adapters.http.introspection import read_introspection_response
from grantkeeper.core.oauth_wire import RawResponse, build_introspection_request
from grantkeeper.ports import TokenStatus

SECRET = "rt-very-secret"


def raw(status: int, body: object, content_type: str = "application/json") -> RawResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawResponse(status=status, content_type=content_type, body=data, retry_after=None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"active": True, "token_type": "refresh_token"}, TokenStatus.ACTIVE),
        ({"active": False}, TokenStatus.INACTIVE),
        ({"active": "true"}, TokenStatus.UNKNOWN),  # a string is not the RFC's boolean
        ({"active": 1}, TokenStatus.UNKNOWN),
        ({}, TokenStatus.UNKNOWN),
        ([True], TokenStatus.UNKNOWN),
        (b"<html>ok</html>", TokenStatus.UNKNOWN),
    ],
)
def test_only_a_boolean_active_decides(body: object, expected: TokenStatus) -> None:
    result = read_introspection_response(raw(200, body), is_oversized=False, redact=(SECRET,))
    assert result.status is expected
    assert (result.error_code is None) is (expected is not TokenStatus.UNKNOWN)


def test_an_error_status_is_unknown_with_the_providers_code_and_no_secret() -> None:
    body = {"error": f"invalid_client {SECRET}"}
    result = read_introspection_response(raw(401, body), is_oversized=False, redact=(SECRET,))
    assert result.status is TokenStatus.UNKNOWN
    assert result.http_status == 401
    assert result.error_code is not None
    assert SECRET not in result.error_code


def test_an_oversized_answer_is_unknown_even_with_a_200() -> None:
    result = read_introspection_response(raw(200, b""), is_oversized=True, redact=())
    assert result.status is TokenStatus.UNKNOWN


def test_a_503_without_a_body_is_unknown() -> None:
    result = read_introspection_response(raw(503, b"", "text/plain"), is_oversized=False, redact=())
    assert (result.status, result.error_code) == (TokenStatus.UNKNOWN, "http_503")


@pytest.mark.parametrize("basic", [True, False])
def test_the_request_asks_about_a_refresh_token_with_the_clients_usual_authentication(basic: bool) -> None:
    request = build_introspection_request(
        client_id="app", client_secret="s", token="rt", use_basic_auth=basic
    )
    assert request.form["token"] == "rt"
    assert request.form["token_type_hint"] == "refresh_token"
    assert ("Authorization" in request.headers) is basic
    assert ("client_secret" in request.form) is not basic
