"""The sandbox provider as a raw ASGI application: OAuth endpoints and the control API.

``POST /oauth/token`` (RFC 6749 sections 6 and 4.1.3), ``GET``/``POST /oauth/authorize`` (RFC 6749 section
4.1.1 with RFC 7636 PKCE: the consent page and the user's answer), ``POST /oauth/revoke`` (RFC 7009),
``POST /oauth/introspect`` (RFC 7662) and the control API under ``/_sandbox/``.

Raw ASGI (no framework) keeps the token endpoint's hot path to a form parse, one locked state update and two
``send`` calls, so one core serves thousands of refreshes per second. Being the outermost layer also gives
``Behaviour.RESET`` uvicorn's own ``send`` and, through it, the TCP transport to abort. A configured latency
is waited out after the state update, on the event loop, so slow answers overlap as at a real provider.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus

from grantkeeper.sandbox import control, pages
from grantkeeper.sandbox.authorize import MAX_USER, CodeRequest, OpenConsent, Redirect, Refusal
from grantkeeper.sandbox.behaviour import (
    CANNED,
    HANG_TIMEOUT,
    NO_STORE,
    WWW_AUTHENTICATE,
    Behaviour,
    Canned,
    canned,
    json_response,
)
from grantkeeper.sandbox.model import Issued, Rejection
from grantkeeper.sandbox.state import Answer, Sandbox

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a path, not a secret
REVOCATION_PATH: Final = "/oauth/revoke"
INTROSPECTION_PATH: Final = "/oauth/introspect"
AUTHORIZE_PATH: Final = "/oauth/authorize"
CONTROL_PREFIX: Final = "/_sandbox/"
_MAX_FORM: Final = 64 * 1024
_MAX_CONTROL: Final = 32 * 1024 * 1024
_FORM_TYPE: Final = b"application/x-www-form-urlencoded"
_TOKEN_HEADERS: Final = [(b"content-type", b"application/json"), *NO_STORE]
_LINGER_RST: Final = struct.pack("ii", 1, 0)
_NOT_FOUND: Final = json_response(404, {"error": "not_found"})
_TOO_LARGE: Final = json_response(413, {"error": "invalid_request", "error_description": "body too large"})
_NOT_ALLOWED: Final = canned(405, extra=[(b"allow", b"POST")])
_NOT_ALLOWED_AUTHORIZE: Final = canned(405, extra=[(b"allow", b"GET, POST")])
#: The parameters a code exchange needs beside the client's credentials (RFC 6749 section 4.1.3, RFC 7636).
_CODE_PARAMETERS: Final = ("code", "redirect_uri", "code_verifier")
#: ``Sandbox.token_request`` arguments: client id, secret, refresh token, early and late rejection.
TokenRequest = tuple[str, str, str, Rejection | None, Rejection | None]
_NOT_POST: Final[TokenRequest] = (
    "",
    "",
    "",
    (Behaviour.INVALID_REQUEST, _NOT_ALLOWED),
    None,
)
_TOO_LARGE_REQUEST: Final[TokenRequest] = ("", "", "", (Behaviour.INVALID_REQUEST, _TOO_LARGE), None)
#: ``Sandbox.introspection_request`` arguments: client id, secret, token, type hint, early and late answer.
IntrospectionRequest = tuple[str, str, str, str | None, Canned | None, Canned | None]
_NOT_POST_INTROSPECTION: Final[IntrospectionRequest] = ("", "", "", None, _NOT_ALLOWED, None)
_TOO_LARGE_INTROSPECTION: Final[IntrospectionRequest] = ("", "", "", None, _TOO_LARGE, None)


class _ClientGoneError(Exception):
    """The client went away before the request body was read."""


def _bad_request(description: str) -> Canned:
    return json_response(400, {"error": "invalid_request", "error_description": description})


def _invalid_client(description: str) -> Canned:
    payload: dict[str, object] = {"error": "invalid_client", "error_description": description}
    return json_response(401, payload, [WWW_AUTHENTICATE])


async def _respond(send: Send, answer: Canned) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it exceeds ``limit`` bytes."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


def _parse_form(body: bytes, content_type: bytes | None) -> dict[str, str] | str:
    """RFC 6749 section 3.2: a form body whose parameters appear at most once; else an error text."""
    if content_type is None or content_type.partition(b";")[0].strip().lower() != _FORM_TYPE:
        return "content-type must be application/x-www-form-urlencoded"
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return "the form body is not valid UTF-8 form-urlencoding"
    form = dict(pairs)
    if len(form) != len(pairs):
        return "a parameter was sent more than once"
    return form


def _client_credentials(authorization: bytes | None, form: dict[str, str]) -> tuple[str, str] | Canned:
    """RFC 6749 section 2.3.1: client_secret_basic or client_secret_post, never both in one request."""
    if authorization is None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if not client_id or secret is None:
            return _invalid_client("client authentication required")
        return client_id, secret
    if "client_secret" in form:
        return _bad_request("use one client authentication method, not both")
    scheme, _, param = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return _invalid_client("unsupported authentication scheme")
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return _invalid_client("malformed Basic credentials")
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep:
        return _invalid_client("malformed Basic credentials")
    client_id = unquote_plus(raw_id)
    if form.get("client_id", client_id) != client_id:
        return _bad_request("client_id in the form differs from the Basic credentials")
    return client_id, unquote_plus(raw_secret)


def _form_and_authorization(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[dict[str, str], bytes | None] | Canned:
    """The form of a POST to the token or introspection endpoint and its Authorization header, or the 400."""
    authorization = content_type = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"content-type":
            content_type = value
    form = _parse_form(body, content_type)
    if isinstance(form, str):
        return _bad_request(form)
    return form, authorization


def _form_and_credentials(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[dict[str, str], tuple[str, str]] | Canned:
    """The form and the client's credentials of a POST to the token or introspection endpoint, or the answer
    that refuses it (a 400 for the form, a 400 or 401 for the credentials)."""
    read = _form_and_authorization(headers, body)
    if isinstance(read, Canned):
        return read
    form, authorization = read
    credentials = _client_credentials(authorization, form)
    if isinstance(credentials, Canned):
        return credentials
    return form, credentials


def _token_request(headers: list[tuple[bytes, bytes]], body: bytes) -> TokenRequest | CodeRequest:
    """Everything about a POSTed token request that needs no state, as ``Sandbox.token_request`` takes it.

    A code exchange (``grant_type=authorization_code``) is told apart as soon as the form is read and goes
    its own way (``CodeRequest``), so it stays out of the refresh statistics; a refresh pays one comparison.
    """
    read = _form_and_authorization(headers, body)
    if isinstance(read, Canned):
        return "", "", "", (Behaviour.INVALID_REQUEST, read), None
    form, authorization = read
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        return _code_request(authorization, form)
    credentials = _client_credentials(authorization, form)
    if isinstance(credentials, Canned):
        rejected = Behaviour.INVALID_CLIENT if credentials.status == 401 else Behaviour.INVALID_REQUEST
        return "", "", "", (rejected, credentials), None
    late: Rejection | None = None
    if grant_type is None:
        late = Behaviour.INVALID_REQUEST, _bad_request("grant_type is required")
    elif grant_type != "refresh_token":
        late = Behaviour.UNSUPPORTED_GRANT_TYPE, CANNED[Behaviour.UNSUPPORTED_GRANT_TYPE]
    elif not form.get("refresh_token"):
        late = Behaviour.INVALID_REQUEST, _bad_request("refresh_token is required")
    return credentials[0], credentials[1], form.get("refresh_token", ""), None, late


def _code_request(authorization: bytes | None, form: dict[str, str]) -> CodeRequest:
    """RFC 6749 section 4.1.3 read without state: the client's credentials and the three parameters."""
    credentials = _client_credentials(authorization, form)
    if isinstance(credentials, Canned):
        return CodeRequest("", "", "", "", "", early=credentials)
    missing = next((name for name in _CODE_PARAMETERS if not form.get(name)), None)
    late = None if missing is None else _bad_request(f"{missing} is required")
    code, redirect_uri, verifier = (form.get(name, "") for name in _CODE_PARAMETERS)
    return CodeRequest(credentials[0], credentials[1], code, redirect_uri, verifier, late=late)


