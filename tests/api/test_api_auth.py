"""Authentication and roles over the REST API: every route refuses missing, garbage, revoked and
expired tokens; each role can do exactly what it should; tokens are shown once and audited.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from stockade.core import clock
from stockade.core.tokens import Role
from stockade.core.workspace import Workspace

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every documented operation under /api/v1, path parameters filled in."""
    found = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path.startswith("/api/v1"):
            filled = re.sub(r"\{[^}]+\}", "0123456789ab", path)
            found.extend((method.upper(), filled) for method in operations)
    return found


def test_the_api_has_routes_to_check(client: TestClient) -> None:
    routes = api_routes(client)
    for expected in [
        ("GET", "/api/v1/whoami"),
        ("GET", "/api/v1/tokens"),
        ("POST", "/api/v1/tokens"),
        ("GET", "/api/v1/tokens/0123456789ab"),
        ("DELETE", "/api/v1/tokens/0123456789ab"),
        ("GET", "/api/v1/events"),
        ("POST", "/api/v1/events"),
    ]:
        assert expected in routes


@pytest.mark.parametrize(
    "case", ["missing", "garbage", "wrong-scheme", "empty", "revoked", "expired"]
)
def test_every_route_refuses_bad_credentials(
    client: TestClient, issue_token, tokens, case: str, expect_error
) -> None:
    headers: dict[str, str] = {}
    moment = clock.now()
    if case == "garbage":
        headers = bearer("not-a-token")
    elif case == "wrong-scheme":
        headers = {"Authorization": f"Basic {tokens.by_role[Role.admin]}"}
    elif case == "empty":
        headers = {"Authorization": "Bearer "}
    elif case == "revoked":
        token, token_id = issue_token(Role.admin)
        response = client.request(
            "DELETE",
            f"/api/v1/tokens/{token_id}",
            json={"reason": "test"},
            headers=tokens.headers(Role.admin),
        )
        assert response.status_code == 200
        headers = bearer(token)
    elif case == "expired":
        token, _id = issue_token(Role.admin, expires_at=moment + timedelta(minutes=5))
        headers = bearer(token)
        moment += timedelta(minutes=10)
    with clock.frozen(moment):
        for method, path in api_routes(client):
            body = {} if method in {"POST", "PUT", "PATCH", "DELETE"} else None
            response = client.request(method, path, headers=headers, json=body)
            error = expect_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
            if case in {"revoked", "expired"}:
                assert case in error["message"]


