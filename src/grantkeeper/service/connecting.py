"""Connecting and reconnecting in a browser: connect links, the trip to the provider, and the callback.

The flow (ADR 13), for a new connection or to reconnect a broken one:

1. The application asks for a link (``new_session_link``, ``reconnect_link``); an email carries a signed
   reconnect link instead (``core.links``), which becomes a session on its first click. Links expire, and a
   session connects once.
2. ``begin`` checks the link and sends the browser to the provider's authorization endpoint with a fresh
   ``state`` (single use, ten minutes, bound to this browser by a cookie) and a PKCE S256 challenge.
3. ``finish`` (``/oauth/callback``) takes the state, refuses anything that does not match, redeems the code
   with the verifier, and stores the tokens: a reconnect resets both counters, sets ``connected``, resumes
   the paused workflows and says so (``connection.recovered``); a new session creates the connection.

Every refusal is a value (``Refusal``) that the web layer shows as a page; none of them changes anything but
the state it used up. No link secret, state, code, verifier or token is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlencode, urlsplit, urlunsplit

from grantkeeper.core.errors import InvalidInputError
from grantkeeper.core.issuers import issuer_problem
from grantkeeper.core.links import reconnect_url, sign_reconnect, token_expiry, verify_reconnect
from grantkeeper.core.machine import reconnect
from grantkeeper.core.model import OutcomeClass
from grantkeeper.core.pkce import digest, new_secret, new_verifier, s256_challenge
from grantkeeper.core.policy import Policy
from grantkeeper.core.return_urls import ReturnUrlAllowList
from grantkeeper.ports import (
    AccountMismatchError,
    CallbackCheck,
    Clock,
    CodeExchanger,
    ConnectCompletion,
    ConnectionStore,
    ConnectSession,
    NewAuthorizationRequest,
    NewConnection,
    NewConnectSession,
    UnknownConnectionError,
    UnknownProviderError,
)
from grantkeeper.service import admin

log = logging.getLogger("grantkeeper.connect")

CALLBACK_PATH = "/oauth/callback"
#: How long a link from the API works unless the caller asks otherwise (and at most how long it may ask).
DEFAULT_LINK_TTL = timedelta(hours=1)
MAX_LINK_TTL = timedelta(days=7)
#: From the redirect to the provider until the callback: consent takes a minute, not an hour.
AUTHORIZATION_TTL = timedelta(minutes=10)


class RefusalKind(StrEnum):
    LINK_INVALID = "link_invalid"
    LINK_EXPIRED = "link_expired"
    LINK_USED = "link_used"
    RETURN_URL_NOT_ALLOWED = "return_url_not_allowed"
    NOT_CONFIGURED = "not_configured"
    STATE_MISSING = "state_missing"
    STATE_UNKNOWN = "state_unknown"
    STATE_USED = "state_used"
    STATE_EXPIRED = "state_expired"
    OTHER_BROWSER = "other_browser"
    PROVIDER_ERROR = "provider_error"
    EXCHANGE_FAILED = "exchange_failed"
    NO_REFRESH_TOKEN = "no_refresh_token"  # noqa: S105 - a reason, not a secret
    CONNECTION_GONE = "connection_gone"
    OTHER_ACCOUNT = "other_account"
    ACCOUNT_UNKNOWN = "account_unknown"
    WRONG_ISSUER = "wrong_issuer"


@dataclass(frozen=True)
class Refusal:
    """Why a step stopped, in words for the user; nothing was changed."""

    kind: RefusalKind
    status: int
    title: str
    message: str
    provider: str | None = None


@dataclass(frozen=True)
class ConnectLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Redirect:
    """Where ``begin`` sends the browser, and the browser cookie to set (None: keep the one it sent)."""

    location: str
    browser_cookie: str | None


@dataclass(frozen=True)
class Connected:
    """A finished flow: what the success page says, or where the browser goes instead."""

    provider: str
    connection_id: str
    is_new: bool
    resumed_workflows: tuple[str, ...]
    return_to: str | None  # allow-listed, with ``connection_id`` and ``result`` added


_CALLBACK_REFUSALS = {
    CallbackCheck.UNKNOWN: (RefusalKind.STATE_UNKNOWN, "This sign-in is not one we started"),
    CallbackCheck.USED: (RefusalKind.STATE_USED, "This sign-in was already completed"),
    CallbackCheck.EXPIRED: (RefusalKind.STATE_EXPIRED, "This sign-in took too long"),
    CallbackCheck.OTHER_BROWSER: (RefusalKind.OTHER_BROWSER, "This sign-in was started in another browser"),
}
_START_AGAIN = "Nothing was changed. Open the connect link again to start over."


class ConnectFlow:
    """The browser flow's logic; the store and the provider are ports, the web layer only renders."""

    def __init__(
        self,
        store: ConnectionStore,
        exchanger: CodeExchanger,
        clock: Clock,
        policy: Policy,
        *,
        public_url: str,
        link_key: bytes | None,
        allow_list: ReturnUrlAllowList,
    ) -> None:
        self._store = store
        self._exchanger = exchanger
        self._clock = clock
        self._policy = policy
        self._public_url = public_url.rstrip("/")
        self._link_key = link_key
        self.allow_list = allow_list

    @property
    def redirect_uri(self) -> str:
        """What the operator registers with each provider: ``{GRANTKEEPER_PUBLIC_URL}/oauth/callback``."""
        return self._public_url + CALLBACK_PATH

    # --- links (the application, through the API) -------------------------------------------------------

    def new_session_link(
        self,
        tenant_id: str,
        provider: str,
        user_id: str,
        *,
        email: str | None = None,
        return_to: str | None = None,
        ttl: timedelta = DEFAULT_LINK_TTL,
    ) -> ConnectLink:
        """A link that creates a connection for ``user_id`` once the user consents at ``provider``."""
        return self._session_link(
            NewConnectSession(
                tenant_id, "", self._expiry(ttl), provider=provider, user_id=user_id, email=email,
                return_to=self._checked_return_to(return_to),
            )
        )  # fmt: skip

    def reconnect_link(
        self,
        tenant_id: str,
        connection_id: str,
        *,
        return_to: str | None = None,
        ttl: timedelta = DEFAULT_LINK_TTL,
    ) -> ConnectLink:
        """A link that reconnects an existing connection (it keeps its id); raises
        ``UnknownConnectionError`` for a connection the tenant does not have."""
        return self._session_link(
            NewConnectSession(
                tenant_id, "", self._expiry(ttl), connection_id=connection_id,
                return_to=self._checked_return_to(return_to),
            )
        )  # fmt: skip

    def _session_link(self, session: NewConnectSession) -> ConnectLink:
        self._check_configured(session)  # before anything is stored: a refused request leaves no row
        secret = new_secret()
        stored = self._store.create_connect_session(
            replace(session, secret_hash=digest("session:" + secret)), self._clock.now()
        )
        return ConnectLink(f"{self._public_url}/connect/session/{secret}", stored.expires_at)

    def signed_reconnect_link(
        self, connection_id: str, ttl: timedelta = DEFAULT_LINK_TTL
    ) -> ConnectLink | None:
        """The stateless kind the emails carry (None without a link key: no encryption key configured)."""
        if self._link_key is None:
            return None
        expires_at = self._expiry(ttl)
        token = sign_reconnect(connection_id, expires_at, self._link_key)
        return ConnectLink(reconnect_url(self._public_url, connection_id, token), expires_at)

    def _expiry(self, ttl: timedelta) -> datetime:
        if not timedelta(minutes=1) <= ttl <= MAX_LINK_TTL:
            raise InvalidInputError("a link lives from 1 minute to 7 days")
        return self._clock.now() + ttl

    def _checked_return_to(self, return_to: str | None) -> str | None:
        if return_to is not None and not self.allow_list.allows(return_to):
            raise InvalidInputError("return_to is not on the allow list (GRANTKEEPER_RETURN_URL_ALLOWLIST)")
        return return_to

    def _check_configured(self, session: NewConnectSession) -> None:
        """The provider (named, or the connection's) must exist for the tenant and have an authorize URL."""
        name = session.provider
        if session.connection_id is not None:
            record = self._store.get_connection(session.tenant_id, session.connection_id)
            if record is None:
                raise UnknownConnectionError([session.connection_id])
            name = record.provider
        provider = self._store.get_provider(session.tenant_id, name or "")
        if provider is None:
            raise UnknownProviderError(name or "")
        if not provider.authorize_url:
            raise InvalidInputError(
                f"provider {provider.name!r} has no authorize URL: set it to connect in a browser"
            )

    # --- the browser: /connect ----------------------------------------------------------------------------

    def begin_session(self, secret: str, browser_id: str | None, return_to: str | None) -> Redirect | Refusal:
        """``/connect/session/{secret}``: a link the API made."""
        if not secret or len(secret) > 200:
            return _link_invalid()
        session = self._store.connect_session(digest("session:" + secret))
        if session is None:
            return _link_invalid()
        return self._begin(session, browser_id, return_to)

    def begin_signed(
        self, connection_id: str, token: str, browser_id: str | None, return_to: str | None
    ) -> Redirect | Refusal:
        """``/connect/{connection_id}?token=...``: an email's signed link, made a session on first use."""
        now = self._clock.now()
        if self._link_key is None or not token or len(token) > 256:
            return _link_invalid()
        if not verify_reconnect(token, connection_id, now, self._link_key):
            # tampered, for another connection, or expired: the MAC cannot tell which, and need not
            return Refusal(
                RefusalKind.LINK_INVALID, 400, "This link does not work",
                "The link is expired or damaged. Ask for a new one (the next email has one too).",
            )  # fmt: skip
        tenant_id = self._store.tenant_of_connection(connection_id)
        if tenant_id is None:
            return _link_invalid()
        expires_at = token_expiry(token) or now + DEFAULT_LINK_TTL
        session = self._store.create_connect_session(
            NewConnectSession(tenant_id, digest("signed:" + token), expires_at, connection_id=connection_id),
            now,
        )
        return self._begin(session, browser_id, return_to)

    def _begin(
        self, session: ConnectSession, browser_id: str | None, return_to: str | None
    ) -> Redirect | Refusal:
        now = self._clock.now()
        provider = session.provider
        if session.completed_at is not None:
            return Refusal(
                RefusalKind.LINK_USED, 410, "This link was already used",
                f"Your {provider.name} account was connected with it. Ask for a new link to connect again.",
                provider.name,
            )  # fmt: skip
        if session.expires_at <= now:
            return Refusal(
                RefusalKind.LINK_EXPIRED, 410, "This link has expired",
                "Connect links work for a limited time. Ask for a new one.", provider.name,
            )  # fmt: skip
        if return_to is not None and not self.allow_list.allows(return_to):
            return Refusal(
                RefusalKind.RETURN_URL_NOT_ALLOWED, 400, "This return address is not allowed",
                "The link asks to send you to an address this service does not trust. Nothing was changed.",
                provider.name,
            )  # fmt: skip
        if not provider.authorize_url:
            return Refusal(
                RefusalKind.NOT_CONFIGURED, 409, f"{provider.name} is not set up for connecting here",
                "The operator has not configured its authorization endpoint.", provider.name,
            )  # fmt: skip
        new_cookie = None
        if not browser_id or len(browser_id) > 100:
            browser_id = new_cookie = new_secret()
        state, verifier = new_secret(), new_verifier()
        self._store.add_authorization_request(
            NewAuthorizationRequest(
                session_id=session.session_id,
                state_hash=digest(state),
                browser_hash=digest(browser_id),
                code_verifier=verifier,
                redirect_uri=self.redirect_uri,
                return_to=return_to or session.return_to,
                expires_at=now + AUTHORIZATION_TTL,
            ),
            now,
        )
        params = {
            "response_type": "code",
            "client_id": provider.client_id,
            "redirect_uri": self.redirect_uri,
            **({"scope": provider.scopes} if provider.scopes else {}),
            "state": state,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
            **(provider.authorize_params or {}),
        }
        log.info(
            "connect flow started for %s (%s)",
            session.connection_id or "a new connection",
            provider.name,
            extra={"action": "connect_started", "connection_id": session.connection_id},
        )
        return Redirect(_with_query(provider.authorize_url, params), new_cookie)

    # --- the browser: /oauth/callback ---------------------------------------------------------------------

    async def finish(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None,
        browser_id: str | None,
        iss: str | None = None,
    ) -> Connected | Refusal:
        """Check the state and the issuer, redeem the code, store the tokens; a refusal leaves the connection
        as it was.

        ``iss`` is the callback's issuer identifier (RFC 9207): where the provider names its issuer, it is
        checked before anything else is read from the answer, so a code sent back through another server's
        mix-up is never redeemed (``core.issuers``). The state is used up either way."""
        if not state or len(state) > 200:
            return Refusal(
                RefusalKind.STATE_MISSING, 400, "This sign-in cannot be completed",
                "The provider sent you back without the value that ties the answer to your request. "
                + _START_AGAIN,
            )  # fmt: skip
        browser_hash = digest(browser_id) if browser_id and len(browser_id) <= 100 else None
        taken = await asyncio.to_thread(
            self._store.take_authorization_request, digest(state), browser_hash, self._clock.now()
        )
        if taken.session is None or taken.code_verifier is None or taken.redirect_uri is None:
            kind, title = _CALLBACK_REFUSALS.get(taken.check, _CALLBACK_REFUSALS[CallbackCheck.UNKNOWN])
            return Refusal(kind, 400, title, _START_AGAIN)
        session, provider = taken.session, taken.session.provider
        wrong = issuer_problem(provider.issuer, iss)
        if wrong is not None:
            return _wrong_issuer(provider.name, session.connection_id, wrong)
        if error is not None or not code:
            name = provider.name
            declined = error == "access_denied"
            title = f"You declined access to {name}" if declined else f"{name} did not connect"
            said = "" if declined else f"{name} answered: {_short(error)}. "
            message = said + "Nothing was changed. You can open the connect link again to try once more."
            return Refusal(RefusalKind.PROVIDER_ERROR, 400, title, message, name)
        outcome = await self._exchanger.exchange_code(provider, code, taken.code_verifier, taken.redirect_uri)
        tokens = outcome.tokens
        if outcome.klass is not OutcomeClass.SUCCESS or tokens is None:
            code_name = outcome.error.code if outcome.error else f"HTTP {outcome.http_status}"
            log.warning(
                "connect flow: %s refused the authorization code (%s)",
                provider.name,
                code_name,
                extra={"action": "connect_exchange_failed", "connection_id": session.connection_id},
            )
            return Refusal(
                RefusalKind.EXCHANGE_FAILED, 502, f"{provider.name} did not accept the sign-in",
                f"{provider.name} refused to complete it ({_short(code_name)}). " + _START_AGAIN,
                provider.name,
            )  # fmt: skip
        if not tokens.refresh_token:
            return Refusal(
                RefusalKind.NO_REFRESH_TOKEN, 502, f"{provider.name} did not grant offline access",
                f"{provider.name} gave no refresh token, so the connection could not be kept alive. Nothing "
                "was changed; the operator may need to ask for offline access (e.g. access_type=offline).",
                provider.name,
            )  # fmt: skip
        if provider.account_field is not None and tokens.account_id is None:
            log.warning(
                "connect flow: %s's answer names no account at %s",
                provider.name,
                provider.account_field,
                extra={"action": "connect_account_unknown", "connection_id": session.connection_id},
            )
            return Refusal(
                RefusalKind.ACCOUNT_UNKNOWN, 502, f"{provider.name} did not say which account this is",
                "So the sign-in could not be checked against the connection's account, and nothing was "
                f"changed. The operator may need to ask {provider.name} for it (the openid scope, say) or "
                "correct the provider's account_field.",
                provider.name,
            )  # fmt: skip
        now = self._clock.now()
        completion = ConnectCompletion(session.session_id, tokens, now)
        if session.connection_id is not None:
            record = await asyncio.to_thread(
                self._store.get_connection, session.tenant_id, session.connection_id
            )
            if record is None:
                return _connection_gone(provider.name)
            if record.account_id is not None and tokens.account_id not in (None, record.account_id):
                return _other_account(provider.name, session.connection_id)
            transition = reconnect(record.state, tokens, self._policy, now)
            notices = admin.reconnect_notices(transition, record)
            completion = replace(completion, transition=transition, notifications=notices)
        else:
            row = NewConnection(
                provider=provider.name,
                user_id=session.user_id,
                refresh_token=tokens.refresh_token,
                access_token=tokens.access_token,
                expires_at=tokens.expires_at,
                email=session.email,
                account_id=tokens.account_id,
            )
            completion = replace(completion, new_connection=admin.scheduled(row, self._policy, now))
        try:
            result = await asyncio.to_thread(self._store.complete_connect, completion)
        except AccountMismatchError:  # another flow taught the connection its account a moment ago
            return _other_account(provider.name, session.connection_id)
        if result is None:
            return Refusal(
                RefusalKind.LINK_USED, 410, "This link was already used",
                f"Your {provider.name} account was connected with it already.", provider.name,
            )  # fmt: skip
        log.info(
            "%s %s (%s); %d workflow(s) resumed",
            "connected" if result.is_new else "reconnected",
            result.connection_id,
            provider.name,
            len(result.resumed_workflows),
            extra={"action": "connect_completed", "connection_id": result.connection_id},
        )
        return_to = taken.return_to
        if return_to is not None and self.allow_list.allows(return_to):
            return_to = _with_query(return_to, {"connection_id": result.connection_id, "result": "connected"})
        else:
            return_to = None
        return Connected(
            provider.name, result.connection_id, result.is_new, result.resumed_workflows, return_to
        )


