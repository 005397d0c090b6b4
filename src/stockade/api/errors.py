"""Every error the control plane returns, in one JSON shape: `{"error": {code, message, details?}}`.

Expected failures keep their status; storage trouble is 503 with Retry-After; anything else is
a logged bug that reaches the client only as a JSON 503 `internal_error` with a request id.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from stockade.core.db import is_outage
from stockade.core.errors import AuthError, StockadeError, StorageUnavailable

__all__ = [
    "RETRY_AFTER_SECONDS",
    "ErrorDetail",
    "ErrorResponse",
    "documented",
    "error_response",
    "install_error_handlers",
    "internal_error_response",
    "logger",
]

logger = logging.getLogger("stockade.api")

RETRY_AFTER_SECONDS = 5

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
    503: "unavailable",
}
_MAX_LISTED_ERRORS = 20
_UNAVAILABLE = "storage unavailable: the database is unreachable, busy or not migrated; retry"


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, wrong content type)",
    401: "Missing, malformed, unknown, expired or revoked API token",
    403: "The token's role lacks the permission",
    404: "No such resource",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Request failed validation",
    503: "Storage unavailable or internal error; retry after Retry-After seconds",
}


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all in the one error shape."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    out_headers = dict(headers or {})
    if status == 503:
        out_headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse({"error": error}, status_code=status, headers=out_headers)


def internal_error_response(
    method: str, path: str, request_id: str, exc: BaseException
) -> JSONResponse:
    """A bug: the traceback goes to the server log under the request id, the client gets a
    JSON 503 naming only that id.
    """
    logger.error("unhandled error in %s %s [request %s]", method, path, request_id, exc_info=exc)
    return error_response(
        503,
        "internal_error",
        f"internal error; the server log has the details under request id {request_id}",
        details={"request_id": request_id},
    )


def _storage_unavailable(request_id: str) -> JSONResponse:
    return error_response(503, "storage_unavailable", f"{_UNAVAILABLE} (request id {request_id})")


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "-")


async def _stockade_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StockadeError)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthError):
        presented = getattr(request.state, "credentials_presented", False)
        headers["WWW-Authenticate"] = (
            'Bearer realm="stockade", error="invalid_token"'
            if presented
            else 'Bearer realm="stockade"'
        )
    message = exc.message
    if exc.http_status >= 500:
        # Outage messages name hosts, paths and schema revisions: those go to the log.
        request_id = _request_id(request)
        logger.warning(
            "%s %s -> %s: %s [request %s]",
            request.method,
            request.url.path,
            exc.http_status,
            exc.message,
            request_id,
        )
        if isinstance(exc, StorageUnavailable):
            return _storage_unavailable(request_id)
        message = f"service unavailable (request id {request_id})"
    return error_response(exc.http_status, exc.code, message, headers=headers)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in {"", "0"}
    return "transfer-encoding" in request.headers


def _location(loc: Any) -> str:
    return ".".join(str(part) for part in loc) if loc else "request"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            position = error.get("loc", ("body", "?"))[-1]
            return error_response(
                400, "malformed_json", f"request body is not valid JSON: {reason} at {position}"
            )
    body_errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
    content_type = request.headers.get("content-type", "")
    if body_errors and _has_body(request) and not _is_json(content_type):
        shown = content_type or "none"
        return error_response(
            400,
            "unsupported_media_type",
            f"request body must be JSON sent with Content-Type: application/json (got {shown})",
        )
    details = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "message": e.get("msg", ""),
            "type": e.get("type", ""),
        }
        for e in errors[:_MAX_LISTED_ERRORS]
    ]
    first = errors[0] if errors else {}
    message = f"{_location(first.get('loc'))}: {first.get('msg', 'invalid')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    # `input` is left out on purpose: it may hold a secret the client sent by mistake.
    return error_response(422, "invalid_input", message, details=details)


def _allowed_methods(request: Request, given: str) -> str:
    """Every method the path accepts. Starlette names only the first route matching the path,
    so the documented operations of every matching path template are added.
    """
    methods = {m.strip().upper() for m in given.split(",") if m.strip()}
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))
        if re.fullmatch(pattern, request.url.path):
            methods.update(method.upper() for method in operations)
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"no such resource: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = _allowed_methods(request, headers.get("Allow", ""))
        headers["Allow"] = allowed
        message = f"method {request.method} not allowed on {request.url.path}" + (
            f" (allowed: {allowed})" if allowed else ""
        )
    else:
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=headers)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    request_id = _request_id(request)
    if not is_outage(exc):
        return internal_error_response(request.method, request.url.path, request_id, exc)
    logger.warning(
        "%s %s -> 503: database error %s: %s [request %s]",
        request.method,
        request.url.path,
        type(exc.orig).__name__,
        str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "",
        request_id,
    )
    return _storage_unavailable(request_id)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; the catch-all lives in `RequestContext` middleware (app.py)."""
    app.add_exception_handler(StockadeError, _stockade_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _storage_error)
