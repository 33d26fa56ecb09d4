"""Turn whatever the token endpoint did into exactly one outcome class (DESIGN section 2).

``classify_response`` and ``classify_fault`` are total: every input maps to an ``Outcome`` and nothing raises.
The rule that matters most: when the response carries an error code (RFC 6749 section 5.2, or a provider's own
shape mapped by its profile), the code decides; the HTTP status decides only when there is none or the code
is unknown. So ``401 invalid_client`` is config, ``400 invalid_grant`` is auth, a bare 401 is auth, and a
``429 {"error": "rate_limited"}`` is transient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from grantkeeper.core.accounts import account_in
from grantkeeper.core.model import ErrorInfo, NetworkFault, Outcome, OutcomeClass, TokenSet
from grantkeeper.core.oauth_wire import (
    RawResponse,
    non_empty_str,
    parse_body,
    parse_expires_in,
    parse_retry_after,
)

_A = OutcomeClass.AUTH
_R = OutcomeClass.REAUTH_REQUIRED
_T = OutcomeClass.TRANSIENT
_C = OutcomeClass.CONFIG

#: Error codes whose meaning is settled: RFC 6749 section 5.2, OpenID Connect Core 3.1.2.6, and the codes
#: real providers use for "this refresh token is dead" (see shared/providers). Unknown codes fall back to the
#: status.
STANDARD_ERROR_CLASSES: Mapping[str, OutcomeClass] = {
    "invalid_grant": _A,
    "invalid_scope": _A,
    "invalid_token": _A,
    "invalid_refresh_token": _A,  # Slack
    "bad_refresh_token": _A,  # GitHub
    "token_revoked": _A,  # Slack
    "token_expired": _A,
    "expired_token": _A,
    "refresh_token_expired": _A,
    "access_denied": _A,
    "consent_required": _R,
    "interaction_required": _R,
    "login_required": _R,
    "account_selection_required": _R,
    "app_uninstalled": _R,
    "app_not_installed": _R,
    "invalid_client": _C,
    "unauthorized_client": _C,
    "unsupported_grant_type": _C,
    "invalid_request": _C,
    "temporarily_unavailable": _T,
    "server_error": _T,
    "slow_down": _T,
}

_DESCRIPTION_LIMIT = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


_CODE_CHARS = re.compile(r"[^a-z0-9_.:-]+")
_SCRUB_DEPTH = 8


def _standard_error_code(body: Mapping[str, Any]) -> str | None:
    """RFC 6749 section 5.2 ``error``; also ``{"error": {"code": ...}}`` and Slack's ``{"ok": false, ...}``.

    The code is provider-controlled text, so it is cut to a short identifier before anyone stores or logs it.
    """
    error = body.get("error")
    if isinstance(error, Mapping):
        error = error.get("code")
    if not isinstance(error, str):
        return None
    code = _CODE_CHARS.sub("_", error.strip().lower())[:64]
    return code or None


@dataclass(frozen=True)
class ProviderProfile:
    """Provider quirks as data plus one small hook, never ``if provider == ...`` in the classifier."""

    name: str = "standard"
    error_classes: Mapping[str, OutcomeClass] = field(default_factory=lambda: dict(STANDARD_ERROR_CLASSES))
    extract_error_code: Callable[[Mapping[str, Any]], str | None] = _standard_error_code


DEFAULT_PROFILE = ProviderProfile()


def sanitize(text: object, redact: tuple[str, ...] = ()) -> str:
    """A short, single-line description safe for logs and listings: secrets we sent are cut out first."""
    if not isinstance(text, str):
        return ""
    for secret in redact:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _DESCRIPTION_LIMIT else text[: _DESCRIPTION_LIMIT - 1] + "…"


def _redact_strings(body: Mapping[str, Any], redact: tuple[str, ...]) -> Mapping[str, Any]:
    """A copy of ``body`` with every secret in ``redact`` replaced in its string values.

    Containers nested deeper than any error shape we know are dropped rather than walked, so a hostile body of
    a few hundred nested objects cannot exhaust the stack.
    """
    secrets = tuple(s for s in redact if s)
    if not secrets:
        return body

    def scrub(value: Any, depth: int) -> Any:
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, "[redacted]")
            return value
        if isinstance(value, Mapping | list) and depth >= _SCRUB_DEPTH:
            return None
        if isinstance(value, Mapping):
            return {key: scrub(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [scrub(item, depth + 1) for item in value]
        return value

    return {key: scrub(item, 1) for key, item in body.items()}


def classify_response(
    response: RawResponse,
    *,
    now: datetime,
    default_expires_in: int,
    profile: ProviderProfile = DEFAULT_PROFILE,
    redact: tuple[str, ...] = (),
    account_field: str | None = None,
) -> Outcome:
    """Classify one HTTP response from the token endpoint; ``redact`` lists secrets to keep out of errors,
    ``account_field`` where a success names the provider account (``TokenSet.account_id``)."""
    body = parse_body(response.body, response.content_type)
    retry_after = parse_retry_after(response.retry_after, now)
    # An unknown code is kept as provider text, so secrets are cut out before the code is read: a server that
    # echoes the request (``{"error": "bad token <the token>"}``) must not get the token into ``last_error``.
    code = profile.extract_error_code(body) if body is not None else None
    if code is not None and body is not None:  # read again from a redacted copy: only errors echo secrets
        code = profile.extract_error_code(_redact_strings(body, redact))
    klass = profile.error_classes.get(code) if code is not None else None
    if klass is not None and code is not None:
        description = sanitize(body.get("error_description"), redact) if body is not None else ""
        return Outcome(klass, response.status, ErrorInfo(code, description), retry_after)
    if 200 <= response.status < 300:
        outcome = _classify_success_body(response.status, body, code, now, default_expires_in)
        if account_field is not None and outcome.tokens is not None and body is not None:
            account_id = account_in(body, account_field)
            outcome = replace(outcome, tokens=replace(outcome.tokens, account_id=account_id))
        return outcome
    return _classify_by_status(response.status, code, retry_after)


def _classify_success_body(
    status: int, body: Mapping[str, Any] | None, code: str | None, now: datetime, default_expires_in: int
) -> Outcome:
    """RFC 6749 section 5.1: a usable answer is a JSON object with a non-empty ``access_token``.

    A 2xx that is not JSON, lacks the token or carries an unknown error code is the provider misbehaving, not
    the grant failing, so it is transient and never overwrites what is stored.
    """
    access_token = non_empty_str(body.get("access_token")) if body is not None else None
    if body is None or access_token is None or code is not None:
        reason = "not JSON" if body is None else (f"error {code}" if code else "no access_token")
        return Outcome(_T, status, ErrorInfo("malformed_response", f"2xx response with {reason}"))
    expires_in = parse_expires_in(body.get("expires_in")) or default_expires_in
    tokens = TokenSet(
        access_token=access_token,
        refresh_token=non_empty_str(body.get("refresh_token")),
        expires_at=now + timedelta(seconds=expires_in),
        token_type=non_empty_str(body.get("token_type")) or "Bearer",
        scope=non_empty_str(body.get("scope")),
    )
    return Outcome(OutcomeClass.SUCCESS, status, tokens=tokens)


def _classify_by_status(status: int, code: str | None, retry_after: timedelta | None) -> Outcome:
    """No known error code: the status decides (408, 429 and 5xx transient; 401, 403 and other 4xx auth)."""
    if status in (408, 429) or status >= 500:
        klass = _T
    elif 400 <= status < 500:
        klass = _A
    else:
        klass = _C  # 1xx/3xx from a token endpoint: the configured URL is wrong, not the user's grant
    error_code = code or _status_code_name(status)
    return Outcome(klass, status, ErrorInfo(error_code, f"HTTP {status}"), retry_after)


def _status_code_name(status: int) -> str:
    names = {401: "unauthorized", 403: "forbidden", 408: "request_timeout", 429: "rate_limited"}
    return names.get(status, f"http_{status}")


def classify_fault(fault: NetworkFault, detail: str = "") -> Outcome:
    """Network trouble never says anything about the grant: always transient (DESIGN section 2)."""
    return Outcome(_T, None, ErrorInfo(fault.value, sanitize(detail)))


def inactive_refresh_token() -> Outcome:
    """The provider's introspection says the stored refresh token no longer works; it was not sent.

    Read as the provider refusing it (``invalid_grant``), which is what sending it would have brought, minus
    the request a strict provider takes as a reuse (and may answer by revoking the whole grant).
    """
    description = "introspection says the stored refresh token is no longer active; it was not sent"
    return Outcome(OutcomeClass.AUTH, None, ErrorInfo("invalid_grant", description))


def missing_refresh_token() -> Outcome:
    """No refresh token on file: only the user can fix it, so reauthorization is required at once."""
    return Outcome(_R, None, ErrorInfo("no_refresh_token", "no refresh token on file"))