def _query_pairs(query_string: bytes) -> list[tuple[str, str]] | None:
    """An authorization request's query parameters (RFC 6749 section 4.1.1), or None when not UTF-8."""
    try:
        return parse_qsl(query_string.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None


def _consent_answer(body: bytes, content_type: bytes | None) -> tuple[str, bool, str] | Refusal:
    """The consent form's id, decision (allow: True) and user name, or why the form cannot be acted on.

    Checked before the consent is looked up, so a bad form leaves the consent answerable.
    """
    form = _parse_form(body, content_type)
    if isinstance(form, str):
        return Refusal(f"The consent form could not be read: {form}.")
    consent_id = form.get("consent", "")
    decision = form.get("decision")
    user = form.get("user", "").strip()
    if not consent_id:
        return Refusal("The consent form has no consent id. Start again from the application.")
    if decision not in ("allow", "deny"):
        return Refusal("The consent form must answer allow or deny.")
    if decision == "allow" and not 0 < len(user) <= MAX_USER:
        return Refusal(f"Give a user name of 1 to {MAX_USER} characters to allow access.")
    return consent_id, decision == "allow", user


def _authorization_page(answer: OpenConsent | Refusal | Redirect) -> Canned:
    if isinstance(answer, OpenConsent):
        return pages.consent_page(answer, AUTHORIZE_PATH)
    if isinstance(answer, Refusal):
        return pages.error_page(answer)
    return pages.redirect(answer)


def _introspection_request(headers: list[tuple[bytes, bytes]], body: bytes) -> IntrospectionRequest:
    """RFC 7662 section 2.1, read as ``_token_request`` reads a token request (same form and credentials)."""
    read = _form_and_credentials(headers, body)
    if isinstance(read, Canned):
        return "", "", "", None, read, None
    form, credentials = read
    token = form.get("token", "")
    late = None if token else _bad_request("token is required")
    # token_type_hint is only a hint: any value is passed on, and one the sandbox does not know is ignored.
    return credentials[0], credentials[1], token, form.get("token_type_hint"), None, late


def _issued(answer: Issued) -> Canned:
    expires_in: int | str = answer.expires_in
    if answer.behaviour is Behaviour.OK_EXPIRES_IN_STRING:
        expires_in = str(expires_in)
    payload: dict[str, object] = {
        "access_token": answer.access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }
    if answer.refresh_token is not None:
        payload["refresh_token"] = answer.refresh_token
    if answer.scope is not None:
        payload["scope"] = answer.scope
    if answer.account_id is not None:
        payload["account_id"] = answer.account_id
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Canned(200, [(b"content-length", str(len(body)).encode()), *_TOKEN_HEADERS], body)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class SandboxApp:
    """ASGI 3 application for one ``Sandbox``; make one per server (``Sandbox.asgi_app``)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._hangs: set[asyncio.Future[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        path: str = scope["path"]
        try:
            if path == TOKEN_PATH:
                await self._token(scope, receive, send)
            elif path == REVOCATION_PATH:
                await self._revoke(scope, receive, send)
            elif path == INTROSPECTION_PATH:
                await self._introspect(scope, receive, send)
            elif path == AUTHORIZE_PATH:
                await self._authorize(scope, receive, send)
            elif path.startswith(CONTROL_PREFIX):
                await self._control(scope, receive, send)
            else:
                await _respond(send, _NOT_FOUND)
        except _ClientGoneError:
            return

    def release_hangs(self) -> None:
        """End every ``hang`` now (with its 504) so a server can shut down; call from the serving loop."""
        for waiter in list(self._hangs):
            if not waiter.done():
                waiter.set_result(None)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the request, let the sandbox decide under its lock once, wait out any latency, answer."""
        sandbox = self.sandbox
        request: TokenRequest | CodeRequest
        if scope["method"] != "POST":
            request = _NOT_POST
        else:
            body = await _read_body(receive, _MAX_FORM)
            request = _TOO_LARGE_REQUEST if body is None else _token_request(scope["headers"], body)
            if isinstance(request, CodeRequest):
                await self._exchange_code(request, receive, send)
                return
        answer, key = sandbox.token_request(*request)
        try:
            latency = sandbox.latency
            if latency > 0:
                await asyncio.sleep(latency)  # on the loop, lock free: requests overlap as at a slow provider
            await self._act_out(answer, receive, send)
        finally:
            sandbox.request_done(key)

    async def _exchange_code(self, request: CodeRequest, receive: Receive, send: Send) -> None:
        """A code exchange: decided under the lock once, then answered as a refresh is (latency included)."""
        answer = self.sandbox.code_request(request)
        latency = self.sandbox.latency
        if latency > 0:
            await asyncio.sleep(latency)
        await self._act_out(answer, receive, send)

    async def _authorize(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The authorization endpoint: GET shows the consent page, POST takes the user's decision.

        Answers are HTML pages for the user or 302 redirects to the client (see ``pages``); no latency,
        outage or statistics of the token endpoint apply.
        """
        method = scope["method"]
        if method == "GET":
            pairs = _query_pairs(scope["query_string"])
            if pairs is None:
                answer: OpenConsent | Refusal | Redirect = Refusal("The request's query is not valid UTF-8.")
            else:
                answer = self.sandbox.authorization_request(pairs)
            await _respond(send, _authorization_page(answer))
        elif method == "POST":
            body = await _read_body(receive, _MAX_FORM)
            if body is None:
                await _respond(send, pages.error_page(Refusal("The consent form is too large."), 413))
                return
            content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
            read = _consent_answer(body, content_type)
            decided = read if isinstance(read, Refusal) else self.sandbox.consent_decision(*read)
            await _respond(send, _authorization_page(decided))
        else:
            await _respond(send, _NOT_ALLOWED_AUTHORIZE)

    async def _act_out(self, answer: Answer, receive: Receive, send: Send) -> None:
        """Send ``answer``: render issued tokens, send a ready response or act out a behaviour."""
        if isinstance(answer, Issued):
            await _respond(send, _issued(answer))
        elif isinstance(answer, Canned):
            await _respond(send, answer)
        elif answer is Behaviour.RATE_LIMIT_HTTP_DATE:
            retry_after = formatdate(time.time() + 120, usegmt=True).encode()
            await _respond(send, canned(429, extra=[(b"retry-after", retry_after)]))
        elif answer is Behaviour.HANG:
            await self._hang(receive, send)
        elif answer is Behaviour.RESET:
            await _reset(receive, send)
        else:
            await _respond(send, CANNED[answer])

    async def _hang(self, receive: Receive, send: Send) -> None:
        """Answer 504 only after ``hang_seconds``, unless the client leaves or the server stops first."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hangs.add(waiter)
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            done, _ = await asyncio.wait(
                {waiter, gone}, timeout=self.sandbox.hang_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._hangs.discard(waiter)
            gone.cancel()
        if gone not in done:
            await _respond(send, HANG_TIMEOUT)

    async def _revoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        """RFC 7009 section 2.1: the client authenticates as at the token endpoint (400 or 401
        ``invalid_client`` otherwise) and must send ``token`` (400 ``invalid_request``); then 200 whether or
        not the token was known (section 2.2). A token revokes its grant only when the grant is this
        client's: another client's token is answered as an unknown one, and left alone."""
        if scope["method"] != "POST":
            await _respond(send, _NOT_ALLOWED)
            return
        body = await _read_body(receive, _MAX_FORM)
        if body is None:
            await _respond(send, _TOO_LARGE)
            return
        read = _form_and_credentials(scope["headers"], body)
        if isinstance(read, Canned):
            await _respond(send, read)
            return
        form, (client_id, client_secret) = read
        if not self.sandbox.authenticate(client_id, client_secret):
            await _respond(send, _invalid_client("client authentication failed"))
            return
        token = form.get("token")
        if not token:
            await _respond(send, _bad_request("token is required"))
            return
        self.sandbox.revoke_token(token, client_id=client_id)
        await _respond(send, canned(200, extra=list(NO_STORE)))

    async def _introspect(self, scope: Scope, receive: Receive, send: Send) -> None:
        """RFC 7662: whether a token is active, told only to the client it was issued to; changes no grant.

        Read and answered as the token endpoint is (body read first, then one locked decision: outage, bad
        request or credentials, ``invalid_client``, missing token), and an outage behaviour is acted out the
        same way (503, hang, reset ...). Not delayed by ``latency``, as revocation is not. A 200 is
        ``{"active": false}`` alone, or ``active``, ``token_type`` and ``client_id`` (and ``exp`` for an
        access token); never a token, so nothing secret reaches a log.
        """
        if scope["method"] != "POST":
            request = _NOT_POST_INTROSPECTION
        else:
            body = await _read_body(receive, _MAX_FORM)
            if body is None:
                request = _TOO_LARGE_INTROSPECTION
            else:
                request = _introspection_request(scope["headers"], body)
        answer = self.sandbox.introspection_request(*request)
        if isinstance(answer, dict):
            await _respond(send, json_response(200, answer))
        else:
            await self._act_out(answer, receive, send)

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, _MAX_CONTROL)
        if body is None:
            await _respond(send, _TOO_LARGE)
            return
        status, payload = control.handle(self.sandbox, scope["method"], scope["path"], body)
        await _respond(send, json_response(status, payload))


async def _reset(receive: Receive, send: Send) -> None:
    """Reset the TCP connection (RST, no HTTP response), as a crashing load balancer does.

    Works under uvicorn, whose ``send`` is a method of an object holding the transport: ``SO_LINGER`` (1, 0)
    makes the close send RST instead of FIN.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("Behaviour.RESET needs uvicorn's raw send (serve the app with uvicorn, unwrapped)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()
    # Let uvicorn see the connection lost before returning, so it does not try to send a 500.
    await _wait_disconnect(receive)
