"""The control-plane ASGI application: `create_app()` wires the workspace, the routers under
`api/routes/`, JSON errors, request ids, security headers and the request body limit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockade import __version__
from stockade.api import routes
from stockade.api.errors import (
    error_response,
    install_error_handlers,
    internal_error_response,
    logger,
)
from stockade.core.workspace import Workspace
from stockade.web import STATIC_DIR

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "REQUEST_ID_HEADER",
    "BodySizeLimit",
    "RequestContext",
    "create_app",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class RequestContext:
    """Outermost middleware: a request id on every request and response, security headers,
    and the last line of defence that turns any unexpected exception into a JSON 503.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in _SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("application/json"):
                    headers["cache-control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                logger.error(
                    "error after the response started [request %s]", request_id, exc_info=exc
                )
                raise
            response = internal_error_response(
                scope.get("method", "?"), scope.get("path", "?"), request_id, exc
            )
            await response(scope, receive, send_with_headers)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _WELL_FORMED_ID.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class BodySizeLimit:
    """Reads the whole request body (up to `max_bytes`) before the app parses anything;
    larger bodies get a JSON 413 without being read further.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared == -1:
            await error_response(400, "bad_request", "invalid Content-Length header")(
                scope, receive, send
            )
            return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {self.max_bytes} bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, None when absent, -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) <= 18 else -1
    return None


def create_app(
    workspace: Workspace | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The control-plane API. With `workspace`, the caller owns it (opened and closed
    outside); without, the app opens the workspace from the settings at startup and closes
    it at shutdown.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if workspace is not None:
            app.state.workspace = workspace
            yield
            return
        # Not required to be migrated here: /readyz reports that, and requests get a 503.
        opened = Workspace.open(require_migrated=False)
        app.state.workspace = opened
        try:
            yield
        finally:
            app.state.workspace = None
            opened.close()

    app = FastAPI(
        title="Stockade control plane",
        version=__version__,
        description="REST API of the Stockade control plane. Resources live under "
        f"`{routes.API_PREFIX}/`; send an API token as `Authorization: Bearer stk_...`.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestContext),
            Middleware(BodySizeLimit, max_bytes=max_body_bytes),
        ],
    )
    app.state.workspace = workspace
    install_error_handlers(app)
    for router in routes.routers():
        app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/dashboard/")

    return app