def _link_invalid() -> Refusal:
    return Refusal(
        RefusalKind.LINK_INVALID, 404, "This link does not work",
        "It may have been mistyped or cut short. Ask for a new one.",
    )  # fmt: skip


def _other_account(provider: str, connection_id: str | None) -> Refusal:
    """The user signed in to another account than the one the connection belongs to (``core.accounts``)."""
    log.warning(
        "connect flow: %s signed in to another %s account; nothing stored",
        connection_id,
        provider,
        extra={"action": "connect_other_account", "connection_id": connection_id},
    )
    return Refusal(
        RefusalKind.OTHER_ACCOUNT, 409, f"That is a different {provider} account",
        f"This connection belongs to another {provider} account than the one you signed in with, so nothing "
        f"was changed. Open the link again and choose the account you connected before (you may need to sign "
        f"out of {provider} first).",
        provider,
    )  # fmt: skip


def _wrong_issuer(provider: str, connection_id: str | None, problem: str) -> Refusal:
    """The answer did not come from the provider the user was sent to, as far as RFC 9207 can tell."""
    log.warning(
        "connect flow: the callback for %s carried %s issuer; the code was not redeemed",
        provider,
        "no" if problem == "missing" else "another",
        extra={"action": "connect_wrong_issuer", "connection_id": connection_id},
    )
    return Refusal(
        RefusalKind.WRONG_ISSUER, 400, f"This answer did not come from {provider}",
        ("The sign-in came back without the name of the server that answered"
         if problem == "missing" else "The sign-in came back naming another server than " + provider)
        + ", so it was not used and nothing was changed. Open the connect link again to start over; if this "
        "happens again, tell the operator.",
        provider,
    )  # fmt: skip


def _connection_gone(provider: str) -> Refusal:
    return Refusal(
        RefusalKind.CONNECTION_GONE, 410, "This connection no longer exists",
        "It was deleted after the link was made. Nothing was changed.", provider,
    )  # fmt: skip


def _short(text: str | None) -> str:
    """A provider's error code for a page: printable, short (a page is not a place for its whole body)."""
    cleaned = "".join(c for c in (text or "unknown") if c.isprintable())
    return cleaned[:80] or "unknown"


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its query (an authorization URL may carry its own already)."""
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
