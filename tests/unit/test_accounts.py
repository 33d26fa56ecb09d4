"""Reading the provider account out of a token response (``core.accounts``); the classifier carries it."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grantkeeper.core.accounts import account_in, parse_account_field
from grantkeeper.core.classify import classify_response
from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.model import OutcomeClass
from grantkeeper.core.oauth_wire import RawResponse

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _jwt(claims: object) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "field", ["account_id", "authed_user.id", "owner.user.id", "id_token.sub", "a-b_c.d"]
)
def test_dotted_names_are_accepted(field: str) -> None:
    assert parse_account_field(field) == field


@pytest.mark.parametrize(
    "field", ["", ".", "a..b", "a.", "id_token", "a b", "$.sub", "a.b.c.d.e.f", "x" * 65, "sub\n", "é"]
)
def test_anything_else_is_refused_with_the_expected_form(field: str) -> None:
    with pytest.raises(InvalidInputError, match="account_field"):
        parse_account_field(field)


def test_the_account_is_read_where_the_operator_said() -> None:
    body = {
        "account_id": "dbid:AAH4f99",
        "authed_user": {"id": "U024BE7LH"},
        "owner": {"user": {"id": 42}},
        "id_token": _jwt({"sub": "110169484474386276334", "email": "a@example.test"}),
    }
    assert account_in(body, "account_id") == "dbid:AAH4f99"
    assert account_in(body, "authed_user.id") == "U024BE7LH"
    assert account_in(body, "owner.user.id") == "42"  # a number is an id too
    assert account_in(body, "id_token.sub") == "110169484474386276334"
    assert account_in(body, "id_token.email") == "a@example.test"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"account_id": ""},
        {"account_id": None},
        {"account_id": True},
        {"account_id": {"id": "x"}},
        {"account_id": ["x"]},
        {"account_id": "x" * 256},
        {"account_id": "bad\x00id"},
    ],
)
def test_no_usable_account_is_none(body: dict[str, object]) -> None:
    assert account_in(body, "account_id") is None


@pytest.mark.parametrize(
    "token",
    [
        None,
        42,
        "not-a-jwt",
        "a.b",
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"not json").decode() + ".c",
        _jwt(["sub"]),
        _jwt({"iss": "no sub"}),
        "x" * 20_000,
    ],
)
def test_an_unreadable_id_token_is_none(token: object) -> None:
    assert account_in({"id_token": token}, "id_token.sub") is None


def test_a_path_through_a_string_is_none() -> None:
    assert account_in({"account_id": "abc"}, "account_id.id") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared, busy machine
@given(
    st.dictionaries(st.sampled_from(["account_id", "id_token", "user", "x"]), json_values),
    st.sampled_from(["account_id", "id_token.sub", "user.id", "x.y.z"]),
)
def test_no_answer_makes_it_raise(body: dict[str, object], field: str) -> None:
    found = account_in(body, field)
    assert found is None or (isinstance(found, str) and 0 < len(found) <= 255)


def _answer(body: dict[str, object]) -> RawResponse:
    return RawResponse(200, "application/json", json.dumps(body).encode())


def test_a_code_exchange_names_the_account_and_a_refresh_does_not() -> None:
    body = {"access_token": "at", "refresh_token": "rt", "expires_in": 60, "account_id": "alice"}
    asked = classify_response(_answer(body), now=NOW, default_expires_in=3600, account_field="account_id")
    assert asked.klass is OutcomeClass.SUCCESS
    assert asked.tokens is not None
    assert asked.tokens.account_id == "alice"
    plain = classify_response(_answer(body), now=NOW, default_expires_in=3600)
    assert plain.tokens is not None
    assert plain.tokens.account_id is None
    missing = classify_response(
        _answer({"access_token": "at"}), now=NOW, default_expires_in=3600, account_field="account_id"
    )
    assert missing.klass is OutcomeClass.SUCCESS  # the flow decides what a missing account means
    assert missing.tokens is not None
    assert missing.tokens.account_id is None
