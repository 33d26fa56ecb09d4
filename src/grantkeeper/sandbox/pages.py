"""The authorization endpoint's responses: the consent page, the error page and the redirect back.

The consent page is the sandbox's stand-in for a provider's "allow this app?" screen: plain HTML a test (or a
person trying the demo) can read and submit. Every value from the request is escaped with ``html.escape``;
the headers keep it out of caches and frames (RFC 6749 section 10.13, clickjacking) and the redirect's
``Referrer-Policy`` keeps a code in its ``Location`` from leaking onwards.
"""

from __future__ import annotations

from html import escape
from typing import Final

from grantkeeper.sandbox.authorize import DEFAULT_USER, MAX_USER, OpenConsent, Redirect, Refusal
from grantkeeper.sandbox.behaviour import Canned, Headers, canned

_HTML: Final = b"text/html; charset=utf-8"
_PAGE_HEADERS: Final[Headers] = [
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]
_REDIRECT_HEADERS: Final[Headers] = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer")]
_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5}"
    "button{font-size:1em;padding:.4em 1.2em;margin-right:.5em}code{word-break:break-all}"
)


def _page(status: int, title: str, main: str) -> Canned:
    body = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{main}</main>\n</body>\n</html>\n"
    )
    return canned(status, body.encode("utf-8"), _HTML, list(_PAGE_HEADERS))


def consent_page(consent: OpenConsent, action: str) -> Canned:
    """The 200 page asking the user to allow or deny ``consent``'s request; the form posts to ``action``.

    Element ids for tests: ``scopes`` and ``extra-parameters`` (lists), ``user`` (the user name input),
    ``consent`` (the hidden consent id), ``allow`` and ``deny`` (the two submit buttons).
    """
    request = consent.request
    client = escape(request.client_id)
    scopes = "".join(f"<li><code>{escape(s)}</code></li>\n" for s in request.scopes)
    extras = "".join(
        f"<li><code>{escape(name)}</code> = <code>{escape(value)}</code></li>\n"
        for name, value in request.extra
    )
    details = f"<dt>redirect_uri</dt><dd><code>{escape(request.redirect_uri)}</code></dd>\n"
    if request.state is not None:
        details += f"<dt>state</dt><dd><code>{escape(request.state)}</code></dd>\n"
    user = escape(request.login_hint or DEFAULT_USER)
    main = (
        f'<h1 id="heading">{client} wants access to your Sandbox account</h1>\n'
        "<h2>Scopes requested</h2>\n"
        f'<ul id="scopes">\n{scopes}</ul>\n'
        + ("" if scopes else "<p>No scope requested.</p>\n")
        + "<h2>Extra parameters</h2>\n"
        f'<ul id="extra-parameters">\n{extras}</ul>\n'
        + ("" if extras else "<p>None.</p>\n")
        + f'<h2>Request</h2>\n<dl id="request">\n{details}</dl>\n'
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="consent" id="consent" value="{escape(consent.consent_id)}">\n'
        f'<p><label for="user">Signed in as</label>\n'
        f'<input type="text" id="user" name="user" value="{user}" maxlength="{MAX_USER}" required></p>\n'
        '<p><button type="submit" name="decision" value="allow" id="allow">Allow</button>\n'
        '<button type="submit" name="decision" value="deny" id="deny">Deny</button></p>\n'
        "</form>\n"
    )
    return _page(200, f"Sandbox: {request.client_id} wants access", main)


def error_page(refusal: Refusal, status: int = 400) -> Canned:
    """A page for the user when the client must not be told (or cannot be reached)."""
    main = (
        f'<h1 id="heading">Authorization request refused</h1>\n<p id="error">{escape(refusal.message)}</p>\n'
    )
    return _page(status, "Sandbox: authorization request refused", main)


def redirect(answer: Redirect) -> Canned:
    """A 302 back to the client; ``location`` is ASCII (redirect URIs are registered as printable ASCII)."""
    return canned(302, extra=[(b"location", answer.location.encode("ascii")), *_REDIRECT_HEADERS])
