"""A provider's extra authorization parameters: plain name=value pairs that never replace the flow's own."""

from __future__ import annotations

import pytest

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.oauth_wire import build_code_request
from grantkeeper.service.admin import RESERVED_AUTHORIZE_PARAMS, check_authorize_params


def test_ordinary_extras_pass():
    check_authorize_params({"access_type": "offline", "prompt": "consent", "audience": "api.example.com"})
    check_authorize_params(None)
    check_authorize_params({})


@pytest.mark.parametrize("name", sorted(RESERVED_AUTHORIZE_PARAMS))
def test_the_flows_own_parameters_cannot_be_overridden(name):
    with pytest.raises(InvalidInputError, match="set by the flow itself"):
        check_authorize_params({name: "x"})


@pytest.mark.parametrize(
    "params",
    [
        {"": "x"},
        {"a b": "x"},
        {"x" * 65: "y"},
        {"ok": "line\nbreak"},
        {"ok": "v" * 513},
        {f"p{i}": "v" for i in range(21)},
    ],
)
def test_malformed_extras_are_refused(params):
    with pytest.raises(InvalidInputError):
        check_authorize_params(params)


def test_a_code_request_carries_the_verifier_and_redirect_uri():
    basic = build_code_request(
        client_id="app", client_secret="s3cret", code="c0de", redirect_uri="https://gk.example/oauth/callback",
        code_verifier="v" * 43, use_basic_auth=True,
    )  # fmt: skip
    assert basic.form == {
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": "https://gk.example/oauth/callback",
        "code_verifier": "v" * 43,
    }
    assert basic.headers["Authorization"].startswith("Basic ")
    in_body = build_code_request(
        client_id="app", client_secret="s3cret", code="c0de", redirect_uri="https://gk.example/oauth/callback",
        code_verifier="v" * 43, use_basic_auth=False,
    )  # fmt: skip
    assert in_body.form["client_secret"] == "s3cret"
    assert "Authorization" not in in_body.headers
    assert "c0de" not in repr(in_body)
