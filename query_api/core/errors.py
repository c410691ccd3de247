"""One JSON error shape for every failure of the API: ``{"error": {"code", "message", "field"}}``.

Contract: handlers installed by :func:`install_error_handlers` turn :class:`ApiError`, a filter's
:class:`~auditlogkit.query_api.read.filters.FilterError` (422, or 403 when ``forbidden``), FastAPI's request
validation errors, Starlette's HTTP errors (404 of unknown routes, 405) and any unexpected exception (500, logged
with a stack trace, never shown) into that shape. ``field`` names the query parameter at fault, else ``null``.
A path that one of the given ``routes`` with a typed path parameter would take but for that parameter's form
(``/v1/events/not-a-uuid`` under ``/v1/events/{event_id:uuid}``) is not "no such resource" but a 422 naming the
parameter, like a malformed query parameter. The models of the shape, and :data:`~auditlogkit.query_api.models.ERRORS` (the
error answers in the OpenAPI), are in :mod:`auditlogkit.query_api.models`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.convertors import Convertor, FloatConvertor, IntegerConvertor, UUIDConvertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from auditlogkit.query_api.read.filters import FilterError
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.core.errors")

_CODES = {429: "rate_limited", 400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 422: "invalid_parameter", 500: "internal_error", 503: "unavailable"}


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready; its query was cancelled."""


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


def invalid(field: str, message: str) -> ApiError:
    """A 422 naming the parameter."""
    return ApiError(422, message, field=field)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status,
                        headers=headers)


_FORMS: dict[type[Convertor[Any]], str] = {UUIDConvertor: "a UUID", IntegerConvertor: "an integer",
                                           FloatConvertor: "a number"}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 64 else text[:64] + "…")


@cache
def _loose(path_format: str) -> re.Pattern[str]:
    """``path_format`` (``/v1/events/{event_id}``) with any text in place of each parameter."""
    parts = _PARAM.split(path_format)  # literal, name, literal, name, ..., literal
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts)))


def _typed(route: BaseRoute) -> dict[str, Convertor[Any]]:
    """The path parameters of ``route`` with a form (a UUID, a number), by name."""
    return {name: conv for name, conv in (getattr(route, "param_convertors", None) or {}).items()
            if type(conv) in _FORMS}


def misshapen_path_parameter(request: Request, routes: Sequence[BaseRoute]) -> ApiError | None:
    """The 422 of a path that no route took but one of ``routes`` would if its typed path parameter had its form
    (module contract); None when none would."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    if root and path.startswith(root):  # as the router matches
        path = path[len(root):]
    for route in routes:
        typed = _typed(route)
        methods = getattr(route, "methods", None)
        if not typed or (methods and request.method not in methods):
            continue
        found = _loose(getattr(route, "path_format", "")).fullmatch(path)
        if found is None:
            continue
        for name, conv in typed.items():
            if not re.fullmatch(conv.regex, found[name]):
                return invalid(name, f"{name} {_shown(found[name])} is not {_FORMS[type(conv)]}")
    return None


def _validation_message(err: dict[str, Any]) -> tuple[str | None, str]:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = loc[0] if loc else None
    if field and str(err.get("type", "")).startswith("uuid_"):
        return field, f"{field} {_shown(err.get('input'))} is not a UUID"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return field, f"{field}: {msg}" if field else msg


def install_error_handlers(app: FastAPI, routes: Iterable[BaseRoute] = ()) -> None:
    """The handlers of the module contract on ``app``; ``routes``: those whose typed path parameters a path that
    no route took is checked against."""
    typed = [r for r in routes if _typed(r)]

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

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and detail == "Not Found":
            misshapen = misshapen_path_parameter(request, typed)
            if misshapen is not None:
                return await api_error(request, misshapen)
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
