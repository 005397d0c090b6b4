"""`/api/v1/audit`: read the tamper-evident log, fetch inclusion and consistency proofs,
sign a checkpoint and verify the whole log, so an auditor needs nothing but the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from stockade.api.auth import CurrentWorkspace, DbSession, require
from stockade.api.errors import documented
from stockade.api.routes import API_PREFIX
from stockade.core.errors import NotFound
from stockade.core.keys import public_pem
from stockade.core.tokens import Permission, Principal

__all__ = ["AuditEntryOut", "AuditPage", "router"]

router = APIRouter(
    prefix=f"{API_PREFIX}/audit", tags=["audit"], responses=documented(401, 403, 409, 422, 503)
)

Auditor = Annotated[Principal, Depends(require(Permission.audit_read))]
Signer = Annotated[Principal, Depends(require(Permission.audit_write))]


class AuditEntryOut(BaseModel):
    index: int
    timestamp: str
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    leaf_hash: str = Field(description="RFC 6962 leaf hash, hex.")


class AuditPage(BaseModel):
    size: int = Field(description="Entries in the whole log.")
    entries: list[AuditEntryOut]


class CheckpointOut(BaseModel):
    id: int | None
    origin: str
    size: int
    root_hash: str
    created_at: str | None
    text: str = Field(description="The signed note (C2SP tlog-checkpoint).")


class VerificationOut(BaseModel):
    ok: bool
    size: int
    checkpoints_checked: int
    uncovered: int = Field(description="Entries after the latest checkpoint.")
    problems: list[dict[str, Any]]


@router.get("", response_model=AuditPage, summary="List audit entries")
def list_entries(
    session: DbSession,
    ws: CurrentWorkspace,
    _p: Auditor,
    action: str | None = None,
    subject: str | None = None,
    actor: str | None = None,
    offset: Annotated[int, Query(ge=0, lt=2**63)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    newest: bool = False,
) -> Any:
    records = ws.audit.entries(
        session,
        start=offset,
        limit=limit,
        action=action,
        subject=subject,
        actor=actor,
        newest_first=newest,
    )
    return {"size": ws.audit.size(session), "entries": [r.to_json() for r in records]}


@router.get("/verify", response_model=VerificationOut, summary="Recompute and verify the log")
def verify(session: DbSession, ws: CurrentWorkspace, _p: Auditor) -> Any:
    return ws.audit.verify(session).to_json()


@router.get("/checkpoints", response_model=list[CheckpointOut], summary="Signed checkpoints")
def checkpoints(
    session: DbSession,
    ws: CurrentWorkspace,
    _p: Auditor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    return [c.to_json() for c in ws.audit.checkpoints(session, limit=limit)]


@router.post(
    "/checkpoints",
    response_model=CheckpointOut,
    status_code=201,
    summary="Sign a checkpoint of the log as it is now",
)
def create_checkpoint(session: DbSession, ws: CurrentWorkspace, _p: Signer) -> Any:
    checkpoint = ws.audit.checkpoint(session)
    assert checkpoint is not None  # only_if_grown=False always signs
    return checkpoint.to_json()


@router.get(
    "/checkpoints/latest",
    response_class=PlainTextResponse,
    summary="The latest signed checkpoint, as text",
    responses={404: {"description": "No checkpoint yet"}},
)
def latest_checkpoint(session: DbSession, ws: CurrentWorkspace, _p: Auditor) -> Any:
    checkpoint = ws.audit.latest_checkpoint(session)
    if checkpoint is None:
        raise NotFound("no checkpoint has been signed yet")
    return PlainTextResponse(checkpoint.text, media_type="text/plain; charset=utf-8")


@router.get("/proofs/inclusion", summary="Inclusion proof of one entry")
def inclusion(
    session: DbSession,
    ws: CurrentWorkspace,
    _p: Auditor,
    index: Annotated[int, Query(ge=0)],
    size: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    return ws.audit.inclusion_proof(session, index, size).to_json()


@router.get("/proofs/consistency", summary="Consistency proof between two sizes")
def consistency(
    session: DbSession,
    ws: CurrentWorkspace,
    _p: Auditor,
    old: Annotated[int, Query(ge=0)],
    new: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    return ws.audit.consistency_proof(session, old, new).to_json()


@router.get(
    "/public-key",
    response_class=PlainTextResponse,
    summary="PEM public key that signs checkpoints",
)
def public_key(ws: CurrentWorkspace, _p: Auditor) -> Any:
    return PlainTextResponse(public_pem(ws.audit.public_key()).decode("ascii"))
