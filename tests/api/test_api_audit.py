"""`/api/v1/audit` the way an external auditor uses it: page and filter the log, verify it, sign
checkpoints, and check inclusion and consistency proofs offline against a signed checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from stockade.core.audit import Checkpoint, verify_checkpoint
from stockade.core.config import get_settings
from stockade.core.db import Database
from stockade.core.errors import InvalidInput, TamperDetected
from stockade.core.merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    InclusionProof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from stockade.core.tokens import Role

from .conftest import Tokens

API = "/api/v1"
AUDIT = f"{API}/audit"
JSON = "application/json"


def add_systems(client: TestClient, tokens: Tokens, *names: str) -> None:
    """Inventory writes, each of which appends one audit entry."""
    for name in names:
        response = client.post(
            f"{API}/systems", json={"name": name}, headers=tokens.headers(Role.engineer)
        )
        assert response.status_code == 201, response.text


def page(client: TestClient, tokens: Tokens, **params: Any) -> dict[str, Any]:
    response = client.get(AUDIT, params=params, headers=tokens.headers(Role.auditor))
    assert response.status_code == 200, response.text
    return response.json()


def indexes(client: TestClient, tokens: Tokens, **params: Any) -> list[int]:
    return [e["index"] for e in page(client, tokens, **params)["entries"]]


def sign(client: TestClient, tokens: Tokens) -> dict[str, Any]:
    response = client.post(f"{AUDIT}/checkpoints", headers=tokens.headers(Role.admin))
    assert response.status_code == 201, response.text
    return response.json()


def sql(database: Database, statement: str, **params: Any) -> Any:
    with database.engine.begin() as conn:
        return conn.execute(text(statement), params)


# -- listing ----------------------------------------------------------------------------


def test_listing_pages_filters_and_newest(client: TestClient, tokens: Tokens) -> None:
    start = page(client, tokens)["size"]
    add_systems(client, tokens, "s0", "s1", "s2", "s3", "s4")
    everything = page(client, tokens)
    assert everything["size"] == start + 5
    entries = everything["entries"]
    assert [e["index"] for e in entries] == list(range(start + 5))
    engineer = f"token:{tokens.ids[Role.engineer]}"
    mine = entries[start:]
    assert [(e["action"], e["subject"], e["actor"]) for e in mine] == [
        ("system.create", f"system:s{i}", engineer) for i in range(5)
    ]
    for entry in entries:
        assert set(entry) == {
            "index",
            "timestamp",
            "actor",
            "action",
            "subject",
            "details",
            "leaf_hash",
        }
        assert len(bytes.fromhex(entry["leaf_hash"])) == 32
        assert entry["timestamp"].endswith("Z")
    assert mine[2]["details"]["name"] == "s2"

    pages = [indexes(client, tokens, limit=3, offset=o) for o in range(0, start + 5, 3)]
    assert [i for p in pages for i in p] == list(range(start + 5))
    assert all(len(p) == 3 for p in pages[:-1])
    assert indexes(client, tokens, offset=start + 5) == []
    assert indexes(client, tokens, newest=True) == list(reversed(range(start + 5)))
    assert indexes(client, tokens, newest=True, limit=2) == [start + 4, start + 3]
    assert indexes(client, tokens, newest=True, limit=2, offset=1) == [start + 3, start + 2]
    assert indexes(client, tokens, action="system.create") == list(range(start, start + 5))
    assert indexes(client, tokens, action="system.create", newest=True, limit=1) == [start + 4]
    assert indexes(client, tokens, action="system.create", offset=3) == [start + 3, start + 4]
    assert indexes(client, tokens, subject="system:s3") == [start + 3]
    assert indexes(client, tokens, actor=engineer) == list(range(start, start + 5))
    assert indexes(client, tokens, actor=engineer, subject="system:s1") == [start + 1]
    issued = indexes(client, tokens, action="token.create")  # one token per role, first
    assert len(issued) == len(Role)
    assert all(i < start for i in issued)
    assert indexes(client, tokens, action="nothing.like.this") == []
    assert page(client, tokens, action="nothing.like.this")["size"] == start + 5


@pytest.mark.parametrize(
    "params",
    [
        {"offset": -1},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"newest": "perhaps"},
    ],
)
def test_bad_listing_params_are_422(
    client: TestClient, tokens: Tokens, params: dict, expect_error
) -> None:
    response = client.get(AUDIT, params=params, headers=tokens.headers(Role.auditor))
    error = expect_error(response, 422, "invalid_input")
    assert next(iter(params)) in error["message"]


@pytest.mark.parametrize("offset", [2**63, 10**30])
def test_huge_offsets_are_an_empty_page_or_422_never_a_server_error(
    client: TestClient, tokens: Tokens, offset: int
) -> None:
    response = client.get(AUDIT, params={"offset": offset}, headers=tokens.headers(Role.auditor))
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["entries"] == []


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/verify",
        "/checkpoints",
        "/checkpoints/latest",
        "/proofs/inclusion?index=0",
        "/proofs/consistency?old=0",
        "/public-key",
    ],
)
def test_reading_the_log_needs_audit_read(
    client: TestClient, tokens: Tokens, path: str, expect_error
) -> None:
    expect_error(client.get(AUDIT + path), 401, "unauthorized")
    error = expect_error(
        client.get(AUDIT + path, headers=tokens.headers(Role.service)), 403, "forbidden"
    )
    assert "audit:read" in error["message"]
    for role in (Role.auditor, Role.engineer, Role.admin):
        response = client.get(AUDIT + path, headers=tokens.headers(role))
        assert response.status_code in (200, 404), (role, response.text)


# -- verification -----------------------------------------------------------------------


def test_an_intact_log_verifies(client: TestClient, tokens: Tokens) -> None:
    add_systems(client, tokens, "a", "b")
    size = page(client, tokens)["size"]
    headers = tokens.headers(Role.auditor)
    assert client.get(f"{AUDIT}/verify", headers=headers).json() == {
        "ok": True,
        "size": size,
        "checkpoints_checked": 0,
        "uncovered": size,
        "problems": [],
    }
    sign(client, tokens)
    add_systems(client, tokens, "c")
    assert client.get(f"{AUDIT}/verify", headers=headers).json() == {
        "ok": True,
        "size": size + 1,
        "checkpoints_checked": 1,
        "uncovered": 1,
        "problems": [],
    }


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("rewrite_leaf_hash", [False, True], ids=["content", "content+hash"])
def test_a_row_changed_by_direct_sql_is_found(
    client: TestClient,
    tokens: Tokens,
    database: Database,
    rewrite_leaf_hash: bool,
    expect_error,
) -> None:
    add_systems(client, tokens, "a", "b", "c", "d")
    target = page(client, tokens, subject="system:b")["entries"][0]["index"]
    sign(client, tokens)
    headers = tokens.headers(Role.auditor)
    assert client.get(f"{AUDIT}/verify", headers=headers).json()["ok"] is True

    raw = sql(database, "SELECT entry FROM audit_entries WHERE idx = :i", i=target).scalar_one()
    entry = json.loads(bytes(raw))
    entry["details"]["owner"] = "mallory"
    forged = _canonical(entry)
    if rewrite_leaf_hash:
        sql(
            database,
            "UPDATE audit_entries SET entry = :e, leaf_hash = :h WHERE idx = :i",
            e=forged,
            h=leaf_hash(forged),
            i=target,
        )
    else:
        sql(database, "UPDATE audit_entries SET entry = :e WHERE idx = :i", e=forged, i=target)

    result = client.get(f"{AUDIT}/verify", headers=headers)
    assert result.status_code == 200, result.text
    report = result.json()
    assert report["ok"] is False
    assert report["problems"]
    assert target in {p["index"] for p in report["problems"]}
    assert all(set(p) == {"index", "kind", "message"} for p in report["problems"])
    assert all(p["message"] for p in report["problems"])
    if not rewrite_leaf_hash:
        # A proof is never issued for an entry that no longer matches its leaf hash.
        proof = client.get(f"{AUDIT}/proofs/inclusion", params={"index": target}, headers=headers)
        expect_error(proof, 409, "tamper_detected")


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoints_are_signed_by_admins_only(
    client: TestClient, tokens: Tokens, expect_error
) -> None:
    for role in (Role.auditor, Role.engineer, Role.service):
        error = expect_error(
            client.post(f"{AUDIT}/checkpoints", headers=tokens.headers(role)), 403, "forbidden"
        )
        assert "audit:write" in error["message"]
    expect_error(client.post(f"{AUDIT}/checkpoints"), 401, "unauthorized")
    headers = tokens.headers(Role.auditor)
    assert client.get(f"{AUDIT}/checkpoints", headers=headers).json() == []


def test_checkpoints_list_and_latest(client: TestClient, tokens: Tokens, expect_error) -> None:
    headers = tokens.headers(Role.auditor)
    error = expect_error(
        client.get(f"{AUDIT}/checkpoints/latest", headers=headers), 404, "not_found"
    )
    assert "checkpoint" in error["message"]

    first = sign(client, tokens)
    size = page(client, tokens)["size"]
    assert set(first) == {"id", "origin", "size", "root_hash", "created_at", "text"}
    assert first["origin"] == get_settings().audit_origin
    assert first["size"] == size
    assert len(bytes.fromhex(first["root_hash"])) == 32
    assert first["text"].startswith(f"{first['origin']}\n{size}\n")

    add_systems(client, tokens, "a")
    second = sign(client, tokens)
    assert second["size"] == size + 1
    assert second["id"] != first["id"]

    listed = client.get(f"{AUDIT}/checkpoints", headers=headers)
    assert listed.status_code == 200
    assert listed.json() == [second, first]
    assert client.get(f"{AUDIT}/checkpoints", params={"limit": 1}, headers=headers).json() == [
        second
    ]
    expect_error(
        client.get(f"{AUDIT}/checkpoints", params={"limit": 0}, headers=headers),
        422,
        "invalid_input",
    )
    latest = client.get(f"{AUDIT}/checkpoints/latest", headers=headers)
    assert latest.status_code == 200
    assert latest.headers["content-type"].startswith("text/plain")
    assert latest.text == second["text"]


# -- what an external auditor does ------------------------------------------------------


def _public_pem(client: TestClient, tokens: Tokens) -> str:
    response = client.get(f"{AUDIT}/public-key", headers=tokens.headers(Role.auditor))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
    return response.text


def _signed(client: TestClient, tokens: Tokens, pem: str) -> Checkpoint:
    """The latest checkpoint, trusted only once its signature verifies with the log's key."""
    note = client.get(f"{AUDIT}/checkpoints/latest", headers=tokens.headers(Role.auditor))
    assert note.status_code == 200, note.text
    return verify_checkpoint(note.text, pem, origin=get_settings().audit_origin)


