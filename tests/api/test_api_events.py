"""`/api/v1/events`: posting events as a service, listing them with every filter, refusing
bad input, and fuzzing the POST body: never a 5xx, never anything but JSON.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.core import clock
from stockade.core.tokens import Role

JSON = "application/json"
T0 = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)
FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_a_service_posts_an_event(client: TestClient, tokens) -> None:
    with clock.frozen(T0):
        response = client.post(
            "/api/v1/events",
            json={
                "kind": "gateway.request.blocked",
                "subject": "endpoint:chat",
                "severity": "warning",
                "payload": {"rule": "prompt-injection", "score": 0.93, "tags": ["a", "b"]},
            },
            headers=tokens.headers(Role.service),
        )
    assert response.status_code == 201, response.text
    event = response.json()
    assert event == {
        "id": event["id"],
        "kind": "gateway.request.blocked",
        "source": f"token:{tokens.ids[Role.service]}",
        "subject": "endpoint:chat",
        "severity": "warning",
        "payload": {"rule": "prompt-injection", "score": 0.93, "tags": ["a", "b"]},
        "at": clock.format_time(T0),
    }
    listed = client.get("/api/v1/events", headers=tokens.headers(Role.auditor)).json()["events"]
    assert listed == [event]


def _post(client: TestClient, tokens, **event: object) -> int:
    response = client.post("/api/v1/events", json=event, headers=tokens.headers(Role.service))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_listing_filters(client: TestClient, tokens) -> None:
    with clock.frozen(T0):
        a = _post(
            client, tokens, kind="drift", source="monitor", subject="model:m1", severity="info"
        )
    with clock.frozen(T0 + timedelta(hours=1)):
        b = _post(
            client, tokens, kind="drift", source="monitor", subject="model:m2", severity="error"
        )
    with clock.frozen(T0 + timedelta(hours=2)):
        c = _post(
            client,
            tokens,
            kind="blocked",
            source="gateway",
            subject="model:m1",
            severity="critical",
        )
        d = _post(client, tokens, kind="blocked", source="gateway", severity="debug")

    def ids(**params: object) -> list[int]:
        response = client.get(
            "/api/v1/events", params=params, headers=tokens.headers(Role.engineer)
        )
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["events"]]

    assert ids() == [d, c, b, a]
    assert ids(kind="drift") == [b, a]
    assert ids(source="gateway") == [d, c]
    assert ids(subject="model:m1") == [c, a]
    assert ids(min_severity="error") == [c, b]
    assert ids(min_severity="debug") == [d, c, b, a]
    assert ids(since=clock.format_time(T0 + timedelta(minutes=30))) == [d, c, b]
    assert ids(since="2031-05-01T11:00:00+02:00") == [d, c, b, a]  # 09:00 UTC, inclusive
    assert ids(since="2031-05-01T11:00:00.000001+02:00") == [d, c, b]
    assert ids(after_id=b) == [d, c]
    assert ids(limit=1) == [d]
    assert ids(kind="drift", min_severity="warning", limit=5) == [b]
    assert ids(kind="nothing-of-this-kind") == []


@pytest.mark.parametrize(
    "params",
    [
        {"min_severity": "loud"},
        {"since": "yesterday"},
        {"since": "2031-05-01T09:00:00"},  # no zone
        {"limit": 0},
        {"limit": 100_000},
        {"limit": "many"},
        {"after_id": -1},
        {"after_id": 2**64},
        {"kind": "x" * 101},
        {"subject": "bad\x00subject"},
    ],
)
def test_listing_refuses_bad_filters(
    client: TestClient, tokens, params: dict, expect_error
) -> None:
    response = client.get("/api/v1/events", params=params, headers=tokens.headers(Role.auditor))
    expect_error(response, 422, "invalid_input")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"kind": ""}, "kind"),
        ({"kind": "k" * 101}, "kind"),
        ({"kind": "line\nbreak"}, "printable"),
        ({"kind": "x", "source": "s" * 201}, "source"),
        ({"kind": "x", "subject": "s" * 301}, "subject"),
        ({"kind": "x", "subject": "\ud800"}, "printable"),
        ({"kind": "x", "payload": {"big": "a" * (70 * 1024)}}, "exceeds"),
        ({"kind": "x", "payload": {"key": "\udfff"}}, "storable"),
        ({"kind": "x", "payload": json.loads('{"a": ' + "[" * 40 + "]" * 40 + "}")}, "deeper"),
    ],
)
def test_posting_refuses_bad_events(
    client: TestClient, tokens, body: dict, fragment: str, expect_error
) -> None:
    response = client.post(
        "/api/v1/events",
        content=json.dumps(body).encode(),  # ASCII-escaped, so lone surrogates travel too
        headers={**tokens.headers(Role.service), "Content-Type": JSON},
    )
    error = expect_error(response, 422, "invalid_input")
    assert fragment in error["message"] + json.dumps(error.get("details"))
    assert client.get("/api/v1/events", headers=tokens.headers(Role.auditor)).json()["events"] == []


def test_nan_in_the_payload_is_refused(client: TestClient, tokens, expect_error) -> None:
    response = client.post(
        "/api/v1/events",
        content=b'{"kind": "x", "payload": {"score": NaN}}',
        headers={**tokens.headers(Role.service), "Content-Type": JSON},
    )
    expect_error(response, 422, "invalid_input")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
event_like = st.fixed_dictionaries(
    {"kind": st.text(max_size=120)},
    optional={
        "source": st.text(max_size=220) | st.none(),
        "subject": st.text(max_size=320),
        "severity": st.sampled_from(["debug", "info", "warning", "error", "critical"]) | st.text(),
        "payload": json_values,
        "extra": json_values,
    },
)


def _assert_json_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"] == JSON
    body = response.json()
    if response.status_code == 201:
        assert set(body) == {"id", "kind", "source", "subject", "severity", "payload", "at"}
    else:
        assert response.status_code in {400, 422}, response.text
        assert set(body) == {"error"}
        assert body["error"]["code"] in {"malformed_json", "invalid_input", "bad_request"}


@FUZZ
@given(body=st.one_of(event_like, json_values))
def test_fuzzed_json_bodies_get_json_answers(client: TestClient, tokens, body: object) -> None:
    response = client.post("/api/v1/events", json=body, headers=tokens.headers(Role.service))
    _assert_json_answer(response)
    if response.status_code == 201:
        stored = response.json()
        assert isinstance(body, dict)
        assert stored["kind"] == body["kind"]
        assert stored["payload"] == (body.get("payload") or {})


@FUZZ
@given(raw=st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_fuzzed_raw_bodies_get_json_answers(client: TestClient, tokens, raw: bytes) -> None:
    response = client.post(
        "/api/v1/events",
        content=raw,
        headers={**tokens.headers(Role.service), "Content-Type": JSON},
    )
    _assert_json_answer(response)
