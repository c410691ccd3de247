"""One JSON error shape for every failure of the API: ``{"error": {"code", "message", "field"}}``.

Contract: handlers installed by :func:`install_error_handlers` turn :class:`ApiError`, a filter's
:class:`~query_api.filters.FilterError` (422, or 403 when ``forbidden``), FastAPI's request
validation errors, Starlette's HTTP errors (404 of unknown routes, 405) and any unexpected exception (500, logged
with a stack trace, never shown) into that shape. ``field`` names the query parameter at fault, else ``null``.
:data:`ERRORS` documents the error answers every ``/v1`` route may give (its ``responses`` in the OpenAPI).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from auditlog.logs import get_logger
from query_api.filters import FilterError

log = get_logger("query_api.errors")

_CODES = {429: "rate_limited", 400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 422: "invalid_parameter", 500: "internal_error", 503: "unavailable"}


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready; its query was cancelled."""


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """What every 4xx/5xx answer carries."""

    error: ErrorDetail


class ApiError(Exception):
    """Raise anywhere in a request to answer ``status`` with the error shape."""

    def __init__(self, status: int, message: str, *, field: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.field = field
        self.headers = headers


#: The error answers of the ``/v1`` routes (FastAPI ``responses``); a route adds its own (e.g. 404) to a copy.
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "no or invalid token"},
    403: {"model": ErrorBody, "description": "missing permission or a filter outside your scope"},
    422: {"model": ErrorBody, "description": "invalid parameter (the message names it and the valid values)"},
    429: {"model": ErrorBody, "description": "rate limit or export limit reached (see Retry-After)"},
    503: {"model": ErrorBody, "description": "the read cannot be recorded in the audit log (audit_unavailable), or "
                                            "the store is unavailable or the query needs too much memory"},
    504: {"model": ErrorBody, "description": "the query ran longer than its time limit (query_timeout)"},
}


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the parameter."""
    return ApiError(422, message, field=field)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


def _validation_message(err: dict[str, Any]) -> tuple[str | None, str]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = loc[0] if loc else None
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return field, f"{field}: {msg}" if field else msg


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    async def filter_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FilterError)
        status = 403 if exc.forbidden else 422
        return error_response(status, _CODES[status], exc.message, exc.field)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        field, message = _validation_message(errors[0]) if errors else (None, "invalid request")
        return error_response(422, "invalid_parameter", message, field)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such resource"
        return error_response(exc.status_code, code, detail, None, getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")

    async def client_gone(_: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client has left and its query was cancelled

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(FilterError, filter_error)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
