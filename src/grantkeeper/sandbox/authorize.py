"""The authorization-code grant's rules (RFC 6749 section 4.1, PKCE per RFC 7636): requests, consents, codes.

The sandbox plays the whole front channel so a test can drive a real "connect" flow: an authorization request
is read and checked here, a consent is kept server-side until the user decides, and the code it yields is
redeemed at the token endpoint exactly once. PKCE with ``S256`` is required for every request, as OAuth 2.1
and RFC 9700 section 2.1.1 recommend; ``plain`` is refused.

Kept apart from ``Sandbox`` (which owns the lock) and from the ASGI layer (which renders the answers) so the
rules read in one place. The functions need no state; ``AuthorizationBook`` is not thread-safe: the
``Sandbox`` calls it with its lock held.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from grantkeeper.sandbox.behaviour import Canned

#: How long a consent page stays answerable (seconds of the sandbox's clock).
CONSENT_LIFETIME: Final = 600.0
#: How long an authorization code can be redeemed; RFC 6749 section 4.1.2 recommends at most 10 minutes.
CODE_LIFETIME: Final = 60.0
#: How long a code is remembered after it was issued, so a replay can still revoke what its first use made;
#: afterwards a replay is answered as an unknown code (invalid_grant, nothing revoked).
CODE_MEMORY: Final = 600.0
#: The name the consent page proposes when the request carries no ``login_hint``.
DEFAULT_USER: Final = "sandbox-user"
#: The longest user name the consent form accepts.
MAX_USER: Final = 200
#: RFC 7636 section 4.1/4.2: verifier and challenge alike are 43 to 128 unreserved characters.
_PKCE_TEXT: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
#: The parameters an authorization request is read for; anything else is listed on the page and ignored.
KNOWN_PARAMETERS: Final = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "login_hint",
    }
)


# --- redirect URIs ----------------------------------------------------------------------------------------


def redirect_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can.

    RFC 6749 section 3.1.2: absolute, no fragment. Only http and https, and printable ASCII only, so every
    redirect the sandbox builds is a valid ``Location`` header as it stands.
    """
    if not isinstance(uri, str) or not uri:
        return "must be a non-empty string"
    if any(not "!" <= char <= "~" for char in uri):
        return "must be printable ASCII without spaces"
    if "#" in uri:
        return "must not have a fragment (RFC 6749 section 3.1.2)"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http or https URL"
    return None


def checked_redirect_uris(uris: Sequence[str]) -> frozenset[str]:
    """The redirect URIs to register, or ValueError naming the first unusable one (nothing is registered)."""
    if isinstance(uris, str):
        raise ValueError("redirect_uris must be a list of URLs, not one string")
    for uri in uris:
        problem = redirect_uri_problem(uri)
        if problem is not None:
            raise ValueError(f"redirect URI {uri!r} {problem}")
    return frozenset(uris)


# --- PKCE -------------------------------------------------------------------------------------------------