def test_inclusion_proofs_verify_against_a_signed_checkpoint(
    client: TestClient, tokens: Tokens
) -> None:
    add_systems(client, tokens, "a", "b", "c", "d", "e", "f")
    sign(client, tokens)
    pem = _public_pem(client, tokens)
    checkpoint = _signed(client, tokens, pem)
    add_systems(client, tokens, "later")  # the log grows past the checkpoint
    listed = page(client, tokens)["entries"]
    headers = tokens.headers(Role.auditor)

    for index in range(checkpoint.size):
        response = client.get(
            f"{AUDIT}/proofs/inclusion",
            params={"index": index, "size": checkpoint.size},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["leaf_index"], body["tree_size"]) == (index, checkpoint.size)
        # The auditor hashes the entry bytes itself rather than trusting `leaf_hash`.
        leaf = leaf_hash(body["entry"].encode("utf-8"))
        assert leaf.hex() == body["leaf_hash"] == listed[index]["leaf_hash"]
        entry = json.loads(body["entry"])
        assert (entry["index"], entry["action"], entry["subject"]) == (
            index,
            listed[index]["action"],
            listed[index]["subject"],
        )
        proof = InclusionProof(
            index, checkpoint.size, tuple(bytes.fromhex(h) for h in body["hashes"])
        )
        assert bytes.fromhex(body["root_hash"]) == checkpoint.root_hash
        assert verify_inclusion(proof, leaf, checkpoint.root_hash)
        # The same proof does not vouch for other bytes, nor against another root.
        assert not verify_inclusion(proof, leaf_hash(b"forged entry"), checkpoint.root_hash)
        assert not verify_inclusion(proof, leaf, hashlib.sha256(b"other").digest())

    latest = client.get(
        f"{AUDIT}/proofs/inclusion", params={"index": checkpoint.size}, headers=headers
    ).json()
    assert latest["tree_size"] == checkpoint.size + 1


