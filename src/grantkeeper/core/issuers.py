"""The authorization server's issuer identifier in the callback (RFC 9207): the defence against mix-up.

An app that connects to several providers sends each user to one of them, and the callback says only
``code`` and ``state``. In a mix-up attack (RFC 9700 section 4.4) a malicious or compromised provider gets
the user's browser to come back with a code from another, honest provider, and the app redeems it at the
attacker's token endpoint, handing the code over. RFC 9207 closes this: a server that supports it adds its
issuer identifier as ``iss`` to every authorization response, and the client compares it with the issuer of
the provider the request was sent to, by simple string comparison (section 2.4), before it does anything
with the code.

Where an operator names a provider's issuer, a callback must carry exactly that ``iss``; a missing one is
refused too, since a server that sends it always sends it and an attacker would simply leave it out. Where
no issuer is named, ``iss`` is not checked (the provider may not send one; most did not before 2022).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from grantkeeper.core.urls import validate_token_url


def validate_issuer(issuer: str) -> None:
    """Raise ``ValueError`` unless ``issuer`` can be an issuer identifier (RFC 8414 section 2): an https URL
    (plain http only to loopback, as for every provider URL here) with no query and no fragment."""
    validate_token_url(issuer, field="issuer")
    if urlsplit(issuer).query:
        raise ValueError("issuer must not have a ?query (RFC 8414 section 2)")


def issuer_problem(expected: str | None, received: str | None) -> str | None:
    """Why a callback's ``iss`` is not acceptable for a provider with issuer ``expected``, or None when it is.

    Compared exactly, as RFC 9207 section 2.4 says: no case folding, no trailing-slash forgiveness, since the
    identifier is what the server publishes and an attacker's server can be one character away from it."""
    if expected is None:
        return None
    if received is None:
        return "missing"
    if received != expected:
        return "mismatch"
    return None
