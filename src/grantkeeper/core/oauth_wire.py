"""Build refresh, code and revocation requests and read token responses without doing any I/O.

Refresh: RFC 6749 sections 2.3.1, 5 and 6. Revocation: RFC 7009 section 2.1.

Keeping the wire format here lets the HTTP adapter stay a thin shell and lets tests cover every encoding
corner (Basic credentials, numeric-string ``expires_in``, HTTP-date ``Retry-After``) without a network.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from grantkeeper.core.quick_init import quick_init

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: Bounds on provider-supplied durations. Anything larger is nonsense (or an attempt to overflow
#: ``timedelta``) and is treated like an unreadable value, so the caller falls back to its default.
MAX_RETRY_AFTER = timedelta(days=7)
MAX_EXPIRES_IN = 10 * 366 * 24 * 3600


@quick_init
@dataclass(frozen=True)
class TokenRequest:
    """A request ready to send (refresh_token grant or revocation): form fields and headers (both may hold
    secrets)."""

    form: dict[str, str] = field(repr=False)
    headers: dict[str, str] = field(repr=False)


@quick_init
@dataclass(frozen=True)
class RawResponse:
    """What came back from the token endpoint, before any interpretation."""

    status: int
    content_type: str = ""
    body: bytes = field(default=b"", repr=False)
    retry_after: str | None = None


@functools.lru_cache(maxsize=256)
def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: each part is form-urlencoded before joining, then base64 (so ':' is safe).

    Memoised: a pure function of a provider's credentials, asked for on every refresh."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _authenticated(
    form: dict[str, str], client_id: str, client_secret: str, *, use_basic_auth: bool
) -> TokenRequest:
    """RFC 6749 section 2.3.1, as every endpoint that takes our credentials wants it: Basic credentials in the
    header, or ``client_id`` and ``client_secret`` in the body, never both."""
    headers = {"Accept": "application/json", "Content-Type": FORM_CONTENT_TYPE}
    if use_basic_auth:
        headers["Authorization"] = basic_credentials(client_id, client_secret)
    else:
        form["client_id"] = client_id
        form["client_secret"] = client_secret
    return TokenRequest(form=form, headers=headers)


def build_refresh_request(
    *,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    use_basic_auth: bool,
    scope: str | None = None,
) -> TokenRequest:
    """RFC 6749 section 6: ``grant_type=refresh_token`` with client authentication by Basic or in the body."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope:
        form["scope"] = scope
    return _authenticated(form, client_id, client_secret, use_basic_auth=use_basic_auth)


def build_code_request(
    *,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    use_basic_auth: bool,
) -> TokenRequest:
    """RFC 6749 section 4.1.3 with RFC 7636 section 4.5: redeem an authorization code with its verifier and
    the same ``redirect_uri`` the authorization request carried."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    return _authenticated(form, client_id, client_secret, use_basic_auth=use_basic_auth)


def build_revocation_request(
    *,
    client_id: str,
    client_secret: str,
    token: str,
    token_type_hint: str | None,
    use_basic_auth: bool,
) -> TokenRequest:
    """RFC 7009 section 2.1: ``token`` and an optional ``token_type_hint``, form-encoded in a POST.

    The client authenticates as it does at the token endpoint (RFC 7009 section 2.1 refers to RFC 6749
    section 2.3): Basic credentials in the header, or ``client_id`` and ``client_secret`` in the body, never
    both. The hint (``refresh_token`` or ``access_token``, RFC 7009 section 2.1) is left out when empty.
    """
    form = {"token": token}
    if token_type_hint:
        form["token_type_hint"] = token_type_hint
    return _authenticated(form, client_id, client_secret, use_basic_auth=use_basic_auth)


def build_introspection_request(
    *, client_id: str, client_secret: str, token: str, use_basic_auth: bool
) -> TokenRequest:
    """RFC 7662 section 2.1: the same form and client authentication as a revocation (RFC 7009 section
    2.1), asking about a refresh token."""
    return build_revocation_request(
        client_id=client_id,
        client_secret=client_secret,
        token=token,
        token_type_hint="refresh_token",  # noqa: S106 - a hint's name, not a secret
        use_basic_auth=use_basic_auth,
    )


def parse_body(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The response as a JSON object, or form fields when the provider answers form-encoded (GitHub does).

    Returns None for anything else (HTML error pages, plain text, JSON that is not an object).
    """
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays, e.g. 64 KiB of "["
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    if FORM_CONTENT_TYPE in content_type.lower():
        try:
            fields = parse_qsl(body.decode("utf-8"), strict_parsing=True)
        except (ValueError, UnicodeDecodeError):
            return None
        return dict(fields)
    return None


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """RFC 9110 section 10.2.3: delay-seconds or an HTTP-date; unreadable, past or absurd values are None."""
    if value is None:
        return None
    text = value.strip()
    seconds = _decimal_seconds(text)
    if seconds is not None:
        delay = timedelta(seconds=seconds)
        return delay if delay <= MAX_RETRY_AFTER else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    delay = when - now
    return delay if timedelta(0) < delay <= MAX_RETRY_AFTER else None


def parse_expires_in(value: object) -> int | None:
    """``expires_in`` as providers really send it: an int, or a numeric string; anything else is unknown."""
    seconds: int | None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        seconds = _decimal_seconds(value.strip())
    else:
        return None
    return seconds if seconds is not None and 0 < seconds <= MAX_EXPIRES_IN else None


def _decimal_seconds(text: str) -> int | None:
    """ASCII digits only (``str.isdigit`` accepts "²", which ``int`` rejects), and few enough to fit."""
    if text.isascii() and text.isdigit() and len(text) <= 12:
        return int(text)
    return None


def non_empty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None