def test_consistency_proofs_verify_between_signed_checkpoints(
    client: TestClient, tokens: Tokens
) -> None:
    pem = _public_pem(client, tokens)
    add_systems(client, tokens, "a", "b", "c")
    sign(client, tokens)
    old = _signed(client, tokens, pem)
    add_systems(client, tokens, "d", "e", "f", "g", "h")
    sign(client, tokens)
    new = _signed(client, tokens, pem)
    assert new.size == old.size + 5
    headers = tokens.headers(Role.auditor)

    response = client.get(
        f"{AUDIT}/proofs/consistency", params={"old": old.size, "new": new.size}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["old_size"], body["new_size"]) == (old.size, new.size)
    assert bytes.fromhex(body["old_root"]) == old.root_hash
    assert bytes.fromhex(body["new_root"]) == new.root_hash
    hashes = [bytes.fromhex(h) for h in body["hashes"]]
    proof = ConsistencyProof(old.size, new.size, tuple(hashes))
    assert verify_consistency(proof, old.root_hash, new.root_hash)
    assert not verify_consistency(proof, new.root_hash, new.root_hash)
    tampered = [hashes[0][:-1] + bytes([hashes[0][-1] ^ 1]), *hashes[1:]]
    assert not verify_consistency(
        ConsistencyProof(old.size, new.size, tuple(tampered)), old.root_hash, new.root_hash
    )

    # With `new` left out the proof runs to the log as it is now; from 0 nothing needs proving.
    now = client.get(
        f"{AUDIT}/proofs/consistency", params={"old": old.size}, headers=headers
    ).json()
    assert now["new_size"] == page(client, tokens)["size"]
    empty = client.get(
        f"{AUDIT}/proofs/consistency", params={"old": 0, "new": new.size}, headers=headers
    ).json()
    assert empty["hashes"] == []
    assert bytes.fromhex(empty["old_root"]) == EMPTY_ROOT
    assert verify_consistency(ConsistencyProof(0, new.size, ()), EMPTY_ROOT, new.root_hash)


