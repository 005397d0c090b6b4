"""Liveness (`/healthz`), readiness (`/readyz`: database reachable and migrated) and
`/api/v1/whoami` (the principal behind the presented token).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from stockade import __version__
from stockade.api.auth import CurrentPrincipal, CurrentWorkspace
from stockade.api.errors import ErrorResponse, error_response, logger
from stockade.api.routes import API_PREFIX
from stockade.core.errors import StorageUnavailable

__all__ = ["Health", "Readiness", "WhoAmI", "router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    status: Literal["ready"]
    database: str
    revision: str


class WhoAmI(BaseModel):
    token_id: str
    name: str
    role: str
    actor: str
    permissions: list[str]


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the database is reachable and migrated",
    responses={503: {"model": ErrorResponse, "description": "Not ready"}},
)
def readyz(workspace: CurrentWorkspace) -> Readiness | JSONResponse:
    database = workspace.database
    try:
        current = database.current_revision()
    except StorageUnavailable as exc:
        # The detailed reason names hosts and paths: log it, tell anonymous callers less.
        logger.warning("not ready: %s", exc.message)
        return _not_ready("the database is unreachable or busy")
    head = database.head_revision()
    if current != head:
        logger.warning("not ready: database at revision %s, expected %s", current, head)
        return _not_ready("the database schema is not migrated (run `stockade db upgrade`)")
    return Readiness(status="ready", database=database.dialect, revision=current or "")


def _not_ready(reason: str) -> JSONResponse:
    return error_response(503, "not_ready", f"not ready: {reason}")


@router.get(
    f"{API_PREFIX}/whoami",
    summary="The token this request authenticated with, its role and permissions",
    responses={401: {"model": ErrorResponse}},
)
def whoami(principal: CurrentPrincipal) -> WhoAmI:
    return WhoAmI(
        token_id=principal.token_id,
        name=principal.name,
        role=principal.role.value,
        actor=principal.actor,
        permissions=sorted(p.value for p in principal.permissions),
    )
