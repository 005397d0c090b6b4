"""`/api/v1/systems|models|datasets|endpoints` over HTTP: create, list with every filter, show,
update, versions, lifecycle moves through gates, roles, audit entries, and fuzzed bodies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from stockade.core import lifecycle
from stockade.core.inventory import KINDS, RISK_TIERS
from stockade.core.lifecycle import STATES, GateRefusal, TransitionRequest
from stockade.core.tokens import Role

from .conftest import Tokens

API = "/api/v1"
JSON = "application/json"
FUZZ = settings(max_examples=60, deadline=None)  # on a function inside the test: no fixtures
PLURALS = [kind.plural for kind in KINDS.values()]
VERSIONED = ["models", "datasets"]


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def create(
    client: TestClient, tokens: Tokens, plural: str, role: Role = Role.engineer, **body: Any
) -> dict[str, Any]:
    response = client.post(f"{API}/{plural}", json=body, headers=tokens.headers(role))
    assert response.status_code == 201, response.text
    return response.json()


def names(client: TestClient, tokens: Tokens, plural: str, **params: Any) -> list[str]:
    response = client.get(f"{API}/{plural}", params=params, headers=tokens.headers(Role.auditor))
    assert response.status_code == 200, response.text
    return [entity["name"] for entity in response.json()]


def move(
    client: TestClient, tokens: Tokens, path: str, to: str, reason: str = "checked"
) -> httpx.Response:
    return client.post(
        f"{API}/{path}/transitions",
        json={"to": to, "reason": reason},
        headers=tokens.headers(Role.engineer),
    )


def walk(client: TestClient, tokens: Tokens, path: str, *states: str) -> dict[str, Any]:
    """Move `path` through `states` one legal step at a time; the last answer."""
    body: dict[str, Any] = {}
    for state in states:
        response = move(client, tokens, path, state, f"ready for {state}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["lifecycle_state"] == state
    return body


def audit_entries(client: TestClient, tokens: Tokens, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", params=params, headers=tokens.headers(Role.auditor))
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def add_version(
    client: TestClient, tokens: Tokens, plural: str, name: str, version: str, **extra: Any
) -> httpx.Response:
    body = {"version": version, "digest": digest(f"{name}@{version}"), "size": 10, **extra}
    return client.post(
        f"{API}/{plural}/{name}/versions", json=body, headers=tokens.headers(Role.engineer)
    )


@pytest.fixture
def gates() -> Iterator[None]:
    """Lifecycle gates registered by the test are removed afterwards, whatever happens."""
    lifecycle.clear_gates()
    yield
    lifecycle.clear_gates()


# -- create, show, list -------------------------------------------------------------------


def test_create_and_show_every_kind_with_references(client: TestClient, tokens: Tokens) -> None:
    system = create(
        client,
        tokens,
        "systems",
        name="payments",
        description="card payments",
        owner="risk-team",
        risk_tier="high",
        tags={"team": "risk"},
    )
    assert system == {
        "id": system["id"],
        "name": "payments",
        "description": "card payments",
        "owner": "risk-team",
        "risk_tier": "high",
        "lifecycle_state": "draft",
        "tags": {"team": "risk"},
        "created_at": system["created_at"],
        "updated_at": system["updated_at"],
    }
    assert len(system["id"]) == 32
    model = create(
        client, tokens, "models", name="fraud", system="payments", task="scoring", framework="xgb"
    )
    assert (model["system"], model["task"], model["framework"]) == ("payments", "scoring", "xgb")
    assert model["latest_version"] is None
    dataset = create(
        client,
        tokens,
        "datasets",
        name="txns",
        system="payments",
        source_uri="s3://bucket/txns",
        license="internal",
    )
    assert (dataset["system"], dataset["source_uri"], dataset["license"]) == (
        "payments",
        "s3://bucket/txns",
        "internal",
    )
    endpoint = create(
        client,
        tokens,
        "endpoints",
        name="score-api",
        system="payments",
        model="fraud",
        url="https://score.internal/v1",
    )
    assert (endpoint["system"], endpoint["model"], endpoint["url"]) == (
        "payments",
        "fraud",
        "https://score.internal/v1",
    )
    for plural, created in [
        ("systems", system),
        ("models", model),
        ("datasets", dataset),
        ("endpoints", endpoint),
    ]:
        for ref in (created["name"], created["id"]):
            shown = client.get(f"{API}/{plural}/{ref}", headers=tokens.headers(Role.auditor))
            assert shown.status_code == 200, shown.text
            assert shown.json() == created


def test_names_are_unique_per_kind(client: TestClient, tokens: Tokens, expect_error) -> None:
    create(client, tokens, "systems", name="shared")
    error = expect_error(
        client.post(
            f"{API}/systems", json={"name": "shared"}, headers=tokens.headers(Role.engineer)
        ),
        409,
        "conflict",
    )
    assert "shared" in error["message"]
    create(client, tokens, "models", name="shared")  # another kind: no clash
    expect_error(
        client.post(
            f"{API}/models", json={"name": "shared"}, headers=tokens.headers(Role.engineer)
        ),
        409,
        "conflict",
    )
    assert names(client, tokens, "systems") == ["shared"]


@pytest.mark.parametrize(
    ("plural", "body", "missing"),
    [
        ("models", {"name": "m", "system": "nowhere"}, "nowhere"),
        ("datasets", {"name": "d", "system": "nowhere"}, "nowhere"),
        ("endpoints", {"name": "e", "system": "nowhere"}, "nowhere"),
        ("endpoints", {"name": "e", "model": "ghost"}, "ghost"),
    ],
)
def test_references_to_unknown_names_are_404(
    client: TestClient, tokens: Tokens, plural: str, body: dict, missing: str, expect_error
) -> None:
    response = client.post(f"{API}/{plural}", json=body, headers=tokens.headers(Role.engineer))
    error = expect_error(response, 404, "not_found")
    assert missing in error["message"]
    assert names(client, tokens, plural) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/systems/nope"),
        ("PATCH", "/systems/nope"),
        ("GET", "/models/nope"),
        ("GET", "/datasets/nope/versions"),
        ("POST", "/models/nope/versions"),
        ("GET", "/models/nope/versions/1"),
        ("GET", "/endpoints/nope/history"),
        ("POST", "/endpoints/nope/transitions"),
        ("POST", "/models/nope/versions/1/transitions"),
    ],
)
def test_unknown_names_are_404(
    client: TestClient, tokens: Tokens, method: str, path: str, expect_error
) -> None:
    bodies = {
        "PATCH": {"owner": "x"},
        "POST": {"to": "development", "reason": "r"}
        if path.endswith("transitions")
        else {"version": "1", "digest": digest("x"), "size": 1},
    }
    response = client.request(
        method, API + path, json=bodies.get(method), headers=tokens.headers(Role.engineer)
    )
    error = expect_error(response, 404, "not_found")
    assert "nope" in error["message"]


def test_an_unknown_version_of_a_known_model_is_404(
    client: TestClient, tokens: Tokens, expect_error
) -> None:
    create(client, tokens, "models", name="m")
    for path in ("/models/m/versions/9.9", "/models/m/versions/9.9/history"):
        error = expect_error(
            client.get(API + path, headers=tokens.headers(Role.auditor)), 404, "not_found"
        )
        assert "model:m@9.9" in error["message"]


def test_list_filters(client: TestClient, tokens: Tokens) -> None:
    # Names whose order is the same under any collation (punctuation never decides it).
    create(client, tokens, "systems", name="alpha", owner="ops", risk_tier="high")
    create(client, tokens, "systems", name="beta", owner="ml", risk_tier="minimal")
    create(client, tokens, "models", name="ma_one", system="alpha", owner="ops", tags={"env": "p"})
    create(client, tokens, "models", name="mb-two", system="alpha", tags={"env": "dev"})
    create(client, tokens, "models", name="mc3", system="beta", risk_tier="high")
    create(client, tokens, "models", name="loose", tags={"env": "", "gpu": "a100"})
    walk(client, tokens, "models/mc3", "development")

    assert names(client, tokens, "systems") == ["alpha", "beta"]
    assert names(client, tokens, "systems", owner="ml") == ["beta"]
    assert names(client, tokens, "systems", risk_tier="high") == ["alpha"]
    assert names(client, tokens, "models") == ["loose", "ma_one", "mb-two", "mc3"]
    assert names(client, tokens, "models", owner="ops") == ["ma_one"]
    assert names(client, tokens, "models", owner="nobody") == []
    assert names(client, tokens, "models", risk_tier="high") == ["mc3"]
    assert names(client, tokens, "models", lifecycle_state="development") == ["mc3"]
    assert names(client, tokens, "models", lifecycle_state="draft") == ["loose", "ma_one", "mb-two"]
    assert names(client, tokens, "models", system="alpha") == ["ma_one", "mb-two"]
    assert names(client, tokens, "models", system="beta") == ["mc3"]
    assert names(client, tokens, "models", system="nowhere") == []
    assert names(client, tokens, "models", tag="env=p") == ["ma_one"]
    assert names(client, tokens, "models", tag="env") == ["loose", "ma_one", "mb-two"]
    assert names(client, tokens, "models", tag="env=") == ["loose"]
    assert names(client, tokens, "models", tag="gpu") == ["loose"]
    assert names(client, tokens, "models", tag="absent") == []
    assert names(client, tokens, "models", q="m") == ["ma_one", "mb-two", "mc3"]
    assert names(client, tokens, "models", q="c3") == ["mc3"]
    assert names(client, tokens, "models", q="-") == ["mb-two"]
    # LIKE wildcards in `q` are literal characters, not patterns.
    assert names(client, tokens, "models", q="_") == ["ma_one"]
    assert names(client, tokens, "models", q="%") == []
    assert names(client, tokens, "models", system="alpha", tag="env=dev") == ["mb-two"]
    assert names(client, tokens, "models", limit=2) == ["loose", "ma_one"]
    assert names(client, tokens, "models", limit=2, offset=2) == ["mb-two", "mc3"]
    assert names(client, tokens, "models", offset=4) == []
    assert names(client, tokens, "models", tag="env", limit=1, offset=1) == ["ma_one"]


@pytest.mark.parametrize(
    ("plural", "params"),
    [
        ("systems", {"colour": "red"}),
        ("models", {"name": "m"}),
        ("models", {"risk_tier": "extreme"}),
        ("datasets", {"lifecycle_state": "frozen"}),
        ("endpoints", {"limit": 0}),
        ("endpoints", {"limit": 1001}),
        ("models", {"limit": "all"}),
        ("models", {"offset": -1}),
        ("systems", {"system": "alpha"}),
    ],
)
def test_bad_filters_are_422(
    client: TestClient, tokens: Tokens, plural: str, params: dict, expect_error
) -> None:
    response = client.get(f"{API}/{plural}", params=params, headers=tokens.headers(Role.auditor))
    error = expect_error(response, 422, "invalid_input")
    assert next(iter(params)) in error["message"] + json.dumps(error.get("details"))


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plural", "body", "field"),
    [
        ("systems", {"name": "s", "colour": "red"}, "colour"),
        ("systems", {}, "name"),
        ("systems", {"name": ""}, "name"),
        ("systems", {"name": "has space"}, "name"),
        ("systems", {"name": "-leading-dash"}, "name"),
        ("systems", {"name": "x" * 201}, "name"),
        ("systems", {"name": 42}, "name"),
        ("systems", {"name": "s", "risk_tier": "extreme"}, "risk_tier"),
        ("systems", {"name": "s", "description": "d" * 4001}, "description"),
        ("systems", {"name": "s", "owner": ["a"]}, "owner"),
        ("systems", {"name": "s", "tags": ["a"]}, "tags"),
        ("systems", {"name": "s", "tags": {"k": 1}}, "tags"),
        ("systems", {"name": "s", "tags": {"": "v"}}, "tags"),
        ("systems", {"name": "s", "tags": {f"k{i}": "v" for i in range(51)}}, "tags"),
        ("models", {"name": "m", "system": "bad name"}, "system"),
        ("models", {"name": "m", "lifecycle_state": "production"}, "lifecycle_state"),
        ("datasets", {"name": "d", "source_uri": "u" * 2001}, "source_uri"),
        ("endpoints", {"name": "e", "url": None}, "url"),
        ("endpoints", {"name": "e", "id": "0" * 32}, "id"),
    ],
)
def test_invalid_create_bodies_are_422(
    client: TestClient, tokens: Tokens, plural: str, body: dict, field: str, expect_error
) -> None:
    response = client.post(f"{API}/{plural}", json=body, headers=tokens.headers(Role.engineer))
    error = expect_error(response, 422, "invalid_input")
    assert field in error["message"] + json.dumps(error.get("details"))
    assert names(client, tokens, plural) == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "nothing to update"),
        ({"name": "renamed"}, "name"),
        ({"lifecycle_state": "production"}, "lifecycle_state"),
        ({"owner": 7}, "owner"),
        ({"risk_tier": "extreme"}, "risk_tier"),
        ({"url": "u"}, "url"),  # a field of another kind
    ],
)
def test_invalid_updates_are_422_and_change_nothing(
    client: TestClient, tokens: Tokens, body: dict, fragment: str, expect_error
) -> None:
    before = create(client, tokens, "models", name="m", owner="ops")
    response = client.patch(f"{API}/models/m", json=body, headers=tokens.headers(Role.engineer))
    error = expect_error(response, 422, "invalid_input")
    assert fragment in error["message"] + json.dumps(error.get("details"))
    after = client.get(f"{API}/models/m", headers=tokens.headers(Role.auditor)).json()
    assert after == before


def test_non_json_and_malformed_bodies(client: TestClient, tokens: Tokens, expect_error) -> None:
    headers = tokens.headers(Role.engineer)
    expect_error(
        client.post(
            f"{API}/systems", content=b'{"name": ', headers={**headers, "Content-Type": JSON}
        ),
        400,
        "malformed_json",
    )
    expect_error(
        client.post(
            f"{API}/systems",
            content=b'{"name": "s"}',
            headers={**headers, "Content-Type": "text/plain"},
        ),
        400,
        "unsupported_media_type",
    )
    expect_error(client.post(f"{API}/systems", json=["s"], headers=headers), 422, "invalid_input")


# -- update -----------------------------------------------------------------------------


def test_update_changes_fields(client: TestClient, tokens: Tokens) -> None:
    model = create(client, tokens, "models", name="m", tags={"a": "1"})
    headers = tokens.headers(Role.engineer)
    updated = client.patch(
        f"{API}/models/m",
        json={"owner": "ml", "risk_tier": "limited", "task": "qa", "tags": {"b": "2"}},
        headers=headers,
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["owner"], body["risk_tier"], body["task"], body["tags"]) == (
        "ml",
        "limited",
        "qa",
        {"b": "2"},
    )
    assert (body["id"], body["name"], body["created_at"]) == (
        model["id"],
        "m",
        model["created_at"],
    )
    assert body["updated_at"] >= model["updated_at"]
    assert client.get(f"{API}/models/m", headers=headers).json() == body
    assert names(client, tokens, "models", owner="ml", tag="b=2") == ["m"]


@pytest.mark.parametrize(
    ("plural", "field", "referenced"),
    [
        ("models", "system", "systems"),
        ("datasets", "system", "systems"),
        ("endpoints", "system", "systems"),
        ("endpoints", "model", "models"),
    ],
)
def test_changing_a_reference_is_answered_stored_and_audited(
    client: TestClient, tokens: Tokens, plural: str, field: str, referenced: str
) -> None:
    create(client, tokens, referenced, name="old-home")
    create(client, tokens, referenced, name="new-home")
    create(client, tokens, plural, name="x", **{field: "old-home"})
    response = client.patch(
        f"{API}/{plural}/x", json={field: "new-home"}, headers=tokens.headers(Role.engineer)
    )
    assert response.status_code == 200, response.text
    assert response.json()[field] == "new-home"
    shown = client.get(f"{API}/{plural}/x", headers=tokens.headers(Role.auditor)).json()
    assert shown[field] == "new-home"
    singular = plural[:-1]
    updates = audit_entries(client, tokens, action=f"{singular}.update")
    assert [(e["subject"], e["details"]) for e in updates] == [
        (f"{singular}:x", {"changes": {field: {"from": "old-home", "to": "new-home"}}})
    ]


def test_update_to_an_unknown_reference_is_404_and_changes_nothing(
    client: TestClient, tokens: Tokens, expect_error
) -> None:
    before = create(client, tokens, "endpoints", name="e", owner="ops")
    response = client.patch(
        f"{API}/endpoints/e",
        json={"owner": "someone", "model": "ghost"},
        headers=tokens.headers(Role.engineer),
    )
    expect_error(response, 404, "not_found")
    assert client.get(f"{API}/endpoints/e", headers=tokens.headers(Role.auditor)).json() == before


# -- versions ---------------------------------------------------------------------------


@pytest.mark.parametrize("plural", VERSIONED)
def test_versions_register_list_show(client: TestClient, tokens: Tokens, plural: str) -> None:
    singular = plural[:-1]
    create(client, tokens, plural, name="thing")
    extra = {"row_count": 1200} if plural == "datasets" else {}
    first = add_version(
        client,
        tokens,
        plural,
        "thing",
        "1.0",
        format="safetensors",
        source_uri="s3://b/1",
        tags={"run": "7"},
        **extra,
    )
    assert first.status_code == 201, first.text
    v1 = first.json()
    assert v1[singular] == "thing"
    assert (v1["version"], v1["digest"], v1["size"], v1["format"]) == (
        "1.0",
        digest("thing@1.0"),
        10,
        "safetensors",
    )
    assert (v1["source_uri"], v1["tags"]) == ("s3://b/1", {"run": "7"})
    if plural == "datasets":
        assert v1["row_count"] == 1200
        assert "lifecycle_state" not in v1
    else:
        assert v1["lifecycle_state"] == "draft"
    second = add_version(client, tokens, plural, "thing", "1.1+build.2")
    assert second.status_code == 201, second.text
    headers = tokens.headers(Role.auditor)
    listed = client.get(f"{API}/{plural}/thing/versions", headers=headers).json()
    assert [v["version"] for v in listed] == ["1.0", "1.1+build.2"]
    assert listed[0] == v1
    shown = client.get(f"{API}/{plural}/thing/versions/1.0", headers=headers)
    assert shown.status_code == 200
    assert shown.json() == v1
    assert client.get(f"{API}/{plural}/thing", headers=headers).json()["latest_version"] == (
        "1.1+build.2"
    )


@pytest.mark.parametrize("plural", VERSIONED)
def test_versions_are_immutable(
    client: TestClient, tokens: Tokens, plural: str, expect_error
) -> None:
    create(client, tokens, plural, name="thing")
    original = add_version(client, tokens, plural, "thing", "1.0").json()
    other_bytes = client.post(
        f"{API}/{plural}/thing/versions",
        json={"version": "1.0", "digest": digest("tampered"), "size": 10},
        headers=tokens.headers(Role.engineer),
    )
    error = expect_error(other_bytes, 409, "conflict")
    assert "immutable" in error["message"]
    assert original["digest"] in error["message"]
    same = add_version(client, tokens, plural, "thing", "1.0")
    error = expect_error(same, 409, "conflict")
    assert "already exists" in error["message"]
    shown = client.get(
        f"{API}/{plural}/thing/versions/1.0", headers=tokens.headers(Role.auditor)
    ).json()
    assert shown == original


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "1", "digest": "sha256:" + "A" * 64, "size": 1}, "digest"),
        ({"version": "1", "digest": "md5:abc", "size": 1}, "digest"),
        ({"version": "1", "digest": digest("x"), "size": -1}, "size"),
        ({"version": "1", "digest": digest("x")}, "size"),
        ({"version": "../1", "digest": digest("x"), "size": 1}, "version"),
        ({"version": "1", "digest": digest("x"), "size": 1, "lifecycle_state": "x"}, "lifecycle"),
        ({"version": "1", "digest": digest("x"), "size": 1, "row_count": 3}, "row_count"),
    ],
)
def test_invalid_model_versions_are_422(
    client: TestClient, tokens: Tokens, body: dict, field: str, expect_error
) -> None:
    create(client, tokens, "models", name="m")
    response = client.post(
        f"{API}/models/m/versions", json=body, headers=tokens.headers(Role.engineer)
    )
    error = expect_error(response, 422, "invalid_input")
    assert field in error["message"] + json.dumps(error.get("details"))
    assert client.get(f"{API}/models/m/versions", headers=tokens.headers(Role.auditor)).json() == []


@pytest.mark.parametrize(
    ("plural", "extra"),
    [
        ("models", {"size": 2**63}),
        ("datasets", {"size": 2**63}),
        ("datasets", {"size": 1, "row_count": 2**63}),
        ("models", {"size": 1e20}),
    ],
)
def test_sizes_beyond_64_bits_are_422(
    client: TestClient, tokens: Tokens, plural: str, extra: dict, expect_error
) -> None:
    create(client, tokens, plural, name="thing")
    body = {"version": "1", "digest": digest("1"), **extra}
    response = client.post(
        f"{API}/{plural}/thing/versions", json=body, headers=tokens.headers(Role.engineer)
    )
    error = expect_error(response, 422, "invalid_input")
    assert any(key in error["message"] for key in extra if key != "size" or len(extra) == 1)
    largest = dict.fromkeys(extra, 2**63 - 1)
    fits = client.post(
        f"{API}/{plural}/thing/versions",
        json={**body, "version": "2", **largest},
        headers=tokens.headers(Role.engineer),
    )
    assert fits.status_code == 201, fits.text
    assert all(fits.json()[key] == 2**63 - 1 for key in extra)


def test_systems_and_endpoints_have_no_versions(client: TestClient, tokens: Tokens) -> None:
    create(client, tokens, "systems", name="s")
    create(client, tokens, "endpoints", name="e")
    for plural, name in (("systems", "s"), ("endpoints", "e")):
        response = client.get(
            f"{API}/{plural}/{name}/versions", headers=tokens.headers(Role.auditor)
        )
        assert response.status_code in (404, 405), response.text
        assert response.json()["error"]["code"] in ("not_found", "method_not_allowed")


def test_model_version_transitions_and_history(client: TestClient, tokens: Tokens) -> None:
    create(client, tokens, "models", name="m")
    assert add_version(client, tokens, "models", "m", "1").status_code == 201
    assert add_version(client, tokens, "models", "m", "2").status_code == 201
    last = walk(client, tokens, "models/m/versions/1", "development", "validated")
    assert (last["model"], last["version"], last["lifecycle_state"]) == ("m", "1", "validated")
    headers = tokens.headers(Role.auditor)
    history = client.get(f"{API}/models/m/versions/1/history", headers=headers).json()
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        ("draft", "development"),
        ("development", "validated"),
    ]
    assert [h["reason"] for h in history] == ["ready for development", "ready for validated"]
    assert {h["actor"] for h in history} == {f"token:{tokens.ids[Role.engineer]}"}
    # The version's moves are its own: the model and the other version stay where they were.
    assert client.get(f"{API}/models/m", headers=headers).json()["lifecycle_state"] == "draft"
    assert client.get(f"{API}/models/m/history", headers=headers).json() == []
    assert client.get(f"{API}/models/m/versions/2/history", headers=headers).json() == []
    other = client.get(f"{API}/models/m/versions/2", headers=headers).json()
    assert other["lifecycle_state"] == "draft"


def test_dataset_versions_have_no_lifecycle_routes(client: TestClient, tokens: Tokens) -> None:
    create(client, tokens, "datasets", name="d")
    assert add_version(client, tokens, "datasets", "d", "1").status_code == 201
    moved = client.post(
        f"{API}/datasets/d/versions/1/transitions",
        json={"to": "development", "reason": "r"},
        headers=tokens.headers(Role.engineer),
    )
    assert moved.status_code in (404, 405), moved.text
    assert moved.json()["error"]["code"] in ("not_found", "method_not_allowed")
    history = client.get(
        f"{API}/datasets/d/versions/1/history", headers=tokens.headers(Role.auditor)
    )
    assert history.status_code in (404, 405), history.text


# -- lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize("plural", PLURALS)
def test_a_legal_walk_to_production_is_recorded(
    client: TestClient, tokens: Tokens, plural: str
) -> None:
    create(client, tokens, plural, name="x")
    walk(client, tokens, f"{plural}/x", "development", "validated", "staging", "production")
    history = client.get(f"{API}/{plural}/x/history", headers=tokens.headers(Role.auditor)).json()
    assert [(h["from_state"], h["to_state"]) for h in history] == [
        ("draft", "development"),
        ("development", "validated"),
        ("validated", "staging"),
        ("staging", "production"),
    ]
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    assert names(client, tokens, plural, lifecycle_state="production") == ["x"]


@pytest.mark.parametrize(
    ("path_to", "target"),
    [
        ((), "production"),
        ((), "staging"),
        (("development",), "staging"),
        (("development", "validated", "staging", "production"), "development"),
        ((), "draft"),
        ((), "limbo"),
    ],
)
def test_illegal_moves_are_409_and_change_nothing(
    client: TestClient, tokens: Tokens, path_to: tuple, target: str, expect_error
) -> None:
    create(client, tokens, "systems", name="s")
    walk(client, tokens, "systems/s", *path_to)
    here = path_to[-1] if path_to else "draft"
    response = move(client, tokens, "systems/s", target)
    if target in STATES:
        error = expect_error(response, 409, "illegal_transition")
        assert here in error["message"]
    else:
        expect_error(response, 422, "invalid_input")
    headers = tokens.headers(Role.auditor)
    assert client.get(f"{API}/systems/s", headers=headers).json()["lifecycle_state"] == here
    assert len(client.get(f"{API}/systems/s/history", headers=headers).json()) == len(path_to)


@pytest.mark.parametrize(
    "body",
    [
        {"to": "development"},
        {"to": "development", "reason": ""},
        {"to": "development", "reason": "   "},
        {"to": "development", "reason": "r" * 2001},
        {"to": "development", "reason": "r", "force": True},
        {"reason": "r"},
    ],
)
def test_transition_bodies_are_validated(
    client: TestClient, tokens: Tokens, body: dict, expect_error
) -> None:
    create(client, tokens, "systems", name="s")
    response = client.post(
        f"{API}/systems/s/transitions", json=body, headers=tokens.headers(Role.engineer)
    )
    expect_error(response, 422, "invalid_input")
    state = client.get(f"{API}/systems/s", headers=tokens.headers(Role.auditor)).json()
    assert state["lifecycle_state"] == "draft"


@pytest.mark.parametrize("plural", PLURALS)
def test_retirement_is_final(client: TestClient, tokens: Tokens, plural: str, expect_error) -> None:
    create(client, tokens, plural, name="old")
    walk(client, tokens, f"{plural}/old", "development", "validated", "staging", "production")
    walk(client, tokens, f"{plural}/old", "retired")
    for target in ("draft", "development", "production", "retired"):
        error = expect_error(
            move(client, tokens, f"{plural}/old", target), 409, "illegal_transition"
        )
        assert "retired" in error["message"]
    headers = tokens.headers(Role.engineer)
    error = expect_error(
        client.patch(f"{API}/{plural}/old", json={"owner": "x"}, headers=headers), 409, "conflict"
    )
    assert "retired" in error["message"]
    if plural in VERSIONED:
        expect_error(add_version(client, tokens, plural, "old", "1"), 409, "conflict")
    shown = client.get(f"{API}/{plural}/old", headers=headers).json()
    assert (shown["lifecycle_state"], shown["owner"]) == ("retired", "")
    assert shown.get("latest_version") is None
    history = client.get(f"{API}/{plural}/old/history", headers=headers).json()
    assert [h["to_state"] for h in history][-1] == "retired"
    assert len(history) == 5


def test_a_refusing_gate_is_409_audited_and_changes_nothing(
    client: TestClient, tokens: Tokens, gates: None, expect_error
) -> None:
    seen: list[TransitionRequest] = []

    def needs_evaluation(session: Session, request: TransitionRequest) -> GateRefusal | None:
        seen.append(request)
        if request.to_state == "production":
            return GateRefusal("evaluation", "no passing red-team evaluation on record")
        return None

    lifecycle.register_gate("evaluation", needs_evaluation)
    create(client, tokens, "models", name="m")
    walk(client, tokens, "models/m", "development", "validated", "staging")
    assert [r.to_state for r in seen] == ["development", "validated", "staging"]

    response = move(client, tokens, "models/m", "production", "launch")
    error = expect_error(response, 409, "transition_refused")
    assert error["details"] == [
        {"gate": "evaluation", "reason": "no passing red-team evaluation on record"}
    ]
    assert "model:m" in error["message"]
    assert "staging -> production" in error["message"]
    request = seen[-1]
    assert (request.subject, request.from_state, request.to_state) == (
        "model:m",
        "staging",
        "production",
    )
    assert (request.actor, request.reason, request.entity_type) == (
        f"token:{tokens.ids[Role.engineer]}",
        "launch",
        "model",
    )

    headers = tokens.headers(Role.auditor)
    assert client.get(f"{API}/models/m", headers=headers).json()["lifecycle_state"] == "staging"
    history = client.get(f"{API}/models/m/history", headers=headers).json()
    assert [h["to_state"] for h in history] == ["development", "validated", "staging"]
    refused = audit_entries(client, tokens, action="lifecycle.refused")
    assert len(refused) == 1
    assert refused[0]["subject"] == "model:m"
    assert refused[0]["actor"] == f"token:{tokens.ids[Role.engineer]}"
    assert refused[0]["details"] == {
        "from": "staging",
        "to": "production",
        "reason": "launch",
        "refusals": [{"gate": "evaluation", "reason": "no passing red-team evaluation on record"}],
    }
    moves = audit_entries(client, tokens, action="lifecycle.transition", subject="model:m")
    assert [e["details"]["to"] for e in moves] == ["development", "validated", "staging"]

    lifecycle.unregister_gate("evaluation")
    assert move(client, tokens, "models/m", "production").status_code == 200


def test_gates_see_model_version_moves_too(
    client: TestClient, tokens: Tokens, gates: None, expect_error
) -> None:
    def frozen(session: Session, request: TransitionRequest) -> GateRefusal | None:
        if request.entity_type == "model_version":
            return GateRefusal("change-freeze", f"{request.subject} is frozen")
        return None

    lifecycle.register_gate("change-freeze", frozen)
    create(client, tokens, "models", name="m")
    assert add_version(client, tokens, "models", "m", "2.0").status_code == 201
    error = expect_error(
        move(client, tokens, "models/m/versions/2.0", "development"), 409, "transition_refused"
    )
    assert error["details"] == [{"gate": "change-freeze", "reason": "model:m@2.0 is frozen"}]
    version = client.get(f"{API}/models/m/versions/2.0", headers=tokens.headers(Role.auditor))
    assert version.json()["lifecycle_state"] == "draft"
    refused = audit_entries(client, tokens, action="lifecycle.refused", subject="model:m@2.0")
    assert len(refused) == 1
    assert move(client, tokens, "models/m", "development").status_code == 200


# -- roles and audit --------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.auditor, Role.service])
def test_readers_can_read_but_not_write(
    client: TestClient, tokens: Tokens, role: Role, expect_error
) -> None:
    create(client, tokens, "models", name="m")
    assert add_version(client, tokens, "models", "m", "1").status_code == 201
    headers = tokens.headers(role)
    for path in (
        "/models",
        "/models/m",
        "/models/m/history",
        "/models/m/versions",
        "/models/m/versions/1",
        "/models/m/versions/1/history",
        "/systems",
        "/datasets",
        "/endpoints",
    ):
        assert client.get(API + path, headers=headers).status_code == 200, path
    size = client.get(f"{API}/audit", headers=tokens.headers(Role.admin)).json()["size"]
    writes = [
        ("POST", "/systems", {"name": "s"}),
        ("POST", "/models", {"name": "m2"}),
        ("PATCH", "/models/m", {"owner": "x"}),
        ("POST", "/models/m/transitions", {"to": "development", "reason": "r"}),
        ("POST", "/models/m/versions", {"version": "2", "digest": digest("2"), "size": 1}),
        ("POST", "/models/m/versions/1/transitions", {"to": "development", "reason": "r"}),
    ]
    for method, path, body in writes:
        error = expect_error(
            client.request(method, API + path, json=body, headers=headers), 403, "forbidden"
        )
        assert "inventory:write" in error["message"]
    assert client.get(f"{API}/audit", headers=tokens.headers(Role.admin)).json()["size"] == size
    assert names(client, tokens, "models") == ["m"]
    assert names(client, tokens, "systems") == []


def test_no_token_is_401(client: TestClient, expect_error) -> None:
    expect_error(client.get(f"{API}/systems"), 401, "unauthorized")
    expect_error(client.post(f"{API}/systems", json={"name": "s"}), 401, "unauthorized")


@pytest.mark.parametrize("role", [Role.engineer, Role.admin])
def test_every_write_leaves_its_audit_entry(client: TestClient, tokens: Tokens, role: Role) -> None:
    actor = f"token:{tokens.ids[role]}"
    headers = tokens.headers(role)
    create(client, tokens, "systems", role, name="s", owner="ops", tags={"k": "v"})
    create(client, tokens, "models", role, name="m", system="s")
    client.patch(f"{API}/models/m", json={"owner": "ml", "task": "qa"}, headers=headers)
    client.patch(f"{API}/models/m", json={"owner": "ml"}, headers=headers)  # no change: no entry
    client.post(
        f"{API}/models/m/versions",
        json={"version": "1", "digest": digest("1"), "size": 3},
        headers=headers,
    )
    client.post(
        f"{API}/models/m/transitions", json={"to": "development", "reason": "go"}, headers=headers
    )
    client.post(
        f"{API}/models/m/versions/1/transitions",
        json={"to": "development", "reason": "v-go"},
        headers=headers,
    )
    entries = [e for e in audit_entries(client, tokens) if e["actor"] == actor]
    summary = [(e["action"], e["subject"]) for e in entries]
    assert summary == [
        ("system.create", "system:s"),
        ("model.create", "model:m"),
        ("model.update", "model:m"),
        ("model.version.create", "model:m@1"),
        ("lifecycle.transition", "model:m"),
        ("lifecycle.transition", "model:m@1"),
    ]
    assert entries[0]["details"] == {
        "name": "s",
        "description": "",
        "owner": "ops",
        "risk_tier": "unclassified",
        "tags": {"k": "v"},
    }
    assert entries[1]["details"]["system"] == "s"
    assert entries[2]["details"] == {
        "changes": {"owner": {"from": "", "to": "ml"}, "task": {"from": "", "to": "qa"}}
    }
    assert entries[3]["details"]["digest"] == digest("1")
    assert entries[4]["details"] == {"from": "draft", "to": "development", "reason": "go"}
    assert entries[5]["details"] == {"from": "draft", "to": "development", "reason": "v-go"}


def test_failed_writes_leave_no_audit_entry(
    client: TestClient, tokens: Tokens, expect_error
) -> None:
    create(client, tokens, "systems", name="s")
    size = client.get(f"{API}/audit", headers=tokens.headers(Role.auditor)).json()["size"]
    headers = tokens.headers(Role.engineer)
    expect_error(
        client.post(f"{API}/systems", json={"name": "s"}, headers=headers), 409, "conflict"
    )
    expect_error(
        client.post(f"{API}/models", json={"name": "m", "system": "zz"}, headers=headers),
        404,
        "not_found",
    )
    expect_error(move(client, tokens, "systems/s", "production"), 409, "illegal_transition")
    expect_error(
        client.patch(f"{API}/systems/s", json={"risk_tier": "x"}, headers=headers),
        422,
        "invalid_input",
    )
    assert client.get(f"{API}/audit", headers=tokens.headers(Role.auditor)).json()["size"] == size


# -- awkward text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["description", "owner"], ids=["nul-in-description", "nul-in-owner"]
)
def test_nul_bytes_in_text_fields_are_never_a_server_error(
    client: TestClient, tokens: Tokens, field: str
) -> None:
    """PostgreSQL text cannot hold NUL: the answer is a 201 that round-trips, or a 422."""
    response = client.post(
        f"{API}/systems",
        json={"name": "s", field: "before\x00after"},
        headers=tokens.headers(Role.engineer),
    )
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:
        shown = client.get(f"{API}/systems/s", headers=tokens.headers(Role.auditor)).json()
        assert shown[field] == "before\x00after"


@pytest.mark.parametrize(
    "path",
    [
        "/systems?owner=%00",
        "/systems?q=a%00b",
        "/models?system=%00",
        "/systems/a%00b",
    ],
)
def test_nul_bytes_in_lookups_are_never_a_server_error(
    client: TestClient, tokens: Tokens, path: str
) -> None:
    response = client.get(API + path, headers=tokens.headers(Role.auditor))
    assert response.status_code in (200, 404, 422), response.text


def test_unicode_round_trips(client: TestClient, tokens: Tokens) -> None:
    text = "Zürich 数据 \u202e emoji \U0001f510 é"
    made = create(
        client, tokens, "systems", name="u", description=text, owner="ø", tags={"ключ": "值"}
    )
    assert (made["description"], made["owner"], made["tags"]) == (text, "ø", {"ключ": "值"})
    assert names(client, tokens, "systems", tag="ключ=值") == ["u"]
    assert names(client, tokens, "systems", owner="ø") == ["u"]


# -- fuzzing ----------------------------------------------------------------------------

ALLOWED = {200, 201, 400, 404, 409, 413, 422}
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}"

AWKWARD = 'a\x00\u202e\ud800\udfff\U0001f600é\n\t"\\%_'
short_text = st.text(max_size=30) | st.text(alphabet=st.sampled_from(AWKWARD), max_size=12)
strange_text = st.one_of(
    short_text,
    st.builds(
        lambda char, n: char * n,
        st.sampled_from(["a", "é", "\x00", "\U0001f600"]),
        st.sampled_from([0, 100, 101, 199, 200, 201, 2000, 2001, 4000, 4001, 70_000, 1_100_000]),
    ),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | strange_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strange_text, inner, max_size=4),
    max_leaves=8,
)
REFERENCES = ["fuzz-system", "fuzz-model", "target"]


def field_values(field: str) -> st.SearchStrategy[Any]:
    """Values of the right type for a field; text gets awkward characters (NUL, surrogates)."""
    typed: dict[str, st.SearchStrategy[Any]] = {
        "name": st.from_regex(NAME, fullmatch=True),
        "risk_tier": st.sampled_from(RISK_TIERS),
        "tags": st.dictionaries(short_text, short_text, max_size=4),
        "system": st.sampled_from(REFERENCES) | st.from_regex(NAME, fullmatch=True),
        "model": st.sampled_from(REFERENCES) | st.from_regex(NAME, fullmatch=True),
        "version": st.from_regex(r"[0-9][0-9.+a-z-]{0,8}", fullmatch=True),
        "digest": st.binary(max_size=8).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest()),
        "size": st.integers(min_value=-2, max_value=2**64),
        "row_count": st.integers(min_value=-2, max_value=2**64) | st.none(),
        "to": st.sampled_from([*STATES, "limbo"]),
    }
    return typed.get(field, short_text)


def bodies(required: list[str], optional: list[str]) -> st.SearchStrategy[Any]:
    """Mostly well-typed objects (so awkward values reach the database), some with wrong
    types, huge strings or unknown keys, and any JSON at all."""
    fields = [*required, *optional]
    typed = st.fixed_dictionaries(
        {f: field_values(f) for f in required},
        optional={f: field_values(f) for f in optional},
    )
    mistyped = st.fixed_dictionaries(
        {}, optional={f: field_values(f) | json_values for f in fields}
    )
    anything = st.dictionaries(st.sampled_from(fields) | strange_text, json_values, max_size=6)
    return st.one_of(typed, typed, typed, mistyped, anything, json_values)


def operations(plural: str) -> st.SearchStrategy[tuple[str, str, Any]]:
    kind = next(k for k in KINDS.values() if k.plural == plural)
    create_fields = sorted(set(kind.create.model_fields) - {"name"})
    update_fields = sorted(kind.update.model_fields)
    target = st.one_of(
        st.just("target"),
        st.just("target"),
        st.just("target"),
        st.just("missing"),
        st.from_regex(NAME, fullmatch=True),
    )
    ops = [
        st.tuples(st.just("POST"), st.just(f"/{plural}"), bodies(["name"], create_fields)),
        st.tuples(
            st.just("PATCH"), target.map(lambda n: f"/{plural}/{n}"), bodies([], update_fields)
        ),
        st.tuples(
            st.just("POST"),
            target.map(lambda n: f"/{plural}/{n}/transitions"),
            bodies(["to", "reason"], []),
        ),
    ]
    if kind.version_create is not None:
        version_fields = sorted(
            set(kind.version_create.model_fields) - {"version", "digest", "size"}
        )
        ops.append(
            st.tuples(
                st.just("POST"),
                target.map(lambda n: f"/{plural}/{n}/versions"),
                bodies(["version", "digest", "size"], version_fields),
            )
        )
    return st.one_of(ops)


def assert_json_answer(response: httpx.Response) -> None:
    assert response.status_code in ALLOWED, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == JSON
    payload = response.json()
    if response.status_code >= 400:
        assert set(payload) == {"error"}, payload
        assert {"code", "message"} <= set(payload["error"]), payload
        assert isinstance(payload["error"]["code"], str)
        assert isinstance(payload["error"]["message"], str)
    else:
        assert isinstance(payload, dict | list)


def _fuzz_setup(client: TestClient, tokens: Tokens, plural: str) -> None:
    admin = tokens.headers(Role.admin)
    for path, body in [
        ("/systems", {"name": "fuzz-system"}),
        ("/models", {"name": "fuzz-model"}),
        (f"/{plural}", {"name": "target"}),
    ]:
        response = client.post(API + path, json=body, headers=admin)
        assert response.status_code in (201, 409), response.text


def awkward_operations(plural: str) -> list[tuple[str, str, Any]]:
    """Inputs every run tries, before the random ones."""
    operations = [
        ("POST", f"/{plural}", {"name": "nul", "description": "a\x00b"}),
        ("PATCH", f"/{plural}/target", {"owner": "\x00"}),
        ("PATCH", f"/{plural}/target", {"tags": {"k": "\ud800"}}),
        ("POST", f"/{plural}", {"name": {"nested": ["x"]}}),
        ("POST", f"/{plural}", {"name": "big", "description": "é" * 600_000}),
        ("POST", f"/{plural}/target/transitions", {"to": None, "reason": 1}),
    ]
    if plural in VERSIONED:
        big = {"version": "9", "digest": digest("9"), "size": 2**63}
        operations.append(("POST", f"/{plural}/target/versions", big))
    return operations


@pytest.mark.parametrize("plural", PLURALS)
def test_fuzzed_write_bodies_always_get_a_json_answer(
    client: TestClient, tokens: Tokens, plural: str
) -> None:
    _fuzz_setup(client, tokens, plural)
    headers = {**tokens.headers(Role.engineer), "Content-Type": JSON}

    def check(operation: tuple[str, str, Any]) -> None:
        method, path, body = operation
        # ASCII-escaped, so lone surrogates and NUL travel as JSON escapes.
        content = json.dumps(body, ensure_ascii=True).encode()
        assert_json_answer(client.request(method, API + path, content=content, headers=headers))

    fuzz = FUZZ(given(operation=operations(plural))(check))
    for operation in awkward_operations(plural):
        fuzz = example(operation=operation)(fuzz)
    fuzz()
    assert_json_answer(client.get(f"{API}/{plural}", headers=headers))
