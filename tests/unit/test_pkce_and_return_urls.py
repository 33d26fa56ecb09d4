"""PKCE values (RFC 7636) and the return-URL allow list that keeps ``/oauth/callback`` from being an open
redirect."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.core.pkce import digest, new_secret, new_verifier, s256_challenge
from grantkeeper.core.return_urls import ReturnUrlAllowList


def test_the_rfc_7636_appendix_b_example():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_are_long_random_and_in_the_unreserved_set():
    verifiers = {new_verifier() for _ in range(100)}
    assert len(verifiers) == 100
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
        challenge = s256_challenge(verifier)
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        assert challenge == expected


@pytest.mark.parametrize("bad", ["short", "x" * 129, "a" * 42 + "!", "a" * 43 + " "])
def test_a_verifier_outside_the_rules_is_refused(bad):
    with pytest.raises(ValueError, match="43-128"):
        s256_challenge(bad)


def test_secrets_are_unique_and_only_their_digest_is_kept():
    values = {new_secret() for _ in range(100)}
    assert len(values) == 100
    value = next(iter(values))
    assert len(digest(value)) == 64
    assert value not in digest(value)
    assert digest(value) == digest(value)


ALLOW = ReturnUrlAllowList.parse(
    "https://app.example.com, https://admin.example.com/settings/, http://localhost:3000"
)


@pytest.mark.parametrize(
    "url",
    [
        "https://app.example.com",
        "https://app.example.com/",
        "https://app.example.com/anything?x=1#y",
        "https://APP.example.com:443/x",
        "https://admin.example.com/settings",
        "https://admin.example.com/settings/integrations",
        "http://localhost:3000/done",
    ],
)
def test_allowed_return_urls(url):
    assert ALLOW.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "http://app.example.com/",  # the scheme is part of the origin
        "https://app.example.com:8443/",
        "https://app.example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "https://user:pw@app.example.com/",
        "https://admin.example.com/settingsX",  # whole path segments only
        "https://admin.example.com/other",
        "//app.example.com/",
        "javascript:alert(1)",
        "https://app.example.com\\@evil.example/",
        "https://app.example.com/\ttab",
        "https://app.example.com/" + "x" * 3000,
        "",
        "http://localhost:3001/",
    ],
)
def test_refused_return_urls(url):
    assert not ALLOW.allows(url)


def test_an_empty_allow_list_allows_nothing():
    empty = ReturnUrlAllowList.parse("")
    assert not empty
    assert not empty.allows("https://app.example.com/")


@pytest.mark.parametrize(
    "entry",
    ["app.example.com", "ftp://x.example/", "https://x.example/?q=1", "https://u@x.example/", "https://"],
)
def test_a_bad_allow_list_entry_is_a_clear_error(entry):
    with pytest.raises(ValueError, match="allow list entry"):
        ReturnUrlAllowList.parse(entry)


@given(st.text(max_size=200))
def test_no_text_crashes_the_check(text):
    assert ALLOW.allows(text) in (True, False)
