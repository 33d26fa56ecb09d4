"""The issuer identifier rules (``core.issuers``): what an operator may name, and how a callback's ``iss`` is
compared with it (RFC 9207 section 2.4, RFC 8414 section 2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.issuers import issuer_problem, validate_issuer


@pytest.mark.parametrize(
    "issuer",
    ["https://accounts.google.com", "https://login.microsoftonline.com/abc/v2.0", "http://127.0.0.1:8080",
     "https://example.okta.com/oauth2/default", "https://idp.example.test/"],
)  # fmt: skip
def test_issuer_identifiers_that_are_taken(issuer: str) -> None:
    validate_issuer(issuer)


@pytest.mark.parametrize(
    ("issuer", "words"),
    [
        ("http://idp.example.test", "must use https"),
        ("https://idp.example.test?a=1", "must not have a ?query"),
        ("https://idp.example.test#top", "must not have a #fragment"),
        ("https://u:p@idp.example.test", "must not contain credentials"),
        ("idp.example.test", "absolute https URL"),
        ("", "non-empty"),
        ("https://idp.example.test/\n", "whitespace"),
    ],
)
def test_issuer_identifiers_that_are_refused_say_why(issuer: str, words: str) -> None:
    with pytest.raises(ValueError, match="issuer") as raised:
        validate_issuer(issuer)
    assert words in str(raised.value)


def test_without_an_expected_issuer_nothing_is_checked() -> None:
    assert issuer_problem(None, None) is None
    assert issuer_problem(None, "https://anything.example") is None


@pytest.mark.parametrize(
    "received",
    ["https://idp.example.test/", "HTTPS://idp.example.test", "https://IDP.example.test", " https://idp.example.test",
     "https://idp.example.test.evil.example"],
)  # fmt: skip
def test_the_comparison_is_exact(received: str) -> None:
    assert issuer_problem("https://idp.example.test", received) == "mismatch"


def test_a_missing_iss_is_its_own_problem() -> None:
    assert issuer_problem("https://idp.example.test", None) == "missing"


@given(st.text(min_size=1), st.text(min_size=1))
def test_only_the_same_string_passes(expected: str, received: str) -> None:
    assert issuer_problem(expected, expected) is None
    assert (issuer_problem(expected, received) is None) == (expected == received)
