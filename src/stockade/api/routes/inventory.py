"""`/api/v1/systems|models|datasets|endpoints`: the inventory over REST. One set of routes is
built per kind from the kind's records in `core.inventory`, so every kind behaves alike.
"""

# No `from __future__ import annotations`: FastAPI reads the per-kind body types from the
# annotations of the route functions built below, which must be real objects.

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from stockade.api.auth import CurrentWorkspace, DbSession, require
from stockade.api.errors import documented, error_response
from stockade.api.routes import API_PREFIX
from stockade.core import inventory
from stockade.core.lifecycle import TransitionOutcome
from stockade.core.tokens import Permission, Principal

__all__ = ["TransitionBody", "router"]

router = APIRouter(prefix=API_PREFIX, responses=documented(401, 403, 404, 422, 503))

Reader = Annotated[Principal, Depends(require(Permission.inventory_read))]
Writer = Annotated[Principal, Depends(require(Permission.inventory_write))]


class TransitionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: inventory.State = Field(description="Target lifecycle state.")
    reason: str = Field(min_length=1, max_length=2000, description="Why; recorded and audited.")


def _outcome(outcome: TransitionOutcome, result: BaseModel) -> Any:
    """A refused transition is a 409 sent after the refusal's audit entry is committed."""
    if outcome.allowed:
        return result
    return error_response(
        409,
        "transition_refused",
        f"{outcome.request.subject}: {outcome.request.from_state} -> "
        f"{outcome.request.to_state} refused by lifecycle gates",
        details=[{"gate": r.gate, "reason": r.reason} for r in outcome.refusals],
    )


def _add_kind_routes(kind: inventory.Kind) -> None:
    base = f"/{kind.plural}"
    tags = [kind.plural]
    Create = kind.create
    Update = kind.update
    Out = kind.out

    @router.get(base, response_model=list[Out], tags=tags, summary=f"List {kind.plural}")
    def list_all(
        session: DbSession,
        _p: Reader,
        filters: Annotated[inventory.InventoryFilter, Query()],
    ) -> Any:
        return inventory.list_entities(session, kind, filters)

    @router.post(
        base,
        response_model=Out,
        status_code=201,
        tags=tags,
        summary=f"Create a {kind.name}",
        responses=documented(409),
    )
    def create(
        spec: Annotated[Create, Body()],  # type: ignore[valid-type]
        session: DbSession,
        ws: CurrentWorkspace,
        principal: Writer,
    ) -> Any:
        return inventory.create(session, ws.audit, kind, spec, actor=principal.actor)

    @router.get(base + "/{name}", response_model=Out, tags=tags, summary=f"Show a {kind.name}")
    def show(name: str, session: DbSession, _p: Reader) -> Any:
        return inventory.get(session, kind, name)

    @router.patch(
        base + "/{name}",
        response_model=Out,
        tags=tags,
        summary=f"Update a {kind.name}",
        responses=documented(409),
    )
    def update(
        name: str,
        changes: Annotated[Update, Body()],  # type: ignore[valid-type]
        session: DbSession,
        ws: CurrentWorkspace,
        principal: Writer,
    ) -> Any:
        return inventory.update(session, ws.audit, kind, name, changes, actor=principal.actor)

    @router.post(
        base + "/{name}/transitions",
        response_model=Out,
        tags=tags,
        summary=f"Move a {kind.name} to another lifecycle state",
        responses=documented(409),
    )
    def move(
        name: str,
        body: TransitionBody,
        session: DbSession,
        ws: CurrentWorkspace,
        principal: Writer,
    ) -> Any:
        result, outcome = inventory.transition(
            session, ws.audit, kind, name, body.to, actor=principal.actor, reason=body.reason
        )
        return _outcome(outcome, result)

    @router.get(
        base + "/{name}/history",
        response_model=list[inventory.TransitionOut],
        tags=tags,
        summary=f"Lifecycle history of a {kind.name}",
    )
    def history(name: str, session: DbSession, _p: Reader) -> Any:
        return inventory.history(session, kind, name)

    if kind.version_create is None or kind.version_out is None:
        return
    VersionCreate = kind.version_create
    VersionOut = kind.version_out

    @router.get(
        base + "/{name}/versions",
        response_model=list[VersionOut],  # type: ignore[valid-type]
        tags=tags,
        summary=f"List the versions of a {kind.name}",
    )
    def versions(name: str, session: DbSession, _p: Reader) -> Any:
        return inventory.list_versions(session, kind, name)

    @router.post(
        base + "/{name}/versions",
        response_model=VersionOut,
        status_code=201,
        tags=tags,
        summary=f"Register an immutable version of a {kind.name}",
        responses=documented(409),
    )
    def add_version(
        name: str,
        spec: Annotated[VersionCreate, Body()],  # type: ignore[valid-type]
        session: DbSession,
        ws: CurrentWorkspace,
        principal: Writer,
    ) -> Any:
        return inventory.add_version(session, ws.audit, kind, name, spec, actor=principal.actor)

    @router.get(
        base + "/{name}/versions/{version}",
        response_model=VersionOut,
        tags=tags,
        summary=f"Show one version of a {kind.name}",
    )
    def show_version(name: str, version: str, session: DbSession, _p: Reader) -> Any:
        return inventory.get_version(session, kind, name, version)

    if kind.name != "model":
        return

    @router.post(
        base + "/{name}/versions/{version}/transitions",
        response_model=VersionOut,
        tags=tags,
        summary="Move a model version to another lifecycle state",
        responses=documented(409),
    )
    def move_version(
        name: str,
        version: str,
        body: TransitionBody,
        session: DbSession,
        ws: CurrentWorkspace,
        principal: Writer,
    ) -> Any:
        result, outcome = inventory.transition_version(
            session,
            ws.audit,
            kind,
            name,
            version,
            body.to,
            actor=principal.actor,
            reason=body.reason,
        )
        return _outcome(outcome, result)

    @router.get(
        base + "/{name}/versions/{version}/history",
        response_model=list[inventory.TransitionOut],
        tags=tags,
        summary="Lifecycle history of a model version",
    )
    def version_history(name: str, version: str, session: DbSession, _p: Reader) -> Any:
        return inventory.history(session, kind, name, version)


for _kind in inventory.KINDS.values():
    _add_kind_routes(_kind)
