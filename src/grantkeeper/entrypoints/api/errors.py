"""Errors as RFC 9457 problem details (``application/problem+json``), one stable ``type`` per kind of error.

Clients branch on ``type``, never on ``detail`` (which is for people). No detail ever holds a token, a secret
or a provider's response body.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from grantkeeper.core.errors import InvalidInputError, InvalidSettingError, MissingEncryptionKeyError
from grantkeeper.entrypoints.api.html_pages import error_page, is_page_path
from grantkeeper.ports import (
    DuplicateProviderError,
    DuplicateWorkflowError,
    ProviderInUseError,
    StoreError,
    StoreUnavailableError,
    UnknownConnectionError,
    UnknownProviderError,
)
from grantkeeper.service.vending import NeedsReauthorizationError, TokenUnavailableError

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:grantkeeper:problem:"
log = logging.getLogger("grantkeeper.api")

_STATUS_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    422: "Invalid request",
    503: "Service unavailable",
}


class Problem(Exception):  # noqa: N818 - an RFC 9457 "problem", raised to answer with one
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.title = title or _STATUS_TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


class ProblemOut(BaseModel):
    """RFC 9457 problem details; some types add members (``errors``, ``reconnect_url``, ``retry_after``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str


_RESPONSE_DESCRIPTIONS = {
    400: "The body could not be read",
    401: "Missing or unknown credentials",
    404: "No such resource in this tenant",
    409: "Conflict: already exists, still in use, the connection needs reauthorization, or the refresh "
    "was rejected",
    422: "The request is not valid",
    503: "Temporarily unavailable; see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem documents a route may answer with."""
    schema = ProblemOut.model_json_schema()
    return {
        status: {"description": _RESPONSE_DESCRIPTIONS[status], "content": {PROBLEM_JSON: {"schema": schema}}}
        for status in statuses
    }


def problem_response(problem: Problem, request: Request) -> JSONResponse:
    body = {
        "type": TYPE_PREFIX + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,  # the path only: a query string may hold a secret
        **problem.extra,
    }
    return JSONResponse(body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


def not_found(what: str, identifier: str) -> Problem:
    return Problem(404, "not-found", f"no {what} {identifier!r}")


def _validation_problem(exc: RequestValidationError) -> Problem:
    """Name each bad field and why, never echo the submitted value (it may be a token)."""
    errors = [
        {
            "location": ".".join(str(part) for part in error.get("loc", ())),
            "message": str(error.get("msg", "")),
        }
        for error in exc.errors()
    ]
    return Problem(422, "validation-error", "the request is not valid", errors=errors)


def _translate(exc: Exception, request: Request) -> Problem:
    """Map an exception to its problem; anything unexpected is a 500 that says nothing internal."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc)
    if isinstance(exc, HTTPException):
        slug = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized"}.get(
            exc.status_code, "http-error"
        )
        return Problem(exc.status_code, slug, str(exc.detail), headers=dict(exc.headers or {}))
    if isinstance(exc, UnknownConnectionError):
        return Problem(404, "not-found", "no such connection")
    if isinstance(exc, UnknownProviderError):
        return Problem(422, "unknown-provider", str(exc))
    if isinstance(exc, DuplicateProviderError | DuplicateWorkflowError):
        return Problem(409, "already-exists", str(exc))
    if isinstance(exc, ProviderInUseError):
        detail = f"{exc}; ask with with_connections=true to remove them with it"
        return Problem(409, "provider-in-use", detail, connections=exc.connections)
    if isinstance(exc, NeedsReauthorizationError):
        link = request.app.state.context.connect.signed_reconnect_link(exc.connection_id)
        reconnect = link.url if link is not None else None
        return Problem(
            409, "needs-reauthorization", str(exc), connection_id=exc.connection_id, reconnect_url=reconnect
        )
    if isinstance(exc, TokenUnavailableError):
        seconds = max(1, round(exc.retry_after.total_seconds()))
        return Problem(
            503 if exc.is_transient else 409,
            "token-unavailable" if exc.is_transient else "refresh-rejected",
            str(exc),
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
            reason=exc.reason,
        )
    if isinstance(exc, MissingEncryptionKeyError):  # the server's configuration, not the request, is wrong
        return Problem(503, "encryption-key-missing", str(exc), title="Service misconfigured")
    if isinstance(exc, StoreUnavailableError | OperationalError | InterfaceError):  # not the request's fault
        return Problem(
            503,
            "database-unavailable",
            "the database did not answer; try again shortly",
            headers={"Retry-After": "5"},
            retry_after=5,
        )
    if isinstance(exc, InvalidInputError | InvalidSettingError | StoreError):
        return Problem(422, "invalid-input", str(exc))
    if isinstance(exc, DataError):  # a value the database cannot hold (a NUL byte in a path, say)
        return Problem(422, "invalid-input", "a value in the request cannot be stored or looked up")
    log.error(
        "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc
    )
    # Connection: close, because the server closes the connection after an unhandled error anyway
    return Problem(
        500,
        "internal-error",
        "an internal error occurred",
        title="Internal server error",
        headers={"Connection": "close"},
    )


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        problem = _translate(exc, request)
        if is_page_path(request.url.path):  # a person's browser, not an API client: a page, not JSON
            return error_page(problem.status, problem.slug, problem.title, problem.detail, problem.headers)
        return problem_response(problem, request)

    for kind in (
        Problem,
        RequestValidationError,
        HTTPException,
        StoreError,
        InvalidInputError,
        InvalidSettingError,
        MissingEncryptionKeyError,
        NeedsReauthorizationError,
        TokenUnavailableError,
        DataError,
        OperationalError,
        InterfaceError,
        Exception,
    ):
        app.add_exception_handler(kind, handle)
