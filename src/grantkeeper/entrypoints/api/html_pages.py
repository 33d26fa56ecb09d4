"""The HTML a user's browser gets from ``/connect/...`` and ``/oauth/callback``: one template, strict headers.

Those URLs are opened by people, from an email or an app, not by API clients; whatever goes wrong there (a
refused link, a server without its encryption keys, a database that does not answer, a mangled query string)
must end on a page they can read, never on a JSON problem document. The pages are cached by nobody, framed
by nobody, and send no Referer (the callback's URL holds a code).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import jinja2
from fastapi.responses import HTMLResponse

PAGE_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_CALLBACK_PATH = "/oauth/callback"
_CONNECT_PREFIX = "/connect/"


def is_page_path(path: str) -> bool:
    """Whether a request path is one of the pages a browser opens (so its errors answer in HTML)."""
    return path == _CALLBACK_PATH or path.startswith(_CONNECT_PREFIX)


def page(status_code: int, headers: Mapping[str, str] | None = None, **values: object) -> HTMLResponse:
    """Render the page (``kind``, ``ok``, ``title``, ``message``; optional ``workflows``, ``back_url``)."""
    html = _templates().get_template("page.html").render({"back_url": None, "workflows": ()} | values)
    return HTMLResponse(html, status_code=status_code, headers={**(headers or {}), **PAGE_HEADERS})


def error_page(
    status_code: int, kind: str, title: str, detail: str, headers: Mapping[str, str]
) -> HTMLResponse:
    """A problem the API would answer in JSON, as a page: its title, and its detail as a sentence (problem
    details are written for people and never hold a secret, see ``errors._translate``)."""
    message = detail[:1].upper() + detail[1:]
    if not message.endswith("."):
        message += "."
    if status_code >= 500:
        message += " Nothing was changed; try the link again in a few minutes."
    return page(status_code, headers, kind=kind, ok=False, title=title, message=message)


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("grantkeeper", "templates/connect"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