def test_the_token_header_alternative_and_scheme_case(client: TestClient, tokens) -> None:
    token = tokens.by_role[Role.auditor]
    for headers in (
        {"X-Stockade-Token": token},
        {"Authorization": f"bearer {token}"},
        {"Authorization": f"BEARER  {token} "},
    ):
        response = client.get("/api/v1/whoami", headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "auditor"


def test_whoami_names_the_token_and_its_permissions(client: TestClient, tokens) -> None:
    response = client.get("/api/v1/whoami", headers=tokens.headers(Role.service))
    assert response.status_code == 200
    assert response.json() == {
        "token_id": tokens.ids[Role.service],
        "name": "test-service",
        "role": "service",
        "actor": f"token:{tokens.ids[Role.service]}",
        "permissions": ["events:write", "evidence:write", "inventory:read"],
    }


EVENT = {"kind": "gateway.request", "severity": "info"}
MATRIX = [
    (
        "GET",
        "/api/v1/whoami",
        None,
        {"admin": 200, "engineer": 200, "auditor": 200, "service": 200},
    ),
    (
        "GET",
        "/api/v1/events",
        None,
        {"admin": 200, "engineer": 200, "auditor": 200, "service": 403},
    ),
    (
        "POST",
        "/api/v1/events",
        EVENT,
        {"admin": 201, "engineer": 403, "auditor": 403, "service": 201},
    ),
    (
        "GET",
        "/api/v1/tokens",
        None,
        {"admin": 200, "engineer": 403, "auditor": 403, "service": 403},
    ),
    (
        "POST",
        "/api/v1/tokens",
        {"name": "new", "role": "service"},
        {"admin": 201, "engineer": 403, "auditor": 403, "service": 403},
    ),
]


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix(client: TestClient, tokens, issue_token, role: Role, expect_error) -> None:
    for method, path, body, expected in MATRIX:
        response = client.request(method, path, json=body, headers=tokens.headers(role))
        if expected[role.value] == 403:
            error = expect_error(response, 403, "forbidden")
            assert "lacks permission" in error["message"]
        else:
            assert response.status_code == expected[role.value], (method, path, response.text)
    _token, target = issue_token(Role.service, name="target")
    for method, path in (
        ("GET", f"/api/v1/tokens/{target}"),
        ("DELETE", f"/api/v1/tokens/{target}"),
    ):
        response = client.request(
            method, path, params={"reason": "matrix"}, headers=tokens.headers(role)
        )
        if role is Role.admin:
            assert response.status_code == 200, response.text
        else:
            expect_error(response, 403, "forbidden")


def test_a_token_is_shown_once_and_only_its_hash_is_stored(
    client: TestClient, tokens, workspace: Workspace
) -> None:
    admin = tokens.headers(Role.admin)
    created = client.post(
        "/api/v1/tokens", json={"name": "ci pipeline", "role": "engineer"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    token_id = body["id"]
    assert re.fullmatch(rf"stk_{token_id}_[A-Za-z0-9_-]{{43}}", token)
    assert "not be shown again" in body["warning"]
    assert body["role"] == "engineer"
    assert body["state"] == "active"
    assert body["created_by"] == f"token:{tokens.ids[Role.admin]}"
    secret = token.split("_", 2)[2]

    shown = client.get(f"/api/v1/tokens/{token_id}", headers=admin)
    listed = client.get("/api/v1/tokens", headers=admin)
    for response in (shown, listed):
        assert response.status_code == 200
        assert secret not in response.text
        assert '"token"' not in response.text
    assert shown.json()["id"] == token_id
    assert token_id in {t["id"] for t in listed.json()["tokens"]}

    with workspace.session() as session:
        row = (
            session.execute(text("SELECT * FROM api_tokens WHERE id = :id"), {"id": token_id})
            .mappings()
            .one()
        )
    salt = bytes(row["salt"])
    assert bytes(row["secret_hash"]) == hashlib.sha256(salt + secret.encode()).digest()
    for value in row.values():
        raw = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
        assert secret.encode() not in raw

    whoami = client.get("/api/v1/whoami", headers=bearer(token))
    assert whoami.json()["role"] == "engineer"


def test_revocation_over_the_api(
    client: TestClient, tokens, issue_token, workspace, expect_error
) -> None:
    admin = tokens.headers(Role.admin)
    token, token_id = issue_token(Role.service)
    assert client.get("/api/v1/whoami", headers=bearer(token)).status_code == 200

    missing_reason = client.delete(f"/api/v1/tokens/{token_id}", headers=admin)
    expect_error(missing_reason, 422, "invalid_input")
    revoked = client.request(
        "DELETE", f"/api/v1/tokens/{token_id}", json={"reason": "rotated"}, headers=admin
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["revoked_at"]

    error = expect_error(client.get("/api/v1/whoami", headers=bearer(token)), 401, "unauthorized")
    assert "revoked" in error["message"]
    again = client.delete(f"/api/v1/tokens/{token_id}", params={"reason": "x"}, headers=admin)
    expect_error(again, 409, "conflict")
    unknown = client.delete("/api/v1/tokens/ffffffffffff", params={"reason": "x"}, headers=admin)
    expect_error(unknown, 404, "not_found")
    expect_error(client.get("/api/v1/tokens/nope", headers=admin), 404, "not_found")

    listed = client.get("/api/v1/tokens", headers=admin).json()["tokens"]
    assert token_id not in {t["id"] for t in listed}
    everything = client.get(
        "/api/v1/tokens", params={"include_revoked": "true"}, headers=admin
    ).json()["tokens"]
    assert {t["id"]: t["state"] for t in everything}[token_id] == "revoked"

    with workspace.session() as session:
        records = workspace.audit.entries(session, subject=f"token:{token_id}")
    assert [(r.action, r.actor) for r in records] == [
        ("token.create", "test:fixture"),
        ("token.revoke", f"token:{tokens.ids[Role.admin]}"),
    ]
    assert records[1].details["reason"] == "rotated"


def test_token_creation_validates_its_body(client: TestClient, tokens, expect_error) -> None:
    admin = tokens.headers(Role.admin)
    moment = clock.now()
    for body in (
        {"name": "x", "role": "root"},
        {"name": "", "role": "admin"},
        {"name": "x"},
        {"name": "x", "role": "admin", "expires_in_days": 0},
        {"name": "x", "role": "admin", "expires_at": "2030-01-01T00:00:00"},
        {"name": "x", "role": "admin", "expires_at": "2000-01-01T00:00:00Z"},
        {"name": "x", "role": "admin", "expires_in_days": 1, "expires_at": "2999-01-01T00:00:00Z"},
        {"name": "x", "role": "admin", "token": "stk_chosen"},
    ):
        response = client.post("/api/v1/tokens", json=body, headers=admin)
        expect_error(response, 422, "invalid_input")
    with clock.frozen(moment):
        response = client.post(
            "/api/v1/tokens",
            json={"name": "x", "role": "auditor", "expires_in_days": 7},
            headers=admin,
        )
    assert response.status_code == 201
    assert response.json()["expires_at"] == clock.format_time(moment + timedelta(days=7))


@FUZZ
@given(value=st.binary(max_size=200).filter(lambda b: not set(b) & {0, 10, 13}))
def test_fuzzed_authorization_headers_get_401_json(
    client: TestClient, value: bytes, expect_error
) -> None:
    for header in (b"authorization", b"x-stockade-token"):
        for presented in (value, b"Bearer " + value):
            response = client.get("/api/v1/events", headers={header.decode(): presented})
            expect_error(response, 401, "unauthorized")


@FUZZ
@given(token=st.from_regex(r"stk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", fullmatch=True))
def test_well_formed_but_unknown_tokens_get_the_same_401(
    client: TestClient, token: str, expect_error
) -> None:
    error = expect_error(client.get("/api/v1/whoami", headers=bearer(token)), 401, "unauthorized")
    assert error["message"] == "invalid API token"


def test_auth_over_real_http(http: httpx.Client, live_tokens, expect_error) -> None:
    missing = http.get("/api/v1/whoami")
    expect_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == 'Bearer realm="stockade"'
    garbage = http.get("/api/v1/whoami", headers=bearer("stk_nope"))
    expect_error(garbage, 401, "unauthorized")
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]
    forbidden = http.post("/api/v1/events", json=EVENT, headers=live_tokens.headers(Role.auditor))
    expect_error(forbidden, 403, "forbidden")
    ok = http.get("/api/v1/whoami", headers=live_tokens.headers(Role.engineer))
    assert ok.status_code == 200
    assert ok.json()["role"] == "engineer"