def s256_challenge(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6, in constant time once the verifier is well formed."""
    if _PKCE_TEXT.fullmatch(verifier) is None:
        return False
    return hmac.compare_digest(s256_challenge(verifier).encode("ascii"), challenge.encode("ascii"))


# --- answers ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request (RFC 6749 section 4.1.1), waiting for the user's decision."""

    client_id: str
    redirect_uri: str
    scope: str | None
    state: str | None
    code_challenge: str
    login_hint: str | None
    #: Parameters the sandbox does not read (``access_type``, ``prompt`` ...), in the order they came.
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def scopes(self) -> list[str]:
        return [token for token in self.scope.split(" ") if token] if self.scope else []


@dataclass(frozen=True, slots=True)
class OpenConsent:
    """Show the consent page for ``request``; the form posts ``consent_id`` back."""

    consent_id: str
    request: AuthorizationRequest


@dataclass(frozen=True, slots=True)
class Refusal:
    """Tell the user, not the client: a 400 page, never a redirect (RFC 6749 section 4.1.2.1).

    Used whenever the redirect URI cannot be trusted (unknown client, unregistered redirect URI) or the
    request is already over (consent unknown, used or expired).
    """

    message: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the user agent back to the client: a 302 to ``location``."""

    location: str


def redirect_to(redirect_uri: str, params: Sequence[tuple[str, str]]) -> Redirect:
    """``redirect_uri`` with ``params`` added to its query (RFC 6749 section 4.1.2 keeps an existing one)."""
    parts = urlsplit(redirect_uri)
    added = urlencode(params)
    query = f"{parts.query}&{added}" if parts.query else added
    return Redirect(urlunsplit(parts._replace(query=query)))


def add_params(redirect: Redirect, params: Sequence[tuple[str, str]]) -> Redirect:
    """``redirect`` with ``params`` added to its query (its location's own query is kept)."""
    return redirect_to(redirect.location, params)


def error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> Redirect:
    """RFC 6749 section 4.1.2.1: the error, a description and the request's ``state`` when it had one."""
    params = [("error", error), ("error_description", description)]
    if state is not None:
        params.append(("state", state))
    return redirect_to(redirect_uri, params)


def read_authorization(
    pairs: Sequence[tuple[str, str]], redirect_uris_of: Callable[[str], frozenset[str] | None]
) -> AuthorizationRequest | Refusal | Redirect:
    """Check an authorization request's query parameters (RFC 6749 section 4.1.1, RFC 7636 section 4.3).

    ``redirect_uris_of`` gives a client's registered redirect URIs, None for an unknown client. The client
    and its redirect URI are checked first and refused with a page: until both are known good, a redirect
    could deliver the answer to an attacker (RFC 6749 section 4.1.2.1; RFC 9700 section 4.1.3 asks for exact
    string matching). Any later problem goes back to the client as an error redirect. Parameters must not
    repeat (RFC 6749 section 3.1); unknown ones are kept in ``extra`` and otherwise ignored.
    """
    values: dict[str, list[str]] = {}
    extra: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in KNOWN_PARAMETERS:
            values.setdefault(name, []).append(value)
        else:
            extra.append((name, value))
    client_ids = values.get("client_id", [])
    if len(client_ids) != 1 or not client_ids[0]:
        return Refusal("The request must name the application (client_id) exactly once.")
    client_id = client_ids[0]
    registered = redirect_uris_of(client_id)
    if registered is None:
        return Refusal("The application (client_id) is not registered at this server.")
    redirect_uris = values.get("redirect_uri", [])
    if len(redirect_uris) != 1 or not redirect_uris[0]:
        return Refusal("The request must give a redirect_uri exactly once.")
    redirect_uri = redirect_uris[0]
    if redirect_uri not in registered:
        return Refusal("The redirect_uri is not registered for this application.")
    states = values.get("state", [])
    state = states[0] if len(states) == 1 else None
    problem = _problem(values)
    if problem is not None:
        return error_redirect(redirect_uri, problem[0], problem[1], state)
    return AuthorizationRequest(
        client_id=client_id,
        redirect_uri=redirect_uri,
        scope=values.get("scope", [""])[0] or None,
        state=state,
        code_challenge=values["code_challenge"][0],
        login_hint=values.get("login_hint", [""])[0] or None,
        extra=tuple(extra),
    )


def _problem(values: dict[str, list[str]]) -> tuple[str, str] | None:
    """The error code and description for a request from a known client to a registered URI, if any."""
    repeated = sorted(name for name, given in values.items() if len(given) > 1)
    if repeated:
        return "invalid_request", "parameters sent more than once: " + ", ".join(repeated)
    response_type = values.get("response_type", [""])[0]
    if not response_type:
        return "invalid_request", "response_type is required"
    if response_type != "code":
        return "unsupported_response_type", "only response_type=code is supported"
    challenge = values.get("code_challenge", [""])[0]
    if not challenge:
        return "invalid_request", "code_challenge is required: this server requires PKCE (RFC 7636)"
    if _PKCE_TEXT.fullmatch(challenge) is None:
        return "invalid_request", "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~"
    if values.get("code_challenge_method", ["plain"])[0] != "S256":
        return "invalid_request", "code_challenge_method must be S256 (plain is not accepted)"
    return None


# --- the token endpoint's side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """A token request with ``grant_type=authorization_code``, as the ASGI layer read it without state.

    ``early`` is the answer when the client's credentials could not be read, ``late`` when a parameter is
    missing; they answer in that order around client authentication, as ``TokenRequest``'s do.
    """

    client_id: str
    client_secret: str = field(repr=False)
    code: str = field(repr=False)
    redirect_uri: str
    code_verifier: str = field(repr=False)
    early: Canned | None = None
    late: Canned | None = None


class CodeProblem(StrEnum):
    """Why a code was not exchanged: each is an ``invalid_grant`` whose description is the value.

    Descriptions name the problem, never the code or the verifier.
    """

    UNKNOWN = "unknown authorization code"
    USED = "the authorization code was already used"
    EXPIRED = "the authorization code has expired"
    OTHER_CLIENT = "the authorization code was issued to another client"
    REDIRECT_URI = "redirect_uri differs from the one in the authorization request"
    VERIFIER = "code_verifier does not match the code_challenge"


@dataclass(frozen=True, slots=True)
class CodeRefused:
    """An exchange refused with ``problem``; ``revoke`` names the grant a replayed code had created."""

    problem: CodeProblem
    revoke: str | None = None


class _Stamped(Protocol):
    @property
    def at(self) -> float: ...


_Entry = TypeVar("_Entry", bound=_Stamped)


@dataclass(frozen=True, slots=True)
class _Consent:
    request: AuthorizationRequest
    at: float


@dataclass(slots=True)
class IssuedCode:
    """An authorization code's binding (RFC 6749 section 4.1.2) and what became of it."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str | None
    user: str
    at: float
    used: bool = False
    #: The grant its exchange created, to revoke if the code comes again.
    grant_id: str | None = None


def _prune(entries: dict[str, _Entry], before: float) -> None:
    """Drop entries stamped before ``before``; entries are kept in stamp order, so only the front is read."""
    while entries:
        key = next(iter(entries))
        if entries[key].at >= before:
            return
        del entries[key]


class AuthorizationBook:
    """Pending consents and issued codes, each single use and short-lived on the sandbox's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.consents: dict[str, _Consent] = {}
        self.codes: dict[str, IssuedCode] = {}

    def open_consent(self, request: AuthorizationRequest) -> OpenConsent:
        now = self.clock()
        _prune(self.consents, now - CONSENT_LIFETIME)
        consent_id = secrets.token_urlsafe(24)
        self.consents[consent_id] = _Consent(request, now)
        return OpenConsent(consent_id, request)

    def take_consent(self, consent_id: str) -> AuthorizationRequest | Refusal:
        """The request a consent form answers, which is then gone: a second answer finds nothing."""
        consent = self.consents.pop(consent_id, None)
        if consent is None:
            return Refusal(
                "This consent request is unknown or was already answered. Start again from the app."
            )
        if self.clock() - consent.at >= CONSENT_LIFETIME:
            return Refusal("This consent request has expired. Start again from the application.")
        return consent.request

    def issue_code(self, request: AuthorizationRequest, user: str) -> str:
        now = self.clock()
        _prune(self.codes, now - CODE_MEMORY)
        code = secrets.token_urlsafe(32)
        self.codes[code] = IssuedCode(
            request.client_id, request.redirect_uri, request.code_challenge, request.scope, user, now
        )
        return code

    def redeem(self, client_id: str, code: str, redirect_uri: str, verifier: str) -> IssuedCode | CodeRefused:
        """Check a code exchange (RFC 6749 section 4.1.3, RFC 7636 section 4.6); the caller records the grant.

        The first attempt with a code uses it up whatever its outcome, so a verifier cannot be guessed at and
        a code leaked to another client is spent. A later attempt is a replay: refused, and the grant the
        first use created (if it made one) is handed back for revocation, once.
        """
        issued = self.codes.get(code)
        if issued is None:
            return CodeRefused(CodeProblem.UNKNOWN)
        if issued.used:
            revoke, issued.grant_id = issued.grant_id, None
            return CodeRefused(CodeProblem.USED, revoke)
        issued.used = True
        if self.clock() - issued.at >= CODE_LIFETIME:
            return CodeRefused(CodeProblem.EXPIRED)
        if issued.client_id != client_id:
            return CodeRefused(CodeProblem.OTHER_CLIENT)
        if issued.redirect_uri != redirect_uri:
            return CodeRefused(CodeProblem.REDIRECT_URI)
        if not verifier_matches(verifier, issued.code_challenge):
            return CodeRefused(CodeProblem.VERIFIER)
        return issued
