"""RFC 9457 problem details (application/problem+json) for every HTTP error, mapped in one place.

- `DomainError` (and every subclass a service defines) -> its status, title, type and extensions;
- request validation -> 422 naming each field;
- the infrastructure's transient errors (`retry.TRANSIENT_ERRORS`: PostgreSQL restarting or terminating the
  connection, a refused connect, Kafka away) -> 503 with Retry-After: the request may be repeated as it is;
- Starlette's own HTTP errors (404 for an unknown route, 405, ...) -> the same status as a problem;
- anything else -> 500 with an `error_id` that is also in the log line, so an operator can find
  the traceback a caller reports. A 5xx is never a bare `about:blank`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import DomainError, InfrastructureUnavailable
from .retry import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS_TYPES = {
    400: "urn:lotse:problem:bad-request",
    401: "urn:lotse:problem:unauthenticated",
    403: "urn:lotse:problem:forbidden",
    404: "urn:lotse:problem:not-found",
    405: "urn:lotse:problem:method-not-allowed",
    406: "urn:lotse:problem:not-acceptable",
    409: "urn:lotse:problem:conflict",
    413: "urn:lotse:problem:too-large",
    415: "urn:lotse:problem:unsupported-media-type",
    422: "urn:lotse:problem:validation",
    429: "urn:lotse:problem:too-many-requests",
}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **ext: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type_ or _STATUS_TYPES.get(status, f"urn:lotse:problem:http-{status}"),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(ext)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts)


def _jsonable(value: Any) -> Any:
    # Validation errors may carry the offending input (bytes, exceptions); keep the body JSON-safe.
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.instance_title,
            exc.detail,
            type_=exc.instance_type,
            instance=request.url.path,
            headers=dict(exc.headers) or None,
            **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return problem_response(
            422,
            "Invalid request",
            detail,
            type_="urn:lotse:problem:validation",
            instance=request.url.path,
            errors=[{k: _jsonable(v) for k, v in e.items()} for e in errors],
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code, str(exc.detail) if exc.detail else "Error", instance=request.url.path, headers=getattr(exc, "headers", None)
        )

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        error = InfrastructureUnavailable()
        # Only the error's class: neither the request body nor the message (which may name hosts or a URL).
        log.warning(
            "infrastructure unavailable; answered 503",
            extra={"path": request.url.path, "method": request.method, "error": type(exc).__name__},
        )
        return problem_response(
            error.status,
            error.instance_title,
            "A dependency of this service is temporarily unavailable; retry later.",
            type_=error.instance_type,
            instance=request.url.path,
            headers=dict(error.headers),
        )

    for cls in TRANSIENT_ERRORS:
        if issubclass(cls, Exception):  # all of them; Starlette takes no BaseException
            app.add_exception_handler(cls, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = str(uuid.uuid4())
        log.error("unhandled error", extra={"path": request.url.path, "method": request.method, "error_id": error_id}, exc_info=exc)
        return problem_response(
            500,
            "Internal error",
            f"The error was logged with id {error_id}.",
            type_="urn:lotse:problem:internal",
            instance=request.url.path,
            error_id=error_id,
        )
