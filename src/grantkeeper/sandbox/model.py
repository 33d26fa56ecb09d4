"""The sandbox's values: what it hands out (grants, stats, token answers) and its per-grant records."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from grantkeeper.sandbox.behaviour import Behaviour, Canned

#: An answer the ASGI layer decided without the state (bad form, bad credentials ...) and how to count it.
Rejection = tuple[Behaviour, Canned]


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

    The fields after ``by_grant`` came later and keep their defaults so older positional uses still work:
    ``grace_uses`` counts refreshes with a rotated token inside its client's grace window (also counted in
    ``refreshes_ok``, never in ``reuse_detected``); ``requests_by_second`` maps a wall-clock epoch second to
    the token requests that arrived in it, and ``max_in_flight`` is the most token requests being handled at
    once (from the sandbox taking the request up until its answer is sent), so benchmarks can check a
    client's rate and concurrency limits from the provider's side. ``max_in_flight_by_client`` is the same
    per authenticated client.

    ``introspections`` counts every request to the introspection endpoint (RFC 7662) the sandbox answered,
    whatever the answer (errors and outage answers too). Introspection is kept out of every other field:
    ``requests``, ``by_behaviour`` and the rest stay about the token endpoint alone.

    The authorization-code grant (RFC 6749 section 4.1) has fields of its own: ``authorizations`` counts the
    consent pages shown, ``codes_issued`` the codes sent back after "allow", ``code_exchanges`` the codes
    exchanged for tokens and ``code_failures`` the ``invalid_grant`` answers to code exchanges (replays
    included). Token requests with ``grant_type=authorization_code`` are kept out of the refresh fields:
    ``requests``, ``refreshes_ok``, ``by_behaviour``, ``by_grant``, ``requests_by_second`` and the in-flight
    maxima stay about refreshes (and the odd request that is no code exchange), so refresh benchmarks read
    the same with a connect flow running beside them.
    """

    requests: int = 0
    refreshes_ok: int = 0
    reuse_detected: int = 0
    by_behaviour: dict[str, int] = field(default_factory=dict)
    by_grant: dict[str, int] = field(default_factory=dict)
    grace_uses: int = 0
    requests_by_second: dict[int, int] = field(default_factory=dict)
    max_in_flight: int = 0
    max_in_flight_by_client: dict[str, int] = field(default_factory=dict)
    introspections: int = 0
    authorizations: int = 0
    codes_issued: int = 0
    code_exchanges: int = 0
    code_failures: int = 0


@dataclass(frozen=True, slots=True)
class Issued:
    """A 200 token response to render; ``refresh_token`` is None when none is sent (no rotation)."""

    behaviour: Behaviour
    access_token: str = field(repr=False)
    expires_in: int
    refresh_token: str | None = field(repr=False)
    scope: str | None
    #: The consenting user, sent as ``account_id`` (Dropbox's name for it) by code exchanges only.
    account_id: str | None = None


class Grant:
    """One grant's mutable record; only touched with the Sandbox's lock held."""

    __slots__ = (
        "access",
        "access_issued",
        "client_id",
        "default",
        "grant_id",
        "lifetime",
        "refresh",
        "replaced",
        "revoked",
        "scope",
        "script",
        "user",
    )

    def __init__(
        self, grant_id: str, client_id: str, lifetime: int, scope: str | None, user: str | None = None
    ) -> None:
        self.grant_id = grant_id
        self.client_id = client_id
        self.lifetime = lifetime
        self.scope = scope
        # Who consented, for grants made by an authorization code; None for grants issued directly.
        self.user = user
        self.access = ""
        # The clock reading when ``access`` was issued, for introspection to tell whether it has expired.
        self.access_issued = 0.0
        self.refresh = ""
        # Refresh tokens rotated away while their client has a grace window, with the rotation's clock
        # reading; None until the first one (most grants never need the dict).
        self.replaced: dict[str, float] | None = None
        self.revoked = False
        self.default: Behaviour | None = None
        self.script: deque[Behaviour] = deque()


@dataclass(slots=True)
class Client:
    """A registered confidential client (RFC 6749 section 2.3.1)."""

    secret: str = field(repr=False)
    rotate: bool
    #: How long a rotated-away refresh token stays usable (Okta 30 s, Xero 30 min); 0: reuse at once.
    grace: float = 0.0
    #: Where the authorization endpoint may send the user back to, matched exactly (RFC 9700 section 4.1.3).
    redirect_uris: frozenset[str] = frozenset()
    #: The access token lifetime of grants made by exchanging an authorization code.
    lifetime: int = 3600
