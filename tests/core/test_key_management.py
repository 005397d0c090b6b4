"""The key lifecycle on both databases: records, audit entries, private key files, ids never
reused, and destruction that keeps the record but shreds the material."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select

from stockade.core import clock
from stockade.core.db import Database
from stockade.core.envelope import DecryptionFailed, decrypt_bytes, encrypt_bytes
from stockade.core.errors import Conflict, InvalidInput, NotFound
from stockade.core.key_management import (
    Key,
    create_key,
    destroy_key,
    get_key,
    list_keys,
    public_key_pem,
    workspace_kms,
)
from stockade.core.tables import KeyRecord
from stockade.core.workspace import Workspace

ACTOR = "user:alice"
MOMENT = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def ws(database: Database) -> Iterator[Workspace]:
    workspace = Workspace.open()
    yield workspace
    workspace.close()


def _create(ws: Workspace, key_id: str, kind: str, **kwargs: Any) -> Key:
    with ws.session() as session:
        return create_key(ws, session, key_id=key_id, kind=kind, actor=ACTOR, **kwargs)


def _destroy(ws: Workspace, key_id: str, reason: str = "model retired") -> Key:
    with ws.session() as session:
        return destroy_key(ws, session, key_id=key_id, actor=ACTOR, reason=reason)


def _audit(ws: Workspace, subject: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, actor, details) of every audit entry about `subject`, oldest first."""
    with ws.session() as session:
        return [
            (record.action, record.actor, record.details)
            for record in ws.audit.entries(session, subject=subject)
        ]


def test_create_signing_key_records_it_and_audits_it(ws: Workspace) -> None:
    with clock.frozen(MOMENT):
        key = _create(ws, "release-signing", "signing", purpose="sign model releases")

    assert (key.id, key.kind, key.algorithm, key.provider) == (
        "release-signing",
        "signing",
        "ed25519",
        "local",
    )
    assert key.purpose == "sign model releases"
    assert key.created_at == MOMENT
    assert not key.destroyed
    public = serialization.load_pem_public_key(key.public_key.encode())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert ws.keys.signing_key("release-signing").public_key() == public

    with ws.session() as session:
        assert get_key(session, "release-signing") == key
    [(action, actor, details)] = _audit(ws, "key:release-signing")
    assert (action, actor) == ("key.create", ACTOR)
    assert details["kind"] == "signing"
    assert details["algorithm"] == "ed25519"
    assert details["purpose"] == "sign model releases"
    assert "PRIVATE KEY" not in json.dumps(details)


def test_ecdsa_signing_key(ws: Workspace) -> None:
    key = _create(ws, "p256", "signing", algorithm="ecdsa-p256")
    assert key.algorithm == "ecdsa-p256"
    public = serialization.load_pem_public_key(key.public_key.encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)


def test_create_kek(ws: Workspace) -> None:
    key = _create(ws, "datasets-kek", "kek", purpose="training data at rest")
    assert (key.kind, key.algorithm, key.provider, key.public_key) == (
        "kek",
        "aes-256-gcm",
        "local",
        "",
    )
    assert workspace_kms(ws).has_kek("datasets-kek")
    [(action, _, details)] = _audit(ws, "key:datasets-kek")
    assert action == "key.create"
    assert details == {
        "kind": "kek",
        "algorithm": "aes-256-gcm",
        "provider": "local",
        "purpose": "training data at rest",
    }


