"""API fixtures: the control plane over the migrated `database` (SQLite and PostgreSQL), through
FastAPI's TestClient or a real uvicorn server on 127.0.0.1, with a token for every role.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from stockade.api import create_app
from stockade.core.db import Database
from stockade.core.tokens import Role, create_token
from stockade.core.workspace import Workspace


@dataclass(frozen=True)
class Tokens:
    """One live token per role; `headers(role)` gives its Authorization header."""

    by_role: dict[Role, str]
    ids: dict[Role, str]

    def headers(self, role: Role | str) -> dict[str, str]:
        return bearer(self.by_role[Role(role)])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issue(
    workspace: Workspace,
    role: Role | str,
    *,
    name: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, str]:
    """A new token of `role`: (plaintext, id)."""
    with workspace.session() as session:
        issued, info = create_token(
            session,
            workspace.audit,
            name=name or f"test-{Role(role).value}",
            role=role,
            actor="test:fixture",
            expires_at=expires_at,
        )
    return issued.token, info.id


@pytest.fixture
def app(database: Database) -> FastAPI:
    """`create_app()` with no workspace: its lifespan opens one from the settings."""
    return create_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def workspace(client: TestClient) -> Workspace:
    """The workspace the running app opened."""
    return client.app.state.workspace  # type: ignore[attr-defined]


def tokens_for(workspace: Workspace) -> Tokens:
    issued = {role: issue(workspace, role) for role in Role}
    return Tokens(
        by_role={role: token for role, (token, _id) in issued.items()},
        ids={role: token_id for role, (_token, token_id) in issued.items()},
    )


@pytest.fixture
def tokens(workspace: Workspace) -> Tokens:
    return tokens_for(workspace)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """`response` is an error of `status` in the one JSON shape, with `code`; its `error`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def expect_error() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    return assert_error


IssueToken = Callable[..., tuple[str, str]]


@pytest.fixture
def issue_token(workspace: Workspace) -> IssueToken:
    """`issue_token(role, name=..., expires_at=...)` -> (plaintext, id), in the app's workspace."""
    return partial(issue, workspace)


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: FastAPI

    @property
    def workspace(self) -> Workspace:
        return self.app.state.workspace  # type: ignore[no-any-return]


@contextmanager
def serve(app: FastAPI) -> Iterator[LiveServer]:
    """Run `app` under uvicorn on a free 127.0.0.1 port in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        ready = threading.Event()
        while not server.started and thread.is_alive():
            ready.wait(0.02)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield LiveServer(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


@pytest.fixture
def serve_app() -> Callable[[FastAPI], AbstractContextManager[LiveServer]]:
    """`with serve_app(app) as server:` runs `app` on a free port; `server.url` reaches it."""
    return serve


@pytest.fixture
def live_server(database: Database) -> Iterator[LiveServer]:
    """The control plane over real HTTP (lifespan included)."""
    with serve(create_app()) as server:
        yield server


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30.0) as session:
        yield session


@pytest.fixture
def live_tokens(live_server: LiveServer) -> Tokens:
    return tokens_for(live_server.workspace)
