"""Request dependencies: the workspace, one database transaction per request, and the principal
of the API token presented as `Authorization: Bearer stk_...` (or `X-Stockade-Token`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from stockade.core.errors import AuthError, StorageUnavailable
from stockade.core.tokens import Permission, Principal, authenticate
from stockade.core.workspace import Workspace

__all__ = [
    "TOKEN_HEADER",
    "CurrentPrincipal",
    "CurrentWorkspace",
    "DbSession",
    "current_principal",
    "current_workspace",
    "db_session",
    "presented_token",
    "require",
]

TOKEN_HEADER = "X-Stockade-Token"  # noqa: S105 (a header name, not a secret)


def current_workspace(request: Request) -> Workspace:
    workspace = getattr(request.app.state, "workspace", None)
    if workspace is None:
        raise StorageUnavailable("the control plane has no open workspace (still starting?)")
    return workspace


CurrentWorkspace = Annotated[Workspace, Depends(current_workspace)]


def db_session(workspace: CurrentWorkspace) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent."""
    workspace.database.require_migrated()
    with workspace.session() as session:
        yield session


# scope="function": commit runs before the response goes out, so a failed commit is an
# error response rather than a success the client was told about.
DbSession = Annotated[Session, Depends(db_session, scope="function")]


def presented_token(request: Request) -> str:
    """The token from the request headers, or `AuthError` when there is none."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        request.state.credentials_presented = True
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError(
                "unsupported authorization scheme: send 'Authorization: Bearer <token>'"
            )
        value = value.strip()
        if not value:
            raise AuthError("empty bearer token")
        return value
    header = request.headers.get(TOKEN_HEADER)
    if header is not None:
        request.state.credentials_presented = True
        if not header.strip():
            raise AuthError(f"empty {TOKEN_HEADER} header")
        return header.strip()
    raise AuthError(
        f"authentication required: send 'Authorization: Bearer <token>' or {TOKEN_HEADER}"
    )


def current_principal(request: Request, session: DbSession) -> Principal:
    """The authenticated principal, whatever its role."""
    return authenticate(session, presented_token(request))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the authenticated principal, which must hold `permission` (else 403)."""

    def dependency(principal: CurrentPrincipal) -> Principal:
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.value.replace(':', '_')}"
    return dependency
