"""The sandbox's values: what it hands out (grants, stats, token answers) and its per-grant records."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from grantkeeper.sandbox.behaviour import Behaviour


@dataclass(frozen=True, slots=True)
class GrantTokens:
    """The tokens of a freshly issued grant, as an authorization code exchange would return them."""

    grant_id: str
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True, slots=True)
class SandboxStats:
    """What the token endpoint has answered since the sandbox was made or its stats were reset.

    ``requests`` counts every token endpoint request; ``refreshes_ok`` the 200s carrying an access token;
    ``by_behaviour`` the answers by behaviour value (normal answers too: ``ok``, ``invalid_grant``,
    ``invalid_client`` ...); ``by_grant`` the refresh requests whose refresh token named a known grant.
    """

    requests: int = 0
    refreshes_ok: int = 0
    reuse_detected: int = 0
    by_behaviour: dict[str, int] = field(default_factory=dict)
    by_grant: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Issued:
    """A 200 token response to render; ``refresh_token`` is None when none is sent (no rotation)."""

    behaviour: Behaviour
    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str | None = field(repr=False)
    scope: str | None


class Grant:
    """One grant's mutable record; only touched with the Sandbox's lock held."""

    __slots__ = (
        "access",
        "client_id",
        "default",
        "grant_id",
        "lifetime",
        "refresh",
        "revoked",
        "scope",
        "script",
    )

    def __init__(self, grant_id: str, client_id: str, lifetime: int, scope: str | None) -> None:
        self.grant_id = grant_id
        self.client_id = client_id
        self.lifetime = lifetime
        self.scope = scope
        self.access = ""
        self.refresh = ""
        self.revoked = False
        self.default: Behaviour | None = None
        self.script: deque[Behaviour] = deque()


@dataclass(slots=True)
class Client:
    """A registered confidential client (RFC 6749 section 2.3.1)."""

    secret: str = field(repr=False)
    rotate: bool
