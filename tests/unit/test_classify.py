"""Every token endpoint answer maps to exactly one outcome class (DESIGN section 2), and no secret leaks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from grantkeeper.core.classify import (
    classify_fault,
    classify_response,
    missing_refresh_token,
    sanitize,
)
from grantkeeper.core.model import NetworkFault, Outcome, OutcomeClass
from grantkeeper.core.oauth_wire import RawResponse

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT_EXPIRES_IN = 1800
JSON = "application/json"

SUCCESS = OutcomeClass.SUCCESS
AUTH = OutcomeClass.AUTH
REAUTH = OutcomeClass.REAUTH_REQUIRED
TRANSIENT = OutcomeClass.TRANSIENT
CONFIG = OutcomeClass.CONFIG


def classify(
    status: int,
    body: object = b"",
    content_type: str = JSON,
    retry_after: str | None = None,
    redact: tuple[str, ...] = (),
) -> Outcome:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_response(
        RawResponse(status, content_type, raw, retry_after),
        now=NOW,
        default_expires_in=DEFAULT_EXPIRES_IN,
        redact=redact,
    )


# --- the code decides before the status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "klass", "code"),
    [
        (401, {"error": "invalid_client"}, CONFIG, "invalid_client"),
        (400, {"error": "invalid_client"}, CONFIG, "invalid_client"),
        (400, {"error": "unauthorized_client"}, CONFIG, "unauthorized_client"),
        (400, {"error": "unsupported_grant_type"}, CONFIG, "unsupported_grant_type"),
        (400, {"error": "invalid_request"}, CONFIG, "invalid_request"),
        (400, {"error": "invalid_grant"}, AUTH, "invalid_grant"),
        (400, {"error": "invalid_scope"}, AUTH, "invalid_scope"),
        (401, {"error": "invalid_grant"}, AUTH, "invalid_grant"),
        (400, {"error": "consent_required"}, REAUTH, "consent_required"),
        (400, {"error": "interaction_required"}, REAUTH, "interaction_required"),
        (400, {"error": "INVALID_GRANT "}, AUTH, "invalid_grant"),  # normalised before lookup
        (400, {"error": {"code": "invalid_grant", "message": "x"}}, AUTH, "invalid_grant"),
        (503, {"error": "temporarily_unavailable"}, TRANSIENT, "temporarily_unavailable"),
        (400, {"error": "server_error"}, TRANSIENT, "server_error"),
        # Slack answers 200 {"ok": false, ...}; GitHub answers 200 with an error: the code still decides.
        (200, {"ok": False, "error": "invalid_refresh_token"}, AUTH, "invalid_refresh_token"),
        (200, {"error": "bad_refresh_token", "error_description": "expired"}, AUTH, "bad_refresh_token"),
        (200, {"ok": False, "error": "token_revoked"}, AUTH, "token_revoked"),
    ],
)
def test_known_error_code_decides_the_class(
    status: int, body: object, klass: OutcomeClass, code: str
) -> None:
    outcome = classify(status, body)
    assert (outcome.klass, outcome.http_status) == (klass, status)
    assert outcome.error is not None
    assert outcome.error.code == code
    assert outcome.tokens is None


def test_github_form_encoded_bad_refresh_token_is_auth() -> None:
    body = b"error=bad_refresh_token&error_description=The+refresh+token+passed+is+incorrect+or+expired."
    outcome = classify(200, body, content_type="application/x-www-form-urlencoded; charset=utf-8")
    assert outcome.klass is AUTH
    assert outcome.error is not None
    assert outcome.error.code == "bad_refresh_token"
    assert outcome.error.description == "The refresh token passed is incorrect or expired."


def test_rate_limited_is_not_a_standard_code_so_429_decides_transient() -> None:
    outcome = classify(429, {"error": "rate_limited"}, retry_after="7")
    assert outcome.klass is TRANSIENT
    assert outcome.error is not None
    assert outcome.error.code == "rate_limited"
    assert outcome.retry_after == timedelta(seconds=7)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "klass", "code"),
    [
        (401, b"", "", AUTH, "unauthorized"),
        (403, b"<html>Forbidden</html>", "text/html", AUTH, "forbidden"),
        (404, b"<html>Not Found</html>", "text/html", AUTH, "http_404"),
        (400, b'{"error":"weird_vendor_code"}', JSON, AUTH, "weird_vendor_code"),
        (410, b"", "", AUTH, "http_410"),
        (408, b"", "", TRANSIENT, "request_timeout"),
        (429, b"", "", TRANSIENT, "rate_limited"),
        (500, b'{"error":"boom"}', JSON, TRANSIENT, "boom"),
        (502, b"Bad Gateway", "text/plain", TRANSIENT, "http_502"),
        (503, b"<html>503</html>", "text/html", TRANSIENT, "http_503"),
        (504, b"", "", TRANSIENT, "http_504"),
        (302, b"", "", CONFIG, "http_302"),  # redirects are not followed: the token URL is wrong
    ],
)
def test_without_a_known_code_the_status_decides(
    status: int, body: bytes, content_type: str, klass: OutcomeClass, code: str
) -> None:
    outcome = classify(status, body, content_type)
    assert outcome.klass is klass
    assert outcome.error is not None
    assert outcome.error.code == code
    assert outcome.tokens is None


def test_retry_after_http_date_is_kept_on_a_503() -> None:
    outcome = classify(503, b"<html/>", "text/html", retry_after=format_datetime(NOW + timedelta(seconds=90)))
    assert outcome.klass is TRANSIENT
    assert outcome.retry_after == timedelta(seconds=90)


def test_garbage_retry_after_is_ignored_not_fatal() -> None:
    outcome = classify(429, b"", retry_after="after lunch")
    assert outcome.klass is TRANSIENT
    assert outcome.retry_after is None


# --- success (RFC 6749 section 5.1) -----------------------------------------------------------------------


def test_success_with_rotation_returns_the_new_refresh_token() -> None:
    outcome = classify(
        200, {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 3600, "scope": "r"}
    )
    assert outcome.klass is SUCCESS
    assert outcome.error is None
    assert outcome.tokens is not None
    assert outcome.tokens.access_token == "at-2"
    assert outcome.tokens.refresh_token == "rt-2"
    assert outcome.tokens.expires_at == NOW + timedelta(seconds=3600)
    assert outcome.tokens.scope == "r"
    assert outcome.tokens.token_type == "Bearer"


@pytest.mark.parametrize("refresh_token", [None, "", "   "])
def test_success_without_a_refresh_token_means_keep_the_stored_one(refresh_token: str | None) -> None:
    body: dict[str, object] = {"access_token": "at-2", "expires_in": 60}
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    outcome = classify(200, body)
    assert outcome.tokens is not None
    assert outcome.tokens.refresh_token is None


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [(3600, 3600), ("3600", 3600), ("soon", DEFAULT_EXPIRES_IN), (None, DEFAULT_EXPIRES_IN),
     (-1, DEFAULT_EXPIRES_IN), (1e300, DEFAULT_EXPIRES_IN), ("²", DEFAULT_EXPIRES_IN)],
)  # fmt: skip
def test_success_expires_at_from_expires_in_or_the_provider_default(expires_in: object, seconds: int) -> None:
    body: dict[str, object] = {"access_token": "at"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    outcome = classify(200, body)
    assert outcome.tokens is not None
    assert outcome.tokens.expires_at == NOW + timedelta(seconds=seconds)


def test_success_keeps_the_token_type_the_provider_sent() -> None:
    outcome = classify(200, {"access_token": "at", "token_type": "bearer"})
    assert outcome.tokens is not None
    assert outcome.tokens.token_type == "bearer"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>oops</html>", "text/html"),
        (b'{"token_type":"Bearer","expires_in":3600}', JSON),
        (b'{"access_token":""}', JSON),
        (b'{"access_token":"  "}', JSON),
        (b'{"access_token":42}', JSON),
        (b'{"access_token":"at","error":"weird"}', JSON),
        (b"[]", JSON),
        (b"", ""),
    ],
)
def test_malformed_2xx_is_transient_and_carries_no_tokens(body: bytes, content_type: str) -> None:
    outcome = classify(200, body, content_type)
    assert outcome.klass is TRANSIENT
    assert outcome.tokens is None
    assert outcome.error is not None
    assert outcome.error.code == "malformed_response"


def test_tokens_never_show_in_repr() -> None:
    outcome = classify(200, {"access_token": "at-visible?", "refresh_token": "rt-visible?"})
    assert "visible?" not in repr(outcome)


# --- faults and missing tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", list(NetworkFault))
def test_every_network_fault_is_transient(fault: NetworkFault) -> None:
    outcome = classify_fault(fault, "ClientConnectorError: Cannot connect to host\nexample.com:443")
    assert outcome.klass is TRANSIENT
    assert outcome.http_status is None
    assert outcome.error is not None
    assert outcome.error.code == fault.value
    assert "\n" not in outcome.error.description


def test_missing_refresh_token_requires_reauthorization_at_once() -> None:
    outcome = missing_refresh_token()
    assert outcome.klass is REAUTH
    assert outcome.error is not None
    assert outcome.error.code == "no_refresh_token"


# --- secrets stay out of errors -----------------------------------------------------------------------------

SECRET = "rt-Secret.Value~123"


def test_error_description_echoing_the_token_is_redacted() -> None:
    body = {"error": "invalid_grant", "error_description": f"refresh token {SECRET} is revoked"}
    outcome = classify(400, body, redact=(SECRET,))
    assert outcome.error is not None
    assert SECRET not in outcome.error.description
    assert "[redacted]" in outcome.error.description


@pytest.mark.parametrize(
    "body",
    [
        {"error": SECRET},
        {"error": f"bad token {SECRET}"},
        {"error": {"code": SECRET}},
        {"ok": False, "error": SECRET.lower()},
    ],
)
def test_unknown_error_code_echoing_the_token_is_redacted(body: object) -> None:
    for status in (200, 400, 500):
        outcome = classify(status, body, redact=(SECRET, SECRET.lower()))
        assert outcome.error is not None
        assert SECRET.lower() not in outcome.error.code.lower()


def test_sanitize_makes_one_short_line() -> None:
    text = sanitize("line one\r\nline two\x00" + "x" * 500, ())
    assert "\n" not in text
    assert "\x00" not in text
    assert len(text) == 200
    assert sanitize(None) == ""


# --- totality (hypothesis) --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
token_fields = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.one_of(st.text(max_size=20), st.integers(), st.none()),
        "refresh_token": st.one_of(st.text(max_size=20), st.none()),
        "expires_in": st.one_of(st.integers(), st.text(max_size=12), st.floats(), st.none()),
        "error": st.one_of(st.sampled_from(["invalid_grant", "invalid_client", "rate_limited"]), json_values),
        "error_description": json_values,
        "ok": st.booleans(),
        "token_type": json_values,
        "scope": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=512),
    token_fields.map(lambda d: json.dumps(d).encode()),
    st.dictionaries(st.text(max_size=12), json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
content_types = st.one_of(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/html", ""]),
    st.text(max_size=40),
)
retry_afters = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: format_datetime(d, usegmt=True)),
)


@given(
    status=st.integers(min_value=100, max_value=599),
    body=bodies,
    content_type=content_types,
    retry_after=retry_afters,
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
@example(status=200, body=b"[" * 70_000, content_type=JSON, retry_after="\u00b2", now=NOW)
@example(
    status=200, body=b'{"access_token":"a","expires_in":1e308}', content_type=JSON, retry_after=None, now=NOW
)
def test_classify_response_is_total(
    status: int, body: bytes, content_type: str, retry_after: str | None, now: datetime
) -> None:
    outcome = classify_response(
        RawResponse(status, content_type, body, retry_after), now=now, default_expires_in=DEFAULT_EXPIRES_IN
    )
    assert isinstance(outcome, Outcome)
    assert outcome.http_status == status
    assert (outcome.klass is SUCCESS) == (outcome.tokens is not None)
    if outcome.tokens is not None:
        assert 200 <= status < 300
        assert outcome.tokens.access_token.strip()
        assert outcome.tokens.expires_at is not None
        assert outcome.tokens.expires_at > now
        assert outcome.error is None
    else:
        assert outcome.error is not None
        assert outcome.error.code
        assert len(outcome.error.description) <= 200


# Token-like secrets: long enough and free of '_' and spaces, so they cannot be a piece of the fixed texts
# classify writes itself ("2xx response with no access_token", "[redacted]", ...).
secrets = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.~+/=", min_size=16
)


@given(
    secret=secrets,
    status=st.integers(min_value=100, max_value=599),
    prefix=st.text(max_size=30),
    suffix=st.text(max_size=300),
    field=st.sampled_from(["error", "error_description", "message", "nested"]),
    error_code=st.sampled_from(["invalid_grant", "weird", None]),
)
def test_a_redacted_secret_never_reaches_the_error(
    secret: str, status: int, prefix: str, suffix: str, field: str, error_code: str | None
) -> None:
    echoed = prefix + secret + suffix
    body: dict[str, object] = {} if error_code is None else {"error": error_code}
    if field == "nested":
        body["error"] = {"code": echoed, "message": echoed}
    else:
        body[field] = echoed
    for raw in (json.dumps(body).encode(), echoed.encode("utf-8", "surrogatepass")):
        outcome = classify(status, raw, redact=(secret,))
        assert outcome.error is not None
        assert secret not in outcome.error.code
        assert secret.lower() not in outcome.error.code
        assert secret not in outcome.error.description
