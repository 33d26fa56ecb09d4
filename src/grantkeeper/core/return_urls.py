"""Where a finished connect flow may send the browser: only to URLs the operator allowed.

``return_to`` arrives from the application and, through links, from the browser; redirecting to whatever
it says would make ``/oauth/callback`` an open redirect (RFC 9700 section 4.11), and a phishing page would
look as if grantkeeper had sent the user there. ``GRANTKEEPER_RETURN_URL_ALLOWLIST`` lists allowed prefixes
(``https://app.example.com`` or ``https://app.example.com/settings/``): a URL is allowed when its scheme, host
and port equal an entry's and its path lies under the entry's path (whole segments). URLs with user info, a
backslash, control characters or a scheme other than http(s) are never allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_RETURN_URL = 2048


@dataclass(frozen=True)
class _Entry:
    scheme: str
    host: str
    port: int
    path: str  # "" or a prefix ending in "/"


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port


def _split(url: str) -> SplitResult | None:
    """Parsed parts of an absolute http(s) URL without user info; None for anything else."""
    if not url or len(url) > MAX_RETURN_URL or "\\" in url:
        return None
    if any(not char.isprintable() or char.isspace() for char in url):
        return None  # urlsplit drops tabs and newlines silently (bpo-43882)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return None
    return parts


class ReturnUrlAllowList:
    """The operator's allowed return URLs; empty allows none (the flow then ends on its own page)."""

    def __init__(self, entries: tuple[str, ...] = ()) -> None:
        parsed: list[_Entry] = []
        for entry in entries:
            parts = _split(entry)
            if parts is None or parts.query or parts.fragment:
                raise ValueError(
                    f"return URL allow list entry {entry[:80]!r} is not an http(s) URL prefix "
                    "(scheme://host[:port][/path], no user info, query or fragment)"
                )
            path = parts.path if parts.path.endswith("/") else (parts.path + "/" if parts.path else "")
            parsed.append(_Entry(*_origin(parts), path))
        self._entries = tuple(parsed)

    @classmethod
    def parse(cls, value: str) -> ReturnUrlAllowList:
        """From ``GRANTKEEPER_RETURN_URL_ALLOWLIST``: comma-separated entries, blanks ignored."""
        return cls(tuple(entry.strip() for entry in value.split(",") if entry.strip()))

    def __bool__(self) -> bool:
        return bool(self._entries)

    def allows(self, url: str) -> bool:
        parts = _split(url)
        if parts is None:
            return False
        origin = _origin(parts)
        path = parts.path or "/"
        for entry in self._entries:
            if (entry.scheme, entry.host, entry.port) != origin:
                continue
            if not entry.path or path == entry.path.rstrip("/") or path.startswith(entry.path):
                return True
        return False
