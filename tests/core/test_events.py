"""Events: stored in the caller's transaction, filtered on read, fanned out on Redis only
after commit, and never lost when Redis is down."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis

from stockade.core import clock
from stockade.core.db import Database
from stockade.core.errors import InvalidInput
from stockade.core.events import EventPublisher, list_events


def test_publish_and_filter(database: Database) -> None:
    publisher = EventPublisher()
    with database.session() as s:
        publisher.publish(s, kind="request", source="gateway", subject="model:a", payload={"n": 1})
        publisher.publish(s, kind="drift", source="monitor", subject="model:a", severity="warning")
        publisher.publish(s, kind="drift", source="monitor", subject="model:b", severity="critical")
    with database.session() as s:
        assert [e.kind for e in list_events(s)] == ["drift", "drift", "request"]
        assert [e.subject for e in list_events(s, kind="drift")] == ["model:b", "model:a"]
        assert len(list_events(s, min_severity="warning")) == 2
        assert [e.severity for e in list_events(s, min_severity="error")] == ["critical"]
        assert list_events(s, source="gateway")[0].payload == {"n": 1}
        first = list_events(s)[-1]
        assert [e.kind for e in list_events(s, after_id=first.id)] == ["drift", "drift"]
        future = clock.now() + timedelta(hours=1)
        assert list_events(s, since=future) == []
        assert len(list_events(s, limit=1)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "k" * 101}, "kind"),
        ({"source": ""}, "source"),
        ({"severity": "loud"}, "severity"),
        ({"payload": {"x": float("nan")}}, "JSON"),
        ({"payload": {"x": object()}}, "JSON"),
        ({"payload": {"x": "y" * 70_000}}, "exceeds"),
    ],
)
def test_bad_events_are_refused(database: Database, kwargs: dict, message: str) -> None:
    values = {"kind": "k", "source": "s", **kwargs}
    with pytest.raises(InvalidInput, match=message), database.session() as s:
        EventPublisher().publish(s, **values)


@pytest.mark.redis
def test_fan_out_on_redis_after_commit_only(database: Database, redis_url: str) -> None:
    stream = f"stockade:test:{uuid.uuid4().hex}"
    publisher = EventPublisher(redis_url, stream=stream)
    try:
        with database.session() as s:
            stored = publisher.publish(s, kind="alert", source="monitor", payload={"a": 1})
        with pytest.raises(RuntimeError), database.session() as s:
            publisher.publish(s, kind="never", source="monitor")
            raise RuntimeError("roll back")
        messages = publisher.read_stream()
        assert [m["kind"] for _id, m in messages] == ["alert"]
        assert messages[0][1]["id"] == stored.id
        with database.session() as s:
            assert [e.kind for e in list_events(s)] == ["alert"]
    finally:
        redis.Redis.from_url(redis_url).delete(stream)
        publisher.close()


def test_redis_down_keeps_the_stored_event(database: Database) -> None:
    publisher = EventPublisher("redis://127.0.0.1:1/0", stream="x")
    with database.session() as s:
        publisher.publish(s, kind="alert", source="monitor")
    with database.session() as s:
        assert [e.kind for e in list_events(s)] == ["alert"]
