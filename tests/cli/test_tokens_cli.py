"""`stockade tokens create|list|revoke`: the token printed once, lists without secrets, revocation
that takes effect at once, and clear errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stockade.core import clock
from stockade.core.config import get_settings
from stockade.core.db import Database
from stockade.core.errors import AuthError
from stockade.core.tokens import authenticate
from stockade.core.workspace import Workspace

TOKEN = re.compile(r"stk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
T0 = datetime(2032, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def ws(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    monkeypatch.setenv("STOCKADE_ACTOR", "cli:carol")
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: table cells are not folded
    get_settings.cache_clear()
    workspace = Workspace.open()
    yield workspace
    workspace.close()


def _role_of(ws: Workspace, token: str) -> str:
    with ws.session() as session:
        return authenticate(session, token).role.value


def test_create_prints_the_token_once_with_a_warning(cli, ws: Workspace) -> None:
    created = cli("tokens", "create", "ci-pipeline", "--role", "engineer")
    assert created.exit_code == 0, created.stderr
    token = created.stdout.strip()
    assert TOKEN.fullmatch(token)
    assert "will not be shown again" in created.stderr
    assert "ci-pipeline" in created.stderr
    assert token not in created.stderr
    assert _role_of(ws, token) == "engineer"

    listed = cli("tokens", "list")
    assert listed.exit_code == 0
    assert token.split("_", 2)[1] in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    with ws.session() as session:
        (record,) = ws.audit.entries(session, action="token.create")
    assert record.actor == "cli:carol"
    assert record.details == {"name": "ci-pipeline", "role": "engineer"}


def test_create_as_json_and_with_an_expiry(cli, ws: Workspace) -> None:
    with clock.frozen(T0):
        created = cli(
            "tokens",
            "create",
            "nightly",
            "--role",
            "service",
            "--expires-in",
            "7",
            "--format",
            "json",
        )
    assert created.exit_code == 0, created.stderr
    body = created.json()
    assert TOKEN.fullmatch(body["token"])
    assert body["token"].split("_")[1] == body["id"]
    assert body["role"] == "service"
    assert body["state"] == "active"
    assert body["created_by"] == "cli:carol"
    assert body["expires_at"] == clock.format_time(T0 + timedelta(days=7))
    assert "will not be shown again" in body["warning"]
    with clock.frozen(T0 + timedelta(days=8)), pytest.raises(AuthError, match="expired"):
        _role_of(ws, body["token"])


def test_list_hides_revoked_tokens_unless_all(cli, ws: Workspace) -> None:
    keep = cli("tokens", "create", "keep", "--role", "auditor", "--format", "json").json()
    drop = cli("tokens", "create", "drop", "--role", "admin", "--format", "json").json()
    revoked = cli("tokens", "revoke", drop["id"], "--reason", "laptop stolen")
    assert revoked.exit_code == 0, revoked.stderr
    assert drop["id"] in revoked.stdout
    with pytest.raises(AuthError, match="revoked"):
        _role_of(ws, drop["token"])
    assert _role_of(ws, keep["token"]) == "auditor"

    active = cli("tokens", "list", "--format", "json").json()
    assert [t["id"] for t in active] == [keep["id"]]
    everything = {t["id"]: t for t in cli("tokens", "list", "--all", "--format", "json").json()}
    assert everything[drop["id"]]["state"] == "revoked"
    assert everything[drop["id"]]["revoked_at"]
    assert set(everything[keep["id"]]) == {
        "id",
        "name",
        "role",
        "state",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    }
    table = cli("tokens", "list", "--all")
    assert drop["id"] in table.stdout
    assert "revoked" in table.stdout
    for token in (keep["token"], drop["token"]):
        assert token.split("_", 2)[2] not in table.stdout

    with ws.session() as session:
        (record,) = ws.audit.entries(session, action="token.revoke")
    assert record.subject == f"token:{drop['id']}"
    assert record.details["reason"] == "laptop stolen"


def test_revoking_twice_or_an_unknown_token_is_a_clear_error(cli, ws: Workspace) -> None:
    made = cli("tokens", "create", "once", "--role", "service", "--format", "json").json()
    assert cli("tokens", "revoke", made["id"], "--reason", "done").exit_code == 0
    again = cli("tokens", "revoke", made["id"], "--reason", "done")
    assert again.exit_code == 2
    assert "already revoked" in again.stderr
    unknown = cli("tokens", "revoke", "ffffffffffff", "--reason", "x")
    assert unknown.exit_code == 2
    assert "not found" in unknown.stderr
    blank = cli("tokens", "revoke", made["id"], "--reason", " ")
    assert blank.exit_code == 2
    assert "reason" in blank.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("tokens", "create", "x", "--role", "root"),
        ("tokens", "create", "x"),
        ("tokens", "create", "x", "--role", "admin", "--expires-in", "0"),
        ("tokens", "revoke", "0123456789ab"),
    ],
)
def test_usage_errors(cli, ws: Workspace, args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert "stk_" not in result.stdout
    assert cli("tokens", "list", "--all", "--format", "json").json() == []