def test_a_forged_checkpoint_does_not_verify(client: TestClient, tokens: Tokens) -> None:
    add_systems(client, tokens, "a")
    sign(client, tokens)
    pem = _public_pem(client, tokens)
    note = client.get(f"{AUDIT}/checkpoints/latest", headers=tokens.headers(Role.auditor)).text
    origin, size, rest = note.split("\n", 2)
    with pytest.raises(TamperDetected):
        verify_checkpoint(f"{origin}\n{int(size) + 1}\n{rest}", pem)
    with pytest.raises(InvalidInput):
        verify_checkpoint(note, pem, origin="someone.else/log")


# -- bad proof parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("inclusion", {}),
        ("inclusion", {"index": -1}),
        ("inclusion", {"index": "first"}),
        ("inclusion", {"index": 0, "size": 0}),
        ("inclusion", {"index": 0, "size": 1000}),
        ("inclusion", {"index": 3, "size": 3}),
        ("inclusion", {"index": 1000}),
        ("inclusion", {"index": 2**64}),
        ("inclusion", {"index": 0, "size": "all"}),
        ("consistency", {}),
        ("consistency", {"old": -1}),
        ("consistency", {"old": 3, "new": 2}),
        ("consistency", {"old": 1, "new": 1000}),
        ("consistency", {"old": 1000}),
        ("consistency", {"old": 2**64}),
        ("consistency", {"old": "x"}),
    ],
)
def test_bad_proof_params_are_422(
    client: TestClient, tokens: Tokens, path: str, params: dict, expect_error
) -> None:
    add_systems(client, tokens, "a", "b")  # the log holds at least six entries
    response = client.get(
        f"{AUDIT}/proofs/{path}", params=params, headers=tokens.headers(Role.auditor)
    )
    expect_error(response, 422, "invalid_input")
