"""PKCE (RFC 7636) and the other random values of the authorization-code flow, without I/O.

Every browser flow uses S256: the verifier stays on the server, only its SHA-256 travels through the
browser, so a code intercepted on the way back (a malicious app on the redirect, a log, a Referer) cannot be
redeemed without it (RFC 9700 section 2.1.1 makes PKCE the default for confidential clients too).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

#: RFC 7636 section 4.1: 43-128 characters of the unreserved set.
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def new_verifier() -> str:
    """64 random bytes as base64url: 86 characters, 512 bits (section 4.1 asks for at least 256)."""
    return secrets.token_urlsafe(64)


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding (section 4.2)."""
    if not _VERIFIER.fullmatch(verifier):
        raise ValueError("a PKCE verifier is 43-128 characters of A-Z a-z 0-9 - . _ ~")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_secret() -> str:
    """A single-use random value for a ``state``, a connect link or a browser cookie: 256 bits."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    """What is stored of a bearer value (link secret, state, browser cookie): its SHA-256, hex. The value
    itself never reaches the database, so a database dump opens no flow."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
