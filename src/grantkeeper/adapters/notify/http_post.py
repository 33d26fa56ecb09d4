"""One JSON POST to a receiver (Slack, Discord, an app's webhook endpoint), classified as a DeliveryResult.

Shared by the HTTP channels so they agree on what a failure means: 2xx is delivered; 408, 429, 5xx, network
faults and timeouts may heal by themselves and are retried; any other answer (a 4xx, or a 3xx, since
redirects are not followed) will not change on a resend of the same body and is permanent (RFC 9110 section
15). Slack's 403 ``action_prohibited``, 404 ``no_service`` and 410 ``channel_is_archived`` land there too.

The destination URL of a chat webhook is itself the credential, so error strings and log lines carry a status
code or an exception class name only: never the URL, the body we sent or anything the receiver said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp

from grantkeeper.core.oauth_wire import parse_retry_after
from grantkeeper.ports import DeliveryResult

DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=5)
DEFAULT_TOTAL_TIMEOUT = timedelta(seconds=15)
_RETRYABLE_STATUSES = frozenset({408, 429})


class HttpPoster:
    """POSTs bytes with one pooled ``aiohttp`` session per sender, made on first use in the running loop."""

    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout: timedelta = DEFAULT_CONNECT_TIMEOUT,
        total_timeout: timedelta = DEFAULT_TOTAL_TIMEOUT,
    ) -> None:
        if connect_timeout <= timedelta(0) or total_timeout <= timedelta(0):
            raise ValueError("connect_timeout and total_timeout must be positive")
        self._user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout.total_seconds(),
            connect=connect_timeout.total_seconds(),
            sock_connect=connect_timeout.total_seconds(),
        )
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        """Close the pooled connections; a later ``post`` opens a new session."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        """POST ``body`` to ``url``; never raises for anything the network or the receiver does."""
        if not is_postable_url(url):
            return DeliveryResult(False, "unsupported destination URL", is_permanent=True)
        try:
            async with self._ensure_session().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                result = classify_status(response.status)
                if result.is_delivered or result.is_permanent:
                    return result
                delay = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                return replace(result, retry_after=delay)
        except TimeoutError:  # before ClientError: aiohttp's timeout errors are both
            return DeliveryResult(False, "timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return DeliveryResult(False, type(exc).__name__)

    def _ensure_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed:
            if self._loop is not loop:
                raise RuntimeError("an HTTP channel sender is bound to another event loop; make one per loop")
            return self._session
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every tenant: share no cookies
            raise_for_status=False,
        )
        self._loop = loop
        return self._session


def classify_status(status: int) -> DeliveryResult:
    """2xx delivered; 408, 429 and 5xx retryable; everything else (3xx, other 4xx) permanent."""
    if 200 <= status < 300:
        return DeliveryResult(True)
    is_retryable = status in _RETRYABLE_STATUSES or 500 <= status < 600
    return DeliveryResult(False, f"HTTP {status}", is_permanent=not is_retryable)


def is_postable_url(url: str) -> bool:
    """An absolute http(s) URL with a host; anything else is refused before a connection is made."""
    if not url or any(char.isspace() or not char.isprintable() for char in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
