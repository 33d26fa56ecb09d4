"""Which token endpoint URLs grantkeeper will send a refresh token and a client secret to.

RFC 6749 section 3.2 requires TLS at the token endpoint (the request carries credentials, section 1.6) and
forbids a fragment in its URI. DESIGN section 4 allows one exception: plain http to this machine, for the
sandbox provider and local development, where nothing crosses a network.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import SplitResult, urlsplit

_LOOPBACK_NAMES = frozenset({"localhost"})


def validate_token_url(url: str, *, field: str = "token URL") -> None:
    """Raise ``ValueError`` saying what is wrong unless ``url`` is https (or http to a loopback host).

    The same rule holds for the other provider endpoints that receive our credentials (revocation);
    ``field`` names the URL in the message. The answer for a URL never changes, and the token client asks
    before every request, so it is remembered (a few hundred providers' URLs at most).
    """
    problem = _token_url_problem(url, field)
    if problem is not None:
        raise ValueError(problem)


@functools.lru_cache(maxsize=1024)
def _token_url_problem(url: str, field: str) -> str | None:
    try:
        _validate_token_url(url, field)
    except ValueError as exc:
        return str(exc)
    return None


def _validate_token_url(url: str, field: str) -> None:
    if not url or any(char.isspace() or not char.isprintable() for char in url):
        # urlsplit silently drops tabs and newlines (bpo-43882), so what it parsed is not what was configured.
        raise ValueError(f"{field} must be non-empty and contain no whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError as exc:
        raise ValueError(f"{field} is not a valid URL: {exc}") from None
    _check_parts(parts, field, _display(parts))


def validate_destination_url(url: str, *, field: str = "webhook URL") -> None:
    """The same rule for where notifications are posted, with error messages that never show the path.

    A Slack or Discord incoming-webhook URL is a bearer secret in its path, so only scheme and host are shown.
    """
    if not url or any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError(f"{field} must be non-empty and contain no whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise ValueError(f"{field} is not a valid URL") from None
    _check_parts(parts, field, url_hint(url, keep_path=False))


def url_hint(url: str, *, keep_path: bool) -> str:
    """What listings show of a destination URL: scheme and host, and the path only when it is not a secret."""
    parts = urlsplit(url)
    if keep_path:
        return f"{parts.scheme}://{parts.netloc}{parts.path}"[:300]
    return f"{parts.scheme}://{parts.netloc}/…"[:300]


def _check_parts(parts: SplitResult, field: str, shown: str) -> None:
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{field} must not contain credentials (user:password@)")
    if scheme not in ("https", "http") or not host:
        raise ValueError(f"{field} must be an absolute https URL with a host, got {shown!r}")
    if parts.fragment:
        raise ValueError(f"{field} must not have a #fragment (RFC 6749 section 3.2), got {shown!r}")
    if scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"{field} must use https; plain http is allowed only to a loopback host "
            f"(127.0.0.0/8, ::1, localhost), got {shown!r}"
        )


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; names that merely resolve to loopback do not count."""
    name = host.lower().strip("[]")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _display(parts: SplitResult) -> str:
    """The URL for an error message, without its query string (which could hold an API key)."""
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path
