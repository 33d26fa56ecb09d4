"""The sandbox provider's state: clients, grants, configured behaviours and statistics, in pure Python.

Tests configure a ``Sandbox`` from their own thread while uvicorn serves it from another, so every read and
write goes through one ``threading.Lock``; the token endpoint takes it once per request to stay fast.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from grantkeeper.sandbox.authorize import (
    AuthorizationBook,
    AuthorizationRequest,
    CodeProblem,
    CodeRefused,
    CodeRequest,
    OpenConsent,
    Redirect,
    Refusal,
    add_params,
    checked_redirect_uris,
    error_redirect,
    read_authorization,
    redirect_to,
)
from grantkeeper.sandbox.behaviour import TOKEN_ISSUING, UNKNOWN_CLIENT, Behaviour, Canned, json_response
from grantkeeper.sandbox.counters import Counters
from grantkeeper.sandbox.grants import Claims, GrantBook
from grantkeeper.sandbox.model import Client, GrantTokens, Issued, Rejection, SandboxStats

if TYPE_CHECKING:
    from grantkeeper.sandbox.app import SandboxApp


#: What the ASGI layer is told to answer: tokens, a behaviour to act out, or a ready response.
Answer = Issued | Behaviour | Canned
#: What the ASGI layer is told to answer an introspection request: claims to send as JSON, an outage
#: behaviour to act out, or a ready (error) response.
IntrospectionAnswer = Claims | Behaviour | Canned
#: The ``invalid_grant`` answer to a refused code exchange, by reason (rendered once, as ``CANNED`` is).
_CODE_REFUSALS: Final = {
    problem: json_response(400, {"error": "invalid_grant", "error_description": problem.value})
    for problem in CodeProblem
}
#: A code exchange by a client without redirect URIs, which no code can ever have been issued to.
_NO_CODE_GRANT: Final = json_response(
    400,
    {
        "error": "unauthorized_client",
        "error_description": "a client without redirect URIs cannot use the authorization_code grant",
    },
)


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


class Sandbox:
    """An OAuth 2.0 authorization server's refresh_token grant (RFC 6749 section 6), with scripted failures.

    Besides the token endpoint it answers token revocation (RFC 7009, ``revoke_token``) and token
    introspection (RFC 7662, ``introspection_request``), which tells a client whether a token would still
    work without using it. It also plays the authorization-code grant with PKCE (RFC 6749 section 4.1,
    RFC 7636): ``authorization_request`` opens a consent, ``consent_decision`` answers it with a code and
    ``code_request`` exchanges the code for a new grant, so a test can drive a whole "connect" flow.

    ``seed`` makes ``set_fractions`` draws reproducible; ``hang_seconds`` is how long ``Behaviour.HANG``
    keeps a request waiting before it answers 504. ``clock`` times rotation grace windows and ``wall_clock``
    stamps ``requests_by_second``; tests inject their own to drive time instead of sleeping.
    """

    def __init__(
        self,
        seed: int = 0,
        hang_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if hang_seconds < 0:
            raise ValueError("hang_seconds must be >= 0")
        self.hang_seconds = float(hang_seconds)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._latency = 0.0
        self._outage: Behaviour | None = None
        self._clients: dict[str, Client] = {}
        self._stats = Counters(wall_clock)
        self._book = GrantBook(seed, clock, self._stats)
        self._auth = AuthorizationBook(clock)
        self._issuer: str | None = None

    # --- configuration ---------------------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        client_secret: str,
        rotate_refresh_tokens: bool = True,
        rotation_grace_seconds: float = 0.0,
        *,
        redirect_uris: Sequence[str] = (),
        access_token_lifetime: int = 3600,
    ) -> None:
        """Register (or replace) a confidential client (RFC 6749 section 2.3.1).

        With ``rotation_grace_seconds`` > 0, a refresh token rotated away stays usable that long after its
        rotation, as at Okta (30 s by default), Xero (30 min) or Auth0 (configurable): a client whose response
        was lost retries with it and gets a normal rotation. The token that was current until then is the one
        the client lost, so it stops working. Each rotation opens a window for the token it replaced; a grace
        use opens none and does not restart one. Grace uses count in ``grace_uses`` (and ``refreshes_ok``);
        outside its window (or with 0) a rotated token is reuse, as before: the grant is revoked.

        ``redirect_uris`` are where the authorization endpoint may send the user back to: absolute http or
        https URLs without a fragment, matched by exact string comparison (RFC 9700 section 4.1.3). A client
        with none cannot use the authorization-code grant. ``access_token_lifetime`` is the lifetime of the
        grants its code exchanges create. Bad values raise ValueError and change nothing.
        """
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret must be non-empty")
        grace = _seconds("rotation_grace_seconds", rotation_grace_seconds)
        uris = checked_redirect_uris(redirect_uris)
        if isinstance(access_token_lifetime, bool) or not isinstance(access_token_lifetime, int):
            raise ValueError("access_token_lifetime must be an integer number of seconds")
        if access_token_lifetime < 0:
            raise ValueError("access_token_lifetime must be >= 0")
        client = Client(client_secret, rotate_refresh_tokens, grace, uris, access_token_lifetime)
        with self._lock:
            self._clients[client_id] = client

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
                issued.append(self._book.issue(client_id, access_token_lifetime, behaviour, scope))
        return issued

    def set_behaviour(self, grant_id: str, behaviour: Behaviour | None) -> None:
        """Make ``behaviour`` the grant's answer from now on; None restores normal refreshes."""
        value = None if behaviour is None else Behaviour(behaviour)
        with self._lock:
            self._book.get(grant_id).default = value

    def script(self, grant_id: str, behaviours: Iterable[Behaviour]) -> None:
        """Queue one-shot answers for the grant's next refresh requests (after any already queued)."""
        values = [Behaviour(b) for b in behaviours]
        with self._lock:
            self._book.get(grant_id).script.extend(values)

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
            self._book.fractions = cumulative

    def set_outage(self, behaviour: Behaviour | None) -> None:
        """Answer every token request with ``behaviour`` (say ``UNAVAILABLE``) until called with None.

        The outage answers first, before the form is checked or the client authenticated, as a gateway or
        load balancer in front of the provider would: any grant, any token, valid or not, any method (a
        POST's body is still read first, so keep-alive connections stay usable). ``latency`` still applies.
        Counted in ``requests``, ``requests_by_second`` and ``by_behaviour``, not ``by_grant`` (no grant is
        read). The introspection endpoint answers with the outage too (counted in ``introspections`` only);
        the revocation endpoint does not. Authorization-code exchanges get the outage too (counted nowhere,
        as they are kept out of the refresh fields); the authorization endpoint's pages do not.
        """
        value = None if behaviour is None else Behaviour(behaviour)
        if value in TOKEN_ISSUING:
            raise ValueError(f"an outage cannot issue tokens ({value}); pick an error behaviour")
        with self._lock:
            self._outage = value

    @property
    def outage(self) -> Behaviour | None:
        return self._outage

    def set_latency(self, seconds: float) -> None:
        """Make every token response wait ``seconds`` before it is sent, as a distant or slow provider does.

        The wait is on the event loop, without the lock, so requests overlap and ``max_in_flight`` shows how
        many a client keeps open at once. Code exchanges wait too (they are token responses); revocation,
        introspection and the authorization endpoint's answers are not delayed.
        """
        self._latency = _seconds("latency", seconds)

    @property
    def latency(self) -> float:
        return self._latency

    def set_issuer(self, issuer: str | None) -> None:
        """The issuer identifier sent as ``iss`` in every authorization response, codes and errors alike
        (RFC 9207 section 2); None models a server that does not send it. ``serve_sandbox`` sets the server's
        base URL unless one is set already."""
        with self._lock:
            self._issuer = issuer

    @property
    def issuer(self) -> str | None:
        return self._issuer

    def revoke(self, grant_id: str) -> None:
        """The user revoked access: every later refresh of the grant gets invalid_grant."""
        with self._lock:
            self._book.get(grant_id).revoked = True

    def current_refresh_token(self, grant_id: str) -> str:
        with self._lock:
            return self._book.get(grant_id).refresh

    def grant_of_refresh_token(self, refresh_token: str) -> str | None:
        """The id of the grant whose current refresh token this is (revoked or not); None for any other.

        A test hook: after a code exchange it names the grant the answer's refresh token belongs to, for
        ``describe``, ``revoke`` or ``set_behaviour``. A rotated-away token names no grant.
        """
        with self._lock:
            grant = self._book.by_refresh.get(refresh_token)
            return grant.grant_id if grant is not None and grant.refresh == refresh_token else None

    def describe(self, grant_id: str) -> dict[str, Any]:
        """The grant's state as JSON-ready values (the sandbox's tokens are fake, so they are included)."""
        with self._lock:
            g = self._book.get(grant_id)
            return {
                "grant_id": g.grant_id,
                "client_id": g.client_id,
                "refresh_token": g.refresh,
                "access_token": g.access,
                "revoked": g.revoked,
                "user": g.user,
                "behaviour": None if g.default is None else g.default.value,
                "script": [b.value for b in g.script],
            }

    def stats(self) -> SandboxStats:
        with self._lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.reset()

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

    def token_request(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        early: Rejection | None = None,
        late: Rejection | None = None,
    ) -> tuple[Answer, str | None]:
        """Answer one token endpoint request under a single lock acquisition; call ``request_done`` after.

        The ASGI layer passes what it read without state: ``early`` when the request could not be read
        (wrong method, bad form or credentials), ``late`` when it is no usable refresh request (grant type,
        missing token). In order: an outage answers everything; then ``early``; then client authentication
        (``invalid_client``); then ``late``; then the refresh itself. Returns the answer and the key to hand
        to ``request_done`` once it is sent.
        """
        with self._lock:
            self._stats.arrive()
            counted, answer, key = self._decide(client_id, client_secret, refresh_token, early, late)
            self._stats.by_behaviour[counted.value] += 1
            return answer, key

    def request_done(self, key: str | None) -> None:
        """The answer to a ``token_request`` has been sent (or given up); lock-free, for ``max_in_flight``."""
        self._stats.finish(key)

    def revoke_token(self, token: str, *, client_id: str | None = None) -> bool:
        """RFC 7009: revoke the grant of a refresh token (current or rotated) or a current access token; with
        ``client_id`` (the revocation endpoint's authenticated client) only a grant of that client."""
        with self._lock:
            return self._book.revoke_token(token, client_id)

    def introspection_request(
        self,
        client_id: str,
        client_secret: str,
        token: str,
        token_type_hint: str | None,
        early: Canned | None = None,
        late: Canned | None = None,
    ) -> IntrospectionAnswer:
        """Answer one introspection request (RFC 7662 section 2) under a single lock acquisition.

        In the token endpoint's order: an outage answers everything; then ``early`` (wrong method, bad form
        or credentials); then client authentication (``invalid_client``, section 2.1 requires it); then
        ``late`` (no token); then the claims (``GrantBook.introspect``). Counted in ``introspections`` and
        nowhere else; no grant changes, however the token stands.
        """
        with self._lock:
            self._stats.introspections += 1
            if self._outage is not None:
                return self._outage
            if early is not None:
                return early
            client = self._clients.get(client_id)
            if client is None or not hmac.compare_digest(client.secret.encode(), client_secret.encode()):
                return UNKNOWN_CLIENT
            if late is not None:
                return late
            return self._book.introspect(client, client_id, token, token_type_hint, self._wall_clock())

    def authorization_request(self, pairs: Sequence[tuple[str, str]]) -> OpenConsent | Refusal | Redirect:
        """Read an authorization request's query (RFC 6749 section 4.1.1); on success open a consent for it.

        The consent (``OpenConsent.consent_id``) is kept server-side, single use, for ``CONSENT_LIFETIME``
        seconds of the clock; showing its page counts in ``authorizations``. See ``read_authorization`` for
        what is refused with a page (``Refusal``) and what goes back as an error redirect.
        """
        with self._lock:
            answer = read_authorization(pairs, self._redirect_uris_of)
            if isinstance(answer, Redirect):
                return self._with_issuer(answer)
            if not isinstance(answer, AuthorizationRequest):
                return answer
            self._stats.authorizations += 1
            return self._auth.open_consent(answer)

    def consent_decision(self, consent_id: str, allow: bool, user: str) -> Refusal | Redirect:
        """The user answered a consent page: a code (counted in ``codes_issued``) or ``access_denied``.

        The consent is used up either way; an unknown, used or expired one gets a page, never a redirect.
        """
        with self._lock:
            request = self._auth.take_consent(consent_id)
            if isinstance(request, Refusal):
                return request
            if not allow:
                return self._with_issuer(
                    error_redirect(
                        request.redirect_uri, "access_denied", "the user denied access", request.state
                    )
                )
            code = self._auth.issue_code(request, user)
            self._stats.codes_issued += 1
        params = [("code", code)] if request.state is None else [("code", code), ("state", request.state)]
        return self._with_issuer(redirect_to(request.redirect_uri, params))

    def _with_issuer(self, redirect: Redirect) -> Redirect:
        return redirect if self._issuer is None else add_params(redirect, [("iss", self._issuer)])

    def code_request(self, request: CodeRequest) -> Answer:
        """Answer a token request with ``grant_type=authorization_code`` (RFC 6749 section 4.1.3).

        In the refresh's order: an outage answers everything; then ``request.early``; then client
        authentication (``invalid_client``); then ``unauthorized_client`` for a client without redirect URIs
        (RFC 6749 section 5.2); then ``request.late`` (a missing parameter); then the code
        (``AuthorizationBook.redeem``). A good code creates a grant as ``issue_grant`` does (the client's
        rotation settings apply to its refreshes); a refused one is ``invalid_grant``, counted in
        ``code_failures``, and a replayed one also revokes the grant its first use created (RFC 6749 section
        4.1.2). Kept out of the refresh statistics (see ``SandboxStats``); needs no ``request_done``.
        """
        with self._lock:
            if self._outage is not None:
                return self._outage
            if request.early is not None:
                return request.early
            client = self._clients.get(request.client_id)
            if client is None or not hmac.compare_digest(
                client.secret.encode(), request.client_secret.encode()
            ):
                return UNKNOWN_CLIENT
            if not client.redirect_uris:
                return _NO_CODE_GRANT
            if request.late is not None:
                return request.late
            code = self._auth.redeem(
                request.client_id, request.code, request.redirect_uri, request.code_verifier
            )
            if isinstance(code, CodeRefused):
                self._stats.code_failures += 1
                if code.revoke is not None:
                    self._book.get(code.revoke).revoked = True
                return _CODE_REFUSALS[code.problem]
            tokens = self._book.issue(request.client_id, client.lifetime, None, code.scope, code.user)
            code.grant_id = tokens.grant_id
            self._stats.code_exchanges += 1
        return Issued(
            Behaviour.OK, tokens.access_token, tokens.expires_in, tokens.refresh_token, code.scope, code.user
        )

    # --- internals (lock held) -------------------------------------------------------------------------

    def _redirect_uris_of(self, client_id: str) -> frozenset[str] | None:
        client = self._clients.get(client_id)
        return None if client is None else client.redirect_uris

    def _decide(
        self,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        early: Rejection | None,
        late: Rejection | None,
    ) -> tuple[Behaviour, Answer, str | None]:
        """The behaviour to count, the answer, and the client key (set once the client authenticated)."""
        if self._outage is not None:
            return self._outage, self._outage, None
        if early is not None:
            return early[0], early[1], None
        client = self._clients.get(client_id)
        if client is None or not hmac.compare_digest(client.secret.encode(), client_secret.encode()):
            return Behaviour.INVALID_CLIENT, UNKNOWN_CLIENT, None
        self._stats.enter_client(client_id)
        if late is not None:
            return late[0], late[1], client_id
        answer = self._book.refresh(client, client_id, refresh_token)
        if isinstance(answer, Issued):
            self._stats.ok += 1
            return answer.behaviour, answer, client_id
        return answer, answer, client_id
