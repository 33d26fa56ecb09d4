"""The token client's form encoder writes exactly what ``urllib.parse.urlencode`` writes (RFC 6749 app. B)."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from grantkeeper.adapters.http.token_client import encode_form

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(st.dictionaries(_TEXT, _TEXT, max_size=5))
def test_encode_form_matches_urlencode(form: dict[str, str]) -> None:
    assert encode_form(form) == urlencode(form).encode("ascii")


def test_a_typical_refresh_form_is_left_unquoted_where_it_can_be() -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "sbx-rt-AbC_9.~", "scope": "a b/c"}
    assert encode_form(form) == b"grant_type=refresh_token&refresh_token=sbx-rt-AbC_9.~&scope=a+b%2Fc"
