"""The sandbox's grants and the rules of the refresh_token grant: rotation, reuse detection, grace windows.

Introspection (RFC 7662) reads the same rules without applying them: a token is active exactly when the token
endpoint would still accept it, and asking never changes a grant.

Kept apart from ``Sandbox`` (which owns the lock and the configuration API) so the rules read in one place.
Nothing here is thread-safe: the ``Sandbox`` calls it with its lock held.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable

from grantkeeper.sandbox.behaviour import TOKEN_ISSUING, Behaviour
from grantkeeper.sandbox.counters import Counters
from grantkeeper.sandbox.model import Client, Grant, GrantTokens, Issued

#: An introspection answer's JSON members (RFC 7662 section 2.2).
Claims = dict[str, object]


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(24)


class GrantBook:
    """Every grant, indexed by id and by token, and how a refresh request with a token is answered."""

    def __init__(self, seed: int, clock: Callable[[], float], stats: Counters) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible test draws, not secrets
        self.clock = clock
        self.stats = stats
        self.grants: dict[str, Grant] = {}
        self.by_refresh: dict[str, Grant] = {}  # current and rotated refresh tokens
        self.by_access: dict[str, Grant] = {}  # current access tokens only
        self.fractions: list[tuple[float, Behaviour]] = []  # cumulative upper bounds
        self._next_id = 0

    def issue(
        self,
        client_id: str,
        lifetime: int,
        behaviour: Behaviour | None,
        scope: str | None,
        user: str | None = None,
    ) -> GrantTokens:
        self._next_id += 1
        grant = Grant(f"grant-{self._next_id}", client_id, lifetime, scope, user)
        grant.default = behaviour
        grant.access, grant.refresh = new_token("sbx-at-"), new_token("sbx-rt-")
        grant.access_issued = self.clock()
        self.grants[grant.grant_id] = grant
        self.by_access[grant.access] = grant
        self.by_refresh[grant.refresh] = grant
        return GrantTokens(grant.grant_id, grant.access, grant.refresh, lifetime)

    def get(self, grant_id: str) -> Grant:
        grant = self.grants.get(grant_id)
        if grant is None:
            raise ValueError(f"unknown grant_id {grant_id!r}")
        return grant

    def refresh(self, client: Client, client_id: str, refresh_token: str) -> Issued | Behaviour:
        """Answer a refresh from an authenticated client: tokens to send, or a behaviour to act out.

        A configured behaviour (script, then default, then fractions) answers before the token is checked,
        as a rate limiter in front of a real server would. Otherwise a current token rotates; a rotated one
        inside its grace window rotates too; any other rotated one is reuse (RFC 9700 section 4.14): the
        whole grant is revoked.
        """
        grant = self.by_refresh.get(refresh_token)
        if grant is None:
            return Behaviour.INVALID_GRANT
        self.stats.by_grant[grant.grant_id] += 1
        behaviour: Behaviour | None = None
        if grant.script:
            behaviour = grant.script.popleft()
        elif grant.default is not None:
            behaviour = grant.default
        elif self.fractions:
            draw = self.rng.random()
            behaviour = next((b for bound, b in self.fractions if draw < bound), None)
        if behaviour in TOKEN_ISSUING and behaviour is not Behaviour.OK:
            return Issued(behaviour, new_token("sbx-at-"), grant.lifetime, None, grant.scope)
        if behaviour is not None and behaviour is not Behaviour.OK:
            return behaviour
        if grant.client_id != client_id:
            return Behaviour.INVALID_GRANT
        if refresh_token != grant.refresh:
            return self._rotated(client, grant, refresh_token)
        if grant.revoked:
            return Behaviour.INVALID_GRANT
        return self._rotate(client, grant, remember=True)

    def revoke_token(self, token: str, client_id: str | None = None) -> bool:
        grant = self.by_refresh.get(token) or self.by_access.get(token)
        if grant is None or (client_id is not None and grant.client_id != client_id):
            return False
        grant.revoked = True
        return True

    def introspect(
        self, client: Client, client_id: str, token: str, hint: str | None, wall_now: float
    ) -> Claims:
        """RFC 7662 section 2.2: what introspecting ``token`` tells authenticated ``client_id``; no changes.

        A refresh token is active exactly when ``refresh`` would take it from this client now, were no
        behaviour configured: its grant's current token, or a rotated one ``in_grace``, of a grant not
        revoked. Configured behaviours (script, default, fractions) are answers of the token endpoint, not
        the token's state: they play no part and scripts are not consumed. Refresh tokens never expire here
        and grants have no subject, so there is no ``exp`` and no ``sub``. An access token is active while it
        is its grant's current one, unexpired, of a grant not revoked; ``exp`` is then its expiry (epoch
        seconds, from ``wall_now``). Anything else, a token of another client included (section 4), is
        ``{"active": false}`` and nothing more. ``hint`` only orders the search (section 2.1).
        """
        lookups = (self._refresh_claims, self._access_claims)
        if hint == "access_token":
            lookups = (self._access_claims, self._refresh_claims)
        for lookup in lookups:
            claims = lookup(client, client_id, token, wall_now)
            if claims is not None:
                return claims
        return {"active": False}

    def in_grace(self, client: Client, grant: Grant, refresh_token: str) -> bool:
        """Whether ``refresh_token``, rotated away from ``grant``, is inside its grace window now.

        The one rule both a refresh (``_rotated``) and introspection apply; revocation is checked apart.
        """
        rotated_at = None if grant.replaced is None else grant.replaced.get(refresh_token)
        return rotated_at is not None and self.clock() - rotated_at < client.grace

    def _refresh_claims(self, client: Client, client_id: str, token: str, wall_now: float) -> Claims | None:
        """Introspection of a refresh token; None when ``token`` is none this book ever issued."""
        grant = self.by_refresh.get(token)
        if grant is None:
            return None
        if grant.client_id != client_id or grant.revoked:
            return {"active": False}
        if token != grant.refresh and not self.in_grace(client, grant, token):
            return {"active": False}
        return {"active": True, "token_type": "refresh_token", "client_id": client_id}

    def _access_claims(self, client: Client, client_id: str, token: str, wall_now: float) -> Claims | None:
        """Introspection of a current access token; None when ``token`` is no grant's current one."""
        grant = self.by_access.get(token)
        if grant is None:
            return None
        remaining = grant.lifetime - (self.clock() - grant.access_issued)
        if grant.client_id != client_id or grant.revoked or remaining <= 0:
            return {"active": False}
        exp = int(wall_now + remaining)
        return {"active": True, "token_type": "access_token", "client_id": client_id, "exp": exp}

    def _rotated(self, client: Client, grant: Grant, refresh_token: str) -> Issued | Behaviour:
        """A refresh with a token rotated away: a grace use inside its window, reuse otherwise."""
        if self.in_grace(client, grant, refresh_token):
            if grant.revoked:
                return Behaviour.INVALID_GRANT
            self.stats.grace_uses += 1
            # The current token is the one the client lost: not remembered, so from now on it is reuse.
            return self._rotate(client, grant, remember=False)
        self.stats.reuse += 1
        grant.revoked = True
        return Behaviour.INVALID_GRANT

    def _rotate(self, client: Client, grant: Grant, remember: bool) -> Issued:
        now = self.clock()
        self.by_access.pop(grant.access, None)
        grant.access = new_token("sbx-at-")
        grant.access_issued = now
        self.by_access[grant.access] = grant
        new_refresh: str | None = None
        if client.rotate:
            old = grant.refresh
            new_refresh = grant.refresh = new_token("sbx-rt-")
            self.by_refresh[new_refresh] = grant
            if remember and client.grace > 0:
                self._remember(grant, old, client.grace, now)
        return Issued(Behaviour.OK, grant.access, grant.lifetime, new_refresh, grant.scope)

    def _remember(self, grant: Grant, token: str, grace: float, now: float) -> None:
        """Open ``token``'s grace window; windows already over are dropped (their tokens are plain reuse)."""
        replaced = grant.replaced
        if replaced is None:
            grant.replaced = {token: now}
            return
        for expired in [t for t, at in replaced.items() if now - at >= grace]:
            del replaced[expired]
        replaced[token] = now
