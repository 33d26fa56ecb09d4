"""The sandbox provider's state: clients, grants, configured behaviours and statistics, in pure Python.

Tests configure a ``Sandbox`` from their own thread while uvicorn serves it from another, so every read and
write goes through one ``threading.Lock``; the token endpoint takes it once per request to stay fast.
"""

from __future__ import annotations

import hmac
import random
import secrets
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from grantkeeper.sandbox.behaviour import TOKEN_ISSUING, Behaviour
from grantkeeper.sandbox.model import Client, Grant, GrantTokens, Issued, SandboxStats

if TYPE_CHECKING:
    from grantkeeper.sandbox.app import SandboxApp


def _token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


class Sandbox:
    """An OAuth 2.0 authorization server's refresh_token grant (RFC 6749 section 6), with scripted failures.

    ``seed`` makes ``set_fractions`` draws reproducible; ``hang_seconds`` is how long ``Behaviour.HANG``
    keeps a request waiting before it answers 504.
    """

    def __init__(self, seed: int = 0, hang_seconds: float = 30.0) -> None:
        if hang_seconds < 0:
            raise ValueError("hang_seconds must be >= 0")
        self.hang_seconds = float(hang_seconds)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)  # noqa: S311 - reproducible test draws, not secrets
        self._clients: dict[str, Client] = {}
        self._grants: dict[str, Grant] = {}
        self._by_refresh: dict[str, Grant] = {}  # current and rotated refresh tokens
        self._by_access: dict[str, Grant] = {}  # current access tokens only
        self._fractions: list[tuple[float, Behaviour]] = []  # cumulative upper bounds
        self._next_id = 0
        self._reset_counters()

    # --- configuration ---------------------------------------------------------------------------------

    def add_client(self, client_id: str, client_secret: str, rotate_refresh_tokens: bool = True) -> None:
        """Register (or replace) a confidential client (RFC 6749 section 2.3.1)."""
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret must be non-empty")
        with self._lock:
            self._clients[client_id] = Client(client_secret, rotate_refresh_tokens)

    def issue_grant(
        self,
        client_id: str,
        access_token_lifetime: int = 3600,
        behaviour: Behaviour | None = None,
        scope: str | None = None,
    ) -> GrantTokens:
        """Create a grant as if the user had just consented, with its first access and refresh token."""
        return self.issue_grants(client_id, 1, access_token_lifetime, behaviour=behaviour, scope=scope)[0]

    def issue_grants(
        self,
        client_id: str,
        count: int,
        access_token_lifetime: int = 3600,
        behaviour: Behaviour | None = None,
        scope: str | None = None,
    ) -> list[GrantTokens]:
        """Create ``count`` grants under one lock acquisition, for benchmarks that need thousands."""
        if count < 0:
            raise ValueError("count must be >= 0")
        if access_token_lifetime < 0:
            raise ValueError("access_token_lifetime must be >= 0")
        behaviour = None if behaviour is None else Behaviour(behaviour)
        issued: list[GrantTokens] = []
        with self._lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown client_id {client_id!r}")
            for _ in range(count):
                self._next_id += 1
                grant = Grant(f"grant-{self._next_id}", client_id, access_token_lifetime, scope)
                grant.default = behaviour
                grant.access, grant.refresh = _token("sbx-at-"), _token("sbx-rt-")
                self._grants[grant.grant_id] = grant
                self._by_access[grant.access] = grant
                self._by_refresh[grant.refresh] = grant
                issued.append(GrantTokens(grant.grant_id, grant.access, grant.refresh, access_token_lifetime))
        return issued

    def set_behaviour(self, grant_id: str, behaviour: Behaviour | None) -> None:
        """Make ``behaviour`` the grant's answer from now on; None restores normal refreshes."""
        value = None if behaviour is None else Behaviour(behaviour)
        with self._lock:
            self._grant(grant_id).default = value

    def script(self, grant_id: str, behaviours: Iterable[Behaviour]) -> None:
        """Queue one-shot answers for the grant's next refresh requests (after any already queued)."""
        values = [Behaviour(b) for b in behaviours]
        with self._lock:
            self._grant(grant_id).script.extend(values)

    def set_fractions(self, fractions: Mapping[Behaviour, float]) -> None:
        """Answer refreshes of unconfigured grants with each behaviour at its probability; {} clears."""
        cumulative: list[tuple[float, Behaviour]] = []
        total = 0.0
        for behaviour, fraction in fractions.items():
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise ValueError(f"fraction for {behaviour!s} must be a number in [0, 1]")
            total += fraction
            cumulative.append((total, Behaviour(behaviour)))
        if total > 1 + 1e-9:
            raise ValueError(f"fractions add up to {total:g}, more than 1")
        with self._lock:
            self._fractions = cumulative

    def revoke(self, grant_id: str) -> None:
        """The user revoked access: every later refresh of the grant gets invalid_grant."""
        with self._lock:
            self._grant(grant_id).revoked = True

    def current_refresh_token(self, grant_id: str) -> str:
        with self._lock:
            return self._grant(grant_id).refresh

    def describe(self, grant_id: str) -> dict[str, Any]:
        """The grant's state as JSON-ready values (the sandbox's tokens are fake, so they are included)."""
        with self._lock:
            g = self._grant(grant_id)
            return {
                "grant_id": g.grant_id,
                "client_id": g.client_id,
                "refresh_token": g.refresh,
                "access_token": g.access,
                "revoked": g.revoked,
                "behaviour": None if g.default is None else g.default.value,
                "script": [b.value for b in g.script],
            }

    def stats(self) -> SandboxStats:
        with self._lock:
            return SandboxStats(
                self._requests, self._ok, self._reuse, dict(self._by_behaviour), dict(self._by_grant)
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._reset_counters()

    def asgi_app(self) -> SandboxApp:
        """A new ASGI application serving this sandbox (see ``grantkeeper.sandbox.app``)."""
        from grantkeeper.sandbox.app import SandboxApp  # the app module imports this one

        return SandboxApp(self)

    # --- used by the ASGI app --------------------------------------------------------------------------

    def authenticate(self, client_id: str, client_secret: str) -> bool:
        """Check client credentials in constant time (RFC 6749 section 2.3.1)."""
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            return False
        return hmac.compare_digest(client.secret.encode(), client_secret.encode())

    def reject(self, answer: Behaviour) -> None:
        """Count a token request answered before it reached a grant (bad client, bad form)."""
        with self._lock:
            self._requests += 1
            self._by_behaviour[answer.value] += 1

    def refresh(self, client_id: str, refresh_token: str) -> Issued | Behaviour:
        """Answer one refresh request from an authenticated client: tokens to send, or a behaviour to act out.

        A configured behaviour (script, then default, then fractions) answers before the token is checked,
        as a rate limiter or an outage in front of a real server would. Otherwise a current token rotates; a
        rotated one is reuse (RFC 9700 section 4.14): the whole grant is revoked.
        """
        with self._lock:
            self._requests += 1
            grant = self._by_refresh.get(refresh_token)
            answer: Issued | Behaviour = Behaviour.INVALID_GRANT
            behaviour: Behaviour | None = None
            if grant is not None:
                self._by_grant[grant.grant_id] += 1
                if grant.script:
                    behaviour = grant.script.popleft()
                elif grant.default is not None:
                    behaviour = grant.default
                elif self._fractions:
                    draw = self._rng.random()
                    behaviour = next((b for bound, b in self._fractions if draw < bound), None)
                if behaviour in TOKEN_ISSUING and behaviour is not Behaviour.OK:
                    answer = Issued(behaviour, _token("sbx-at-"), grant.lifetime, None, grant.scope)
                elif behaviour is not None and behaviour is not Behaviour.OK:
                    answer = behaviour
                elif grant.client_id != client_id:
                    answer = Behaviour.INVALID_GRANT
                elif refresh_token != grant.refresh:
                    self._reuse += 1
                    grant.revoked = True
                elif not grant.revoked:
                    answer = self._rotate(grant)
            if isinstance(answer, Issued):
                self._ok += 1
                self._by_behaviour[answer.behaviour.value] += 1
            else:
                self._by_behaviour[answer.value] += 1
            return answer

    def revoke_token(self, token: str) -> bool:
        """RFC 7009: revoke the grant of a refresh token (current or rotated) or a current access token."""
        with self._lock:
            grant = self._by_refresh.get(token) or self._by_access.get(token)
            if grant is not None:
                grant.revoked = True
            return grant is not None

    # --- internals (lock held) -------------------------------------------------------------------------

    def _rotate(self, grant: Grant) -> Issued:
        self._by_access.pop(grant.access, None)
        grant.access = _token("sbx-at-")
        self._by_access[grant.access] = grant
        new_refresh: str | None = None
        if self._clients[grant.client_id].rotate:
            new_refresh = grant.refresh = _token("sbx-rt-")
            self._by_refresh[new_refresh] = grant
        return Issued(Behaviour.OK, grant.access, grant.lifetime, new_refresh, grant.scope)

    def _grant(self, grant_id: str) -> Grant:
        grant = self._grants.get(grant_id)
        if grant is None:
            raise ValueError(f"unknown grant_id {grant_id!r}")
        return grant

    def _reset_counters(self) -> None:
        self._requests = 0
        self._ok = 0
        self._reuse = 0
        self._by_behaviour: Counter[str] = Counter()
        self._by_grant: Counter[str] = Counter()
