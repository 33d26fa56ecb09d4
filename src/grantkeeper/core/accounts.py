"""Which provider account a token response belongs to, so a reconnect cannot swap one account for another.

A user with two accounts at a provider (work and personal mail, two GitHub logins) who picks the wrong one on
the consent page would otherwise reconnect the connection to the other account: every workflow on it would
then read and write someone else's data, silently. Plain OAuth 2.0 has no standard field for the account, so
the operator names where the provider puts it in the token response, as a dotted path:

- ``account_id`` (Dropbox), ``authed_user.id`` (Slack), ``owner.user.id`` (Notion), ``user_id``;
- ``id_token.sub`` for OpenID Connect providers (Google, Microsoft, Okta with the ``openid`` scope): the ID
  token's claims are read without checking its signature, which OIDC Core section 3.1.3.7 allows for an ID
  token received straight from the token endpoint over TLS, as here.

Pure: no I/O; ``account_in`` never raises for anything a provider sends.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from grantkeeper.core.errors import InvalidInputError

ID_TOKEN: Final = "id_token"  # noqa: S105 - a field name, not a secret
_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_SEGMENTS: Final = 5
#: An account id longer than this is not an id; the column holds 255 characters.
MAX_ACCOUNT_ID: Final = 255
#: An ID token is a few hundred bytes to a few KB; a longer one is not decoded.
_MAX_ID_TOKEN: Final = 16_384


def parse_account_field(text: str) -> str:
    """Check an operator's ``account_field``: at most five dotted names of letters, digits, ``_``, ``-``."""
    segments = text.split(".")
    if len(segments) > _MAX_SEGMENTS or not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise InvalidInputError(
            "account_field must be a dotted path of names (letters, digits, _ or -), at most five, "
            "e.g. account_id, authed_user.id or id_token.sub"
        )
    if segments[0] == ID_TOKEN and len(segments) == 1:
        raise InvalidInputError("account_field id_token needs the claim to read, e.g. id_token.sub")
    return text


def account_in(body: Mapping[str, Any], field: str) -> str | None:
    """The account named at ``field`` in a token response, as a string; None when it is not there, empty,
    not a string or number, too long, or (for ``id_token.*``) the ID token is not a readable JWT."""
    segments = field.split(".")
    value: Any = body
    if segments[0] == ID_TOKEN:
        value = _id_token_claims(body.get(ID_TOKEN))
        segments = segments[1:]
    for segment in segments:
        if not isinstance(value, Mapping):
            return None
        value = value.get(segment)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    if not text or len(text) > MAX_ACCOUNT_ID or not text.isprintable():
        return None
    return text


def _id_token_claims(token: object) -> Mapping[str, Any] | None:
    """The payload of a compact JWS (``header.payload.signature``), unverified (see the module's note)."""
    if not isinstance(token, str) or len(token) > _MAX_ID_TOKEN:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(decoded)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, Mapping) else None
