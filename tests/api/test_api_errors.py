"""Errors over the REST API: one JSON shape with the documented status for unknown routes, wrong
methods, malformed or mistyped bodies, oversized bodies, storage outages and bugs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from stockade import __version__
from stockade.api import create_app
from stockade.core.config import get_settings
from stockade.core.db import Database
from stockade.core.tokens import Role, create_token

JSON = "application/json"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_liveness_and_readiness(client: TestClient, database: Database) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "version": __version__}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "database": database.dialect,
        "revision": database.head_revision(),
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v1/nope/deeper"),
        ("GET", "/api/v2/events"),
    ],
)
def test_unknown_routes_are_json_404(
    client: TestClient, method: str, path: str, expect_error
) -> None:
    error = expect_error(client.request(method, path), 404, "not_found")
    assert path in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/events", "GET, POST"),
        ("PATCH", "/api/v1/tokens", "GET, POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/api/v1/whoami", "GET"),
    ],
)
def test_wrong_methods_are_json_405(
    client: TestClient, method: str, path: str, allowed: str, expect_error
) -> None:
    response = client.request(method, path)
    expect_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} == set(allowed.split(", "))


@pytest.mark.parametrize(
    "body", [b'{"kind": ', b"{kind: 1}", b"\xff\xfe{}", b"[" * 5000, b'{"a": NaN']
)
def test_malformed_json_is_400(client: TestClient, tokens, body: bytes) -> None:
    response = client.post(
        "/api/v1/events",
        content=body,
        headers={**tokens.headers(Role.service), "Content-Type": JSON},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in {"malformed_json", "bad_request"}


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"kind": 5}, "body.kind"),
        ({"kind": "x", "payload": []}, "body.payload"),
        ({"kind": "x", "severity": "loud"}, "body.severity"),
        ({"kind": "x", "unexpected": 1}, "body.unexpected"),
        ({}, "body.kind"),
        ([], "body"),
        ("kind", "body"),
    ],
)
def test_mistyped_bodies_are_422_with_details(
    client: TestClient, tokens, body: object, location: str, expect_error
) -> None:
    response = client.post("/api/v1/events", json=body, headers=tokens.headers(Role.service))
    error = expect_error(response, 422, "invalid_input")
    assert error["message"].startswith(location)
    assert error["details"]
    assert all(set(d) == {"loc", "message", "type"} for d in error["details"])


def test_validation_errors_never_echo_the_input(client: TestClient, tokens, expect_error) -> None:
    secret = "sk-live-do-not-echo-0123456789"
    response = client.post(
        "/api/v1/events",
        json={"kind": "x", "severity": secret},
        headers=tokens.headers(Role.service),
    )
    expect_error(response, 422, "invalid_input")
    assert secret not in response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_bodies_that_are_not_json_are_400(
    client: TestClient, tokens, content_type: str | None, expect_error
) -> None:
    headers = tokens.headers(Role.service)
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/api/v1/events", content=b'{"kind": "x"}', headers=headers)
    error = expect_error(response, 400, "unsupported_media_type")
    assert "application/json" in error["message"]


def test_request_bodies_over_the_limit_are_413(client: TestClient, tokens, expect_error) -> None:
    headers = {**tokens.headers(Role.service), "Content-Type": JSON}
    huge = json.dumps({"kind": "x", "payload": {"blob": "a" * (1024 * 1024)}}).encode()
    expect_error(
        client.post("/api/v1/events", content=huge, headers=headers), 413, "payload_too_large"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit still holds
        yield b'{"kind": "x", "payload": {"blob": "'
        for _ in range(64):
            yield b"a" * 32 * 1024
        yield b'"}}'

    streamed = client.post("/api/v1/events", content=chunks(), headers=headers)
    expect_error(streamed, 413, "payload_too_large")


def test_the_body_limit_is_configurable(database: Database, expect_error) -> None:
    with TestClient(create_app(max_body_bytes=2000)) as small:
        ws = small.app.state.workspace  # type: ignore[attr-defined]
        with ws.session() as session:
            issued, _ = create_token(session, ws.audit, name="s", role="service", actor="test")
        headers = bearer(issued.token)
        fits = {"kind": "x", "payload": {"blob": "a" * 1500}}
        too_big = {"kind": "x", "payload": {"blob": "a" * 2500}}
        assert small.post("/api/v1/events", json=fits, headers=headers).status_code == 201
        error = expect_error(
            small.post("/api/v1/events", json=too_big, headers=headers), 413, "payload_too_large"
        )
        assert "2000 bytes" in error["message"]


def test_request_ids_and_security_headers(client: TestClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "req-42.abc"})
    assert given.headers["x-request-id"] == "req-42.abc"
    for bad in ("has spaces", "x" * 129, "semi;colon"):
        replaced = client.get("/healthz", headers={"X-Request-ID": bad})
        assert replaced.headers["x-request-id"] != bad
        assert len(replaced.headers["x-request-id"]) == 32
    generated = {client.get("/nope").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    for response in (client.get("/healthz"), client.get("/api/v1/whoami"), client.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"


def _app_with_a_bug() -> FastAPI:
    app = create_app()

    @app.get("/api/v1/test-bug")
    def bug() -> dict[str, str]:
        raise RuntimeError("secret internals: password=hunter2")

    return app


def test_a_bug_is_a_json_503_with_a_logged_request_id(
    database: Database, caplog: pytest.LogCaptureFixture, expect_error
) -> None:
    with TestClient(_app_with_a_bug()) as buggy, caplog.at_level(logging.ERROR, "stockade.api"):
        response = buggy.get("/api/v1/test-bug", headers={"X-Request-ID": "trace-me-1"})
    error = expect_error(response, 503, "internal_error")
    assert error["details"] == {"request_id": "trace-me-1"}
    assert response.headers["x-request-id"] == "trace-me-1"
    assert response.headers["retry-after"]
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if "trace-me-1" in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])


def test_openapi_documents_the_api(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"] == {
        "title": "Stockade control plane",
        "version": __version__,
        "description": spec["info"]["description"],
    }
    schemas = spec["components"]["schemas"]
    for name in (
        "EventIn",
        "EventOut",
        "TokenCreate",
        "IssuedTokenOut",
        "TokenOut",
        "ErrorResponse",
    ):
        assert name in schemas
    post = spec["paths"]["/api/v1/events"]["post"]
    assert post["requestBody"]["content"][JSON]["schema"] == {
        "$ref": "#/components/schemas/EventIn"
    }
    assert post["responses"]["401"]["content"][JSON]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert all(path.startswith(("/api/v1/", "/healthz", "/readyz")) for path in spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


# -- storage outages ------------------------------------------------------------------------


@pytest.fixture
def sqlite_file(stockade_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated SQLite file the test can lock or delete."""
    stockade_home.mkdir(parents=True, exist_ok=True)
    path = stockade_home / "stockade.db"
    monkeypatch.setenv("STOCKADE_DATABASE_URL", f"sqlite:///{path}")
    get_settings.cache_clear()
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.mark.slow
def test_a_locked_database_is_503_not_500(sqlite_file: Path, expect_error) -> None:
    with TestClient(create_app()) as client:
        ws = client.app.state.workspace  # type: ignore[attr-defined]
        with ws.session() as session:
            issued, _ = create_token(session, ws.audit, name="a", role="admin", actor="test")
        holder = sqlite3.connect(sqlite_file, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            locked = client.get("/api/v1/events", headers=bearer(issued.token))
            error = expect_error(locked, 503, "storage_unavailable")
            assert locked.headers["retry-after"].isdigit()
            assert str(sqlite_file) not in error["message"]  # paths stay in the server log
            expect_error(client.get("/readyz"), 503, "not_ready")
            assert client.get("/healthz").status_code == 200
        finally:
            holder.rollback()
            holder.close()
        assert client.get("/api/v1/events", headers=bearer(issued.token)).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_database_that_disappears_is_503(
    client: TestClient, tokens, database: Database, expect_error
) -> None:
    headers = tokens.headers(Role.admin)
    assert client.get("/api/v1/events", headers=headers).status_code == 200
    ws = client.app.state.workspace  # type: ignore[attr-defined]
    url = make_url(database.url)
    if database.dialect == "sqlite":
        ws.database.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
    else:
        schema = url.query["options"].split("=", 1)[1]
        plain = url.set(drivername="postgresql").difference_update_query(["options"])
        with psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA "{schema}"')
    for path in ("/api/v1/events", "/api/v1/tokens", "/api/v1/whoami"):
        expect_error(client.get(path, headers=headers), 503, "storage_unavailable")
    expect_error(client.get("/readyz"), 503, "not_ready")


def test_an_unreachable_database_is_503(monkeypatch: pytest.MonkeyPatch, expect_error) -> None:
    monkeypatch.setenv("STOCKADE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        token = "stk_0123456789ab_" + "a" * 43
        expect_error(
            client.get("/api/v1/whoami", headers=bearer(token)), 503, "storage_unavailable"
        )
        expect_error(client.get("/readyz"), 503, "not_ready")
        assert client.get("/healthz").status_code == 200


def test_an_unmigrated_database_is_503(
    stockade_home: Path, monkeypatch: pytest.MonkeyPatch, expect_error
) -> None:
    stockade_home.mkdir(parents=True)
    monkeypatch.setenv("STOCKADE_DATABASE_URL", f"sqlite:///{stockade_home / 'empty.db'}")
    get_settings.cache_clear()
    with TestClient(create_app()) as client:
        token = "stk_0123456789ab_" + "a" * 43
        expect_error(
            client.get("/api/v1/events", headers=bearer(token)), 503, "storage_unavailable"
        )
        error = expect_error(client.get("/readyz"), 503, "not_ready")
        assert "migrated" in error["message"]


# -- the same over real HTTP ----------------------------------------------------------------


def _raw_http(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_errors_over_real_http(http: httpx.Client, live_server, live_tokens, expect_error) -> None:
    expect_error(http.get("/api/v1/nope"), 404, "not_found")
    expect_error(http.delete("/api/v1/events"), 405, "method_not_allowed")
    malformed = http.post(
        "/api/v1/events",
        content=b'{"kind": ',
        headers={**live_tokens.headers(Role.service), "Content-Type": JSON},
    )
    expect_error(malformed, 400, "malformed_json")
    status, headers, body = _raw_http(
        live_server.url,
        b"POST /api/v1/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\nConnection: close\r\n\r\n{}",
    )
    assert status == 413
    assert headers["content-type"] == JSON
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_bug_over_real_http_is_json(database: Database, serve_app, expect_error) -> None:
    with serve_app(_app_with_a_bug()) as server:
        response = httpx.get(f"{server.url}/api/v1/test-bug", timeout=30)
        error = expect_error(response, 503, "internal_error")
        assert error["details"]["request_id"] == response.headers["x-request-id"]
        assert "hunter2" not in response.text


def test_storage_outage_over_real_http(
    stockade_home: Path, monkeypatch: pytest.MonkeyPatch, serve_app, expect_error
) -> None:
    monkeypatch.setenv("STOCKADE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    with serve_app(create_app()) as server:
        response = httpx.get(
            f"{server.url}/api/v1/events",
            headers=bearer("stk_0123456789ab_" + "a" * 43),
            timeout=30,
        )
        expect_error(response, 503, "storage_unavailable")
        assert response.headers["retry-after"] == "5"
        assert os.fspath(stockade_home) not in response.text
