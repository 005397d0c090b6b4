"""`/api/v1/events`: list events with filters (`events:read`) and post one (`events:write`),
through `stockade.core.events`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from stockade.api.auth import CurrentWorkspace, DbSession, require
from stockade.api.errors import documented
from stockade.api.routes import API_PREFIX, Timestamp
from stockade.core.events import Event, list_events
from stockade.core.tokens import Permission, Principal

__all__ = ["EventIn", "EventList", "EventOut", "router"]

router = APIRouter(
    prefix=f"{API_PREFIX}/events",
    tags=["events"],
    responses=documented(401, 403, 422, 503),
)

Severity = Literal["debug", "info", "warning", "error", "critical"]
MAX_PAYLOAD_DEPTH = 32
_MAX_ID = 2**63 - 1


def _printable(value: str) -> str:
    # Labels end up in indexes, logs and terminals: no control characters, no lone
    # surrogates (which no database text type stores).
    if not value.isprintable():
        raise ValueError("must contain only printable characters")
    return value


def _depth(value: Any, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def _storable(payload: dict[str, Any]) -> dict[str, Any]:
    if _depth(payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"nests deeper than {MAX_PAYLOAD_DEPTH} levels")
    try:
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not storable JSON ({exc})") from None
    return payload


Label = Annotated[str, AfterValidator(_printable)]
Kind = Annotated[Label, Field(min_length=1, max_length=100)]
Source = Annotated[Label, Field(min_length=1, max_length=200)]
Subject = Annotated[Label, Field(max_length=300)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="What happened, e.g. `gateway.request.blocked`.")
    source: Source | None = Field(
        default=None, description="Who emits it; defaults to the posting token's actor."
    )
    subject: Subject = Field(default="", description="What it is about, e.g. `endpoint:chat`.")
    severity: Severity = "info"
    payload: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(
        default_factory=dict, description="Free-form JSON object, at most 64 KiB."
    )


class EventOut(BaseModel):
    id: int
    kind: str
    source: str
    subject: str
    severity: str
    payload: dict[str, Any]
    at: Timestamp | None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            kind=event.kind,
            source=event.source,
            subject=event.subject,
            severity=event.severity,
            payload=event.payload,
            at=event.at,
        )


class EventList(BaseModel):
    events: list[EventOut] = Field(description="Newest first.")


@router.get("", summary="Events, newest first, filtered")
def get_events(
    _principal: Annotated[Principal, Depends(require(Permission.events_read))],
    session: DbSession,
    kind: Annotated[Kind | None, Query()] = None,
    source: Annotated[Source | None, Query()] = None,
    subject: Annotated[Subject | None, Query()] = None,
    min_severity: Annotated[Severity | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query(description="RFC 3339 with a zone.")] = None,
    after_id: Annotated[int | None, Query(ge=0, le=_MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    found = list_events(
        session,
        kind=kind,
        source=source,
        subject=subject,
        min_severity=min_severity,
        since=since,
        after_id=after_id,
        limit=limit,
    )
    return EventList(events=[EventOut.of(e) for e in found])


@router.post("", status_code=201, summary="Record one event", responses=documented(400, 413))
def post_event(
    body: EventIn,
    principal: Annotated[Principal, Depends(require(Permission.events_write))],
    session: DbSession,
    workspace: CurrentWorkspace,
) -> EventOut:
    event = workspace.events.publish(
        session,
        kind=body.kind,
        source=body.source or principal.actor,
        subject=body.subject,
        severity=body.severity,
        payload=body.payload,
    )
    return EventOut.of(event)
