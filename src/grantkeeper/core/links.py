"""Signed, expiring reconnect links, so a user told "reconnect now" by email can act without logging in.

A token binds one connection id to an expiry with HMAC-SHA256 (RFC 2104), so a link cannot be moved to
another connection, extended or forged. The token carries only a version byte, the expiry and the MAC; the
connection id travels in the URL path and is covered by the MAC. Pure: the caller passes the key and ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from datetime import UTC, datetime
from urllib.parse import quote

TOKEN_VERSION = 1
_LABEL = b"grantkeeper/reconnect-link"
_HKDF_SALT = b"grantkeeper link key salt v1"
_HKDF_INFO = b"grantkeeper reconnect link key v1"
_EXPIRY = struct.Struct(">BQ")  # version byte, expiry in Unix seconds


def derive_link_key(encryption_key_material: bytes) -> bytes:
    """A 32-byte link key derived from the encryption key by HKDF-SHA256 (RFC 5869) under a fixed label.

    Derivation keeps the two uses apart: a link key that leaks (or is used as an oracle by anyone who can
    request links) says nothing about the key that encrypts refresh tokens at rest.
    """
    if not encryption_key_material:
        raise ValueError("encryption key material must not be empty")
    prk = hmac.new(_HKDF_SALT, encryption_key_material, hashlib.sha256).digest()
    return hmac.new(prk, _HKDF_INFO + b"\x01", hashlib.sha256).digest()


def sign_reconnect(connection_id: str, expires_at: datetime, key: bytes) -> str:
    """A base64url token, valid for ``connection_id`` until ``expires_at`` (whole seconds, rounded down)."""
    head = _EXPIRY.pack(TOKEN_VERSION, _unix_seconds(expires_at))
    return _encode(head + _mac(key, connection_id, head))


def verify_reconnect(token: str, connection_id: str, now: datetime, key: bytes) -> bool:
    """True only for an untampered, unexpired token issued for this connection; never raises on any token.

    The whole token is recomputed and compared in constant time, so non-canonical encodings of a valid token
    (base64 padding bits, added characters) fail too.
    """
    head = _decode_head(token)
    if head is None:
        return False
    version, expires_seconds = _EXPIRY.unpack(head)
    if version != TOKEN_VERSION:
        return False
    expected = _encode(head + _mac(key, connection_id, head))
    is_authentic = hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "surrogatepass"))
    return is_authentic and _unix_seconds(now) < expires_seconds


def token_expiry(token: str) -> datetime | None:
    """When a token stops working, read from its head; meaningful only once ``verify_reconnect`` passed."""
    head = _decode_head(token)
    if head is None:
        return None
    _version, expires_seconds = _EXPIRY.unpack(head)
    return datetime.fromtimestamp(expires_seconds, UTC)


def reconnect_url(public_url: str, connection_id: str, token: str) -> str:
    """``{public_url}/connect/{connection_id}?token=...``, the browser side of reconnecting (DESIGN 4)."""
    base = public_url.rstrip("/")
    return f"{base}/connect/{quote(connection_id, safe='')}?token={quote(token, safe='')}"


def _mac(key: bytes, connection_id: str, head: bytes) -> bytes:
    # Length-prefixing the id keeps the MAC input unambiguous whatever characters the id holds.
    cid = connection_id.encode("utf-8", "surrogatepass")
    message = _LABEL + struct.pack(">I", len(cid)) + cid + head
    return hmac.new(key, message, hashlib.sha256).digest()


def _decode_head(token: str) -> bytes | None:
    if not isinstance(token, str) or not token.isascii() or len(token) > 256:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _EXPIRY.size + hashlib.sha256().digest_size:
        return None
    return raw[: _EXPIRY.size]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unix_seconds(instant: datetime) -> int:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instants must be timezone-aware")
    return max(0, int(instant.timestamp()))