def test_key_files_are_private(ws: Workspace) -> None:
    _create(ws, "signer", "signing")
    _create(ws, "vault", "kek")
    root = ws.settings.keys_dir
    for path in (root / "signing" / "signer.pem", root / "kek" / "vault.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (root, root / "signing", root / "kek"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    # Key material never enters the database.
    with ws.session() as session:
        for row in session.scalars(select(KeyRecord)):
            assert "PRIVATE" not in row.public_key


def test_ids_are_unique_across_kinds_and_never_reused(ws: Workspace) -> None:
    _create(ws, "shared", "kek")
    with pytest.raises(Conflict, match="already exists"):
        _create(ws, "shared", "kek")
    with pytest.raises(Conflict, match="already exists"):
        _create(ws, "shared", "signing")
    _destroy(ws, "shared")
    with pytest.raises(Conflict, match="never reused"):
        _create(ws, "shared", "kek")
    with pytest.raises(Conflict, match="never reused"):
        _create(ws, "shared", "signing")
    assert [action for action, _, _ in _audit(ws, "key:shared")] == ["key.create", "key.destroy"]


def test_material_without_a_record_is_not_adopted(ws: Workspace) -> None:
    ws.keys.create_kek("planted")
    with pytest.raises(Conflict, match="without a record"):
        _create(ws, "planted", "kek")
    ws.keys.create_signing_key("planted-signer")
    with pytest.raises(Conflict, match="without a record"):
        _create(ws, "planted-signer", "kek")
    with ws.session() as session:
        assert list_keys(session, include_destroyed=True) == []


@pytest.mark.parametrize(
    ("key_id", "kind", "algorithm", "message"),
    [
        ("Bad Id", "kek", None, "invalid key id"),
        ("../../etc", "kek", None, "invalid key id"),
        ("ok", "password", None, "key kind must be one of"),
        ("ok", "signing", "rsa-1024", "signing algorithm must be one of"),
        ("ok", "kek", "ecdsa-p256", "always aes-256-gcm"),
    ],
)
def test_invalid_requests_are_refused(
    ws: Workspace, key_id: str, kind: str, algorithm: str | None, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _create(ws, key_id, kind, algorithm=algorithm)
    with ws.session() as session:
        assert list_keys(session, include_destroyed=True) == []
    assert _audit(ws, f"key:{key_id}") == []


def test_list_in_creation_order_and_hide_destroyed(ws: Workspace) -> None:
    with clock.frozen(MOMENT):
        _create(ws, "b-kek", "kek")
    with clock.frozen(MOMENT.replace(second=1)):
        _create(ws, "a-signer", "signing")
    with clock.frozen(MOMENT.replace(second=2)):
        _create(ws, "c-kek", "kek")
    _destroy(ws, "b-kek")
    with ws.session() as session:
        assert [k.id for k in list_keys(session)] == ["a-signer", "c-kek"]
        assert [k.id for k in list_keys(session, include_destroyed=True)] == [
            "b-kek",
            "a-signer",
            "c-kek",
        ]


def test_unknown_keys_are_not_found(ws: Workspace) -> None:
    with ws.session() as session:
        for key_id in ("missing", "Not A Valid Id\x00"):
            with pytest.raises(NotFound, match="not found"):
                get_key(session, key_id)
    with pytest.raises(NotFound):
        _destroy(ws, "missing")


def test_destroying_a_kek_keeps_the_record_and_shreds_its_objects(ws: Workspace) -> None:
    _create(ws, "retiring", "kek")
    _create(ws, "staying", "kek")
    kms = workspace_kms(ws)
    doomed = encrypt_bytes(b"old training data", kms, "retiring")
    kept = encrypt_bytes(b"current training data", kms, "staying")

    with clock.frozen(MOMENT):
        key = _destroy(ws, "retiring", reason="dataset deleted on request (GDPR art. 17)")

    assert key.destroyed_at == MOMENT
    with ws.session() as session:
        assert get_key(session, "retiring").destroyed_at == MOMENT
    assert not (ws.settings.keys_dir / "kek" / "retiring.key").exists()
    with pytest.raises(DecryptionFailed, match="key destroyed"):
        decrypt_bytes(doomed, kms)
    assert decrypt_bytes(kept, kms) == b"current training data"

    actions = _audit(ws, "key:retiring")
    assert [(action, actor) for action, actor, _ in actions] == [
        ("key.create", ACTOR),
        ("key.destroy", ACTOR),
    ]
    assert actions[1][2] == {
        "kind": "kek",
        "algorithm": "aes-256-gcm",
        "provider": "local",
        "reason": "dataset deleted on request (GDPR art. 17)",
        "material_found": True,
    }


def test_destroying_a_signing_key_keeps_its_public_key(ws: Workspace) -> None:
    key = _create(ws, "old-signer", "signing")
    private = ws.keys.signing_key("old-signer")
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    signature = private.sign(b"model v1")
    _destroy(ws, "old-signer")

    with pytest.raises(NotFound):
        ws.keys.signing_key("old-signer")
    with ws.session() as session:
        pem = public_key_pem(ws, session, "old-signer")
        assert get_key(session, "old-signer").destroyed
    assert pem == key.public_key
    public = serialization.load_pem_public_key(pem.encode())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, b"model v1")


def test_public_key_of_a_kek_or_of_an_unrecorded_signing_key(ws: Workspace) -> None:
    _create(ws, "a-kek", "kek")
    ws.keys.create_signing_key("audit-checkpoints")
    with ws.session() as session:
        with pytest.raises(InvalidInput, match="no public key"):
            public_key_pem(ws, session, "a-kek")
        pem = public_key_pem(ws, session, "audit-checkpoints")
        assert pem.startswith("-----BEGIN PUBLIC KEY-----")
        with pytest.raises(NotFound):
            public_key_pem(ws, session, "nobody")


def test_destroy_needs_a_reason_and_happens_once(ws: Workspace) -> None:
    _create(ws, "k", "kek")
    with pytest.raises(InvalidInput, match="reason"):
        _destroy(ws, "k", reason="  ")
    assert workspace_kms(ws).has_kek("k")
    _destroy(ws, "k")
    with pytest.raises(Conflict, match="already destroyed"):
        _destroy(ws, "k")
    assert [action for action, _, _ in _audit(ws, "key:k")] == ["key.create", "key.destroy"]


def test_destroy_completes_when_the_material_is_already_gone(ws: Workspace) -> None:
    """An earlier attempt shredded the material but its transaction did not commit."""
    _create(ws, "half", "kek")
    workspace_kms(ws).destroy_kek("half")
    key = _destroy(ws, "half")
    assert key.destroyed
    action, _, details = _audit(ws, "key:half")[-1]
    assert action == "key.destroy"
    assert details["reason"] == "model retired"
    assert details["material_found"] is False


def test_a_destroy_rolled_back_by_the_caller_still_shreds_and_can_be_completed(
    ws: Workspace,
) -> None:
    """Shredding is not transactional: it fails closed (material gone) and a second destroy
    brings the record and the audit log in line."""
    _create(ws, "sturdy", "kek")
    with pytest.raises(RuntimeError), ws.session() as session:
        destroy_key(ws, session, key_id="sturdy", actor=ACTOR, reason="oops")
        raise RuntimeError("the caller failed after destroy_key")
    with ws.session() as session:
        assert not get_key(session, "sturdy").destroyed
    assert not workspace_kms(ws).has_kek("sturdy")
    assert [action for action, _, _ in _audit(ws, "key:sturdy")] == ["key.create"]
    _destroy(ws, "sturdy")
    with ws.session() as session:
        assert get_key(session, "sturdy").destroyed
    assert [action for action, _, _ in _audit(ws, "key:sturdy")] == ["key.create", "key.destroy"]
