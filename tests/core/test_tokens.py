"""API tokens: the shown-once plaintext, the salted hash at rest, authentication failures,
expiry, revocation, last-use bookkeeping, the role matrix and the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from stockade.core import clock
from stockade.core.db import Database
from stockade.core.errors import AuthError, Conflict, InvalidInput, NotFound, PermissionDenied
from stockade.core.tables import AuditEntry
from stockade.core.tokens import (
    ROLE_PERMISSIONS,
    Permission,
    Role,
    authenticate,
    create_token,
    get_token,
    list_tokens,
    revoke_token,
)
from stockade.core.workspace import Workspace

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def ws(database: Database) -> Iterator[Workspace]:
    workspace = Workspace.open()
    yield workspace
    workspace.close()


def _issue(ws: Workspace, role: str = "engineer", **kwargs: object) -> tuple[str, str]:
    with ws.session() as session:
        issued, info = create_token(
            session, ws.audit, name=kwargs.pop("name", "ci"), role=role, actor="cli:alice", **kwargs
        )
    return issued.token, info.id


def _authenticate(ws: Workspace, token: str):
    with ws.session() as session:
        return authenticate(session, token)


def test_token_has_the_documented_form(ws: Workspace) -> None:
    token, token_id = _issue(ws)
    match = re.fullmatch(r"stk_([0-9a-f]{12})_([A-Za-z0-9_-]+)", token)
    assert match is not None
    assert match.group(1) == token_id
    secret = match.group(2)
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32  # 256 bits


def test_only_a_salted_hash_is_stored(ws: Workspace) -> None:
    first, first_id = _issue(ws, name="one")
    second, second_id = _issue(ws, name="two")
    with ws.session() as session:
        raw = {
            row["id"]: row for row in session.execute(text("SELECT * FROM api_tokens")).mappings()
        }
    for token, token_id in ((first, first_id), (second, second_id)):
        row = raw[token_id]
        secret = token.split("_", 2)[2]
        salt, digest = bytes(row["salt"]), bytes(row["secret_hash"])
        assert len(salt) == 16
        assert digest == hashlib.sha256(salt + secret.encode()).digest()
        for value in row.values():
            stored = bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
            assert secret.encode() not in stored
    assert raw[first_id]["salt"] != raw[second_id]["salt"]


def test_issued_token_does_not_show_its_secret_in_repr(ws: Workspace) -> None:
    with ws.session() as session:
        issued, _info = create_token(session, ws.audit, name="x", role="admin", actor="cli:alice")
    assert issued.token not in repr(issued)
    assert issued.token_id in issued.token


@pytest.mark.parametrize("role", list(Role))
def test_authenticate_gives_the_principal_of_the_token(ws: Workspace, role: Role) -> None:
    token, token_id = _issue(ws, role.value, name=f"{role.value}-bot")
    principal = _authenticate(ws, token)
    assert principal.token_id == token_id
    assert principal.name == f"{role.value}-bot"
    assert principal.role is role
    assert principal.actor == f"token:{token_id}"
    assert principal.permissions == ROLE_PERMISSIONS[role]


def test_unknown_id_and_wrong_secret_get_the_same_message(ws: Workspace) -> None:
    token, token_id = _issue(ws)
    wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    unknown_id = "stk_" + ("0" * 12 if token_id != "0" * 12 else "1" * 12) + token[16:]
    messages = set()
    for presented in (wrong_secret, unknown_id):
        with pytest.raises(AuthError) as caught:
            _authenticate(ws, presented)
        messages.add(caught.value.message)
    assert messages == {"invalid API token"}


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "stk_",
        "Bearer stk_abc",
        "stk_ABCDEF123456_" + "a" * 43,  # id must be lower-case hex
        "stk_abcdef12345_" + "a" * 43,  # id too short
        "stk_abcdef123456_" + "a" * 42,  # secret too short
        "stk_abcdef123456_" + "a" * 44,  # secret too long
        "stk_abcdef123456_" + "a" * 42 + "=",
        "stk_abcdef123456_" + "a" * 42 + "\n",
        "xtk_abcdef123456_" + "a" * 43,
        "stk_abcdef123456_" + "a" * 10_000,
    ],
)
def test_malformed_tokens_are_refused(ws: Workspace, presented: str) -> None:
    with pytest.raises(AuthError, match="malformed API token"):
        _authenticate(ws, presented)


def test_expired_token_is_refused(ws: Workspace) -> None:
    with clock.frozen(T0):
        token, token_id = _issue(ws, expires_at=T0 + timedelta(hours=1))
        assert _authenticate(ws, token).token_id == token_id
    with clock.frozen(T0 + timedelta(hours=1)), pytest.raises(AuthError, match="expired"):
        _authenticate(ws, token)


def test_revoked_token_is_refused_and_revocation_is_final(ws: Workspace) -> None:
    token, token_id = _issue(ws)
    with ws.session() as session:
        info = revoke_token(session, ws.audit, token_id=token_id, actor="cli:bob", reason="leaked")
    assert info.state == "revoked"
    with pytest.raises(AuthError, match="revoked"):
        _authenticate(ws, token)
    with ws.session() as session, pytest.raises(Conflict, match="already revoked"):
        revoke_token(session, ws.audit, token_id=token_id, actor="cli:bob", reason="again")


def test_revocation_needs_a_known_token_and_a_reason(ws: Workspace) -> None:
    _token, token_id = _issue(ws)
    with ws.session() as session:
        with pytest.raises(NotFound):
            revoke_token(session, ws.audit, token_id="0" * 12, actor="cli:bob", reason="x")
        with pytest.raises(NotFound):
            revoke_token(session, ws.audit, token_id="../etc\x00", actor="cli:bob", reason="x")
        with pytest.raises(InvalidInput, match="reason"):
            revoke_token(session, ws.audit, token_id=token_id, actor="cli:bob", reason="  ")
    assert _authenticate(ws, _token).token_id == token_id


def test_last_use_is_recorded_at_most_once_a_minute(ws: Workspace) -> None:
    with clock.frozen(T0):
        token, token_id = _issue(ws)
    moments = [
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=30),
        T0 + timedelta(seconds=61),
        T0 + timedelta(seconds=90),
    ]
    seen = []
    for moment in moments:
        with clock.frozen(moment):
            _authenticate(ws, token)
        with ws.session() as session:
            seen.append(get_token(session, token_id).last_used_at)
    assert seen == [moments[0], moments[0], moments[2], moments[2]]


def test_list_hides_revoked_tokens_unless_asked(ws: Workspace) -> None:
    _a, kept = _issue(ws, name="kept")
    _b, gone = _issue(ws, name="gone")
    with clock.frozen(clock.now() + timedelta(seconds=1)):
        _c, stale = _issue(ws, name="stale", expires_at=clock.now() + timedelta(minutes=1))
    with ws.session() as session:
        revoke_token(session, ws.audit, token_id=gone, actor="cli:bob", reason="rotated")
    with clock.frozen(clock.now() + timedelta(hours=1)), ws.session() as session:
        active = {t.id: t.state for t in list_tokens(session)}
        everything = {t.id: t.state for t in list_tokens(session, include_revoked=True)}
    assert active == {kept: "active", stale: "expired"}
    assert everything == {kept: "active", stale: "expired", gone: "revoked"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "root"}, "unknown role"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "tab\there"}, "control characters"),
        ({"expires_at": T0 - timedelta(days=1)}, "future"),
        ({"expires_at": datetime(2099, 1, 1)}, "timezone"),
    ],
)
def test_creation_refuses_bad_input(ws: Workspace, kwargs: dict, message: str) -> None:
    arguments = {"name": "ok", "role": "admin", "actor": "cli:alice", **kwargs}
    with clock.frozen(T0), ws.session() as session, pytest.raises(InvalidInput, match=message):
        create_token(session, ws.audit, **arguments)
    with ws.session() as session:
        assert list_tokens(session, include_revoked=True) == []


def test_creation_and_revocation_are_audited_without_the_secret(ws: Workspace) -> None:
    expiry = clock.now() + timedelta(days=30)
    token, token_id = _issue(ws, "service", name="gateway", expires_at=expiry)
    with ws.session() as session:
        revoke_token(session, ws.audit, token_id=token_id, actor="cli:bob", reason="retired")
    with ws.session() as session:
        records = ws.audit.entries(session, subject=f"token:{token_id}")
    assert [(r.action, r.actor) for r in records] == [
        ("token.create", "cli:alice"),
        ("token.revoke", "cli:bob"),
    ]
    assert records[0].details == {
        "name": "gateway",
        "role": "service",
        "expires_at": clock.format_time(expiry),
    }
    assert records[1].details == {"name": "gateway", "role": "service", "reason": "retired"}
    secret = token.split("_", 2)[2]
    with ws.session() as session:
        stored = b"".join(session.scalars(select(AuditEntry.entry)))
    assert secret.encode() not in stored


EXPECTED_ROLES = {
    Role.admin: set(Permission),
    Role.engineer: {
        "inventory:read",
        "inventory:write",
        "evidence:read",
        "evidence:write",
        "events:read",
        "audit:read",
        "keys:read",
    },
    Role.auditor: {"inventory:read", "evidence:read", "events:read", "audit:read", "keys:read"},
    Role.service: {"inventory:read", "events:write", "evidence:write"},
}


@pytest.mark.parametrize("role", list(Role))
def test_role_matrix(ws: Workspace, role: Role) -> None:
    token, _id = _issue(ws, role.value)
    principal = _authenticate(ws, token)
    for permission in Permission:
        if permission in EXPECTED_ROLES[role]:
            principal.require(permission)
        else:
            with pytest.raises(PermissionDenied, match=permission.value):
                principal.require(permission)
    assert principal.can(Permission.tokens_manage) is (role is Role.admin)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    presented=st.one_of(
        st.text(max_size=300),
        st.from_regex(r"stk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", fullmatch=True),
    )
)
def test_anything_presented_is_refused_with_an_auth_error(ws: Workspace, presented: str) -> None:
    with pytest.raises(AuthError):
        _authenticate(ws, presented)
