"""Events: what the gateway and monitors emit, stored in the database and, when Redis is
configured, fanned out on a Redis stream so other replicas and monitors see them at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from stockade.core import clock
from stockade.core.errors import InvalidInput
from stockade.core.tables import EventRecord

__all__ = ["STREAM", "Event", "EventPublisher", "EventSeverity", "list_events"]

EventSeverity = Literal["debug", "info", "warning", "error", "critical"]
SEVERITIES: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
STREAM = "stockade:events"
STREAM_MAXLEN = 100_000
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    source: str
    subject: str
    severity: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None

    @classmethod
    def from_row(cls, row: EventRecord) -> Event:
        return cls(row.id, row.kind, row.source, row.subject, row.severity, row.payload, row.at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.source,
            "subject": self.subject,
            "severity": self.severity,
            "payload": self.payload,
            "at": clock.format_time(self.at) if self.at else None,
        }


class EventPublisher:
    """Stores events in the caller's transaction; after commit, copies them to Redis."""

    def __init__(self, redis_url: str | None = None, *, stream: str = STREAM) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self._redis: Any = None

    def _client(self) -> Any:
        if self._redis is None and self.redis_url:
            import redis

            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        return self._redis

    def publish(
        self,
        session: Session,
        *,
        kind: str,
        source: str,
        subject: str = "",
        severity: str = "info",
        payload: dict[str, Any] | None = None,
    ) -> Event:
        if not kind or len(kind) > 100:
            raise InvalidInput("event kind must be 1 to 100 characters")
        if not source or len(source) > 200:
            raise InvalidInput("event source must be 1 to 200 characters")
        if len(subject) > 300:
            raise InvalidInput("event subject must be at most 300 characters")
        if severity not in SEVERITIES:
            raise InvalidInput(f"event severity must be one of {', '.join(SEVERITIES)}")
        payload = payload or {}
        try:
            encoded = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"event payload is not JSON: {exc}") from exc
        if len(encoded) > MAX_PAYLOAD_BYTES:
            raise InvalidInput(f"event payload exceeds {MAX_PAYLOAD_BYTES} bytes")
        row = EventRecord(
            kind=kind, source=source, subject=subject, severity=severity, payload=payload
        )
        session.add(row)
        session.flush()
        event = Event.from_row(row)
        if self.redis_url:
            sa_event.listen(session, "after_commit", lambda _s: self._fan_out(event), once=True)
        return event

    def _fan_out(self, event: Event) -> None:
        import redis

        try:
            self._client().xadd(
                self.stream,
                {"event": json.dumps(event.to_json())},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except redis.RedisError:
            # The database row is the record; the stream is a fast path for live
            # subscribers, who re-read the table after any gap.
            return

    def read_stream(
        self, last_id: str = "0-0", count: int = 100, block_ms: int | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events on the Redis stream after `last_id`: (stream id, event JSON) pairs."""
        client = self._client()
        if client is None:
            raise InvalidInput("no Redis configured (set STOCKADE_REDIS_URL)")
        answer = client.xread({self.stream: last_id}, count=count, block=block_ms)
        out: list[tuple[str, dict[str, Any]]] = []
        for _stream, messages in answer or []:
            for message_id, fields in messages:
                out.append((message_id.decode(), json.loads(fields[b"event"])))
        return out

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def list_events(
    session: Session,
    *,
    kind: str | None = None,
    source: str | None = None,
    subject: str | None = None,
    min_severity: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Event]:
    """Events newest first, filtered."""
    query = select(EventRecord).order_by(EventRecord.id.desc()).limit(max(1, min(limit, 10_000)))
    if kind:
        query = query.where(EventRecord.kind == kind)
    if source:
        query = query.where(EventRecord.source == source)
    if subject:
        query = query.where(EventRecord.subject == subject)
    if min_severity:
        if min_severity not in SEVERITIES:
            raise InvalidInput(f"severity must be one of {', '.join(SEVERITIES)}")
        query = query.where(EventRecord.severity.in_(SEVERITIES[SEVERITIES.index(min_severity) :]))
    if since:
        query = query.where(EventRecord.at >= since)
    if after_id is not None:
        query = query.where(EventRecord.id > after_id)
    return [Event.from_row(row) for row in session.scalars(query)]
