"""The key lifecycle in the control plane: create, list, show and destroy keys, each change
recorded as a `KeyRecord` and an audit entry in the caller's transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stockade.core import clock
from stockade.core.errors import Conflict, InvalidInput, NotFound
from stockade.core.keys import SigningAlgorithm, public_pem, validate_key_id
from stockade.core.kms import KMS, LocalKMS
from stockade.core.tables import KeyRecord

if TYPE_CHECKING:
    from stockade.core.workspace import Workspace

__all__ = [
    "KEK_ALGORITHM",
    "KEY_KINDS",
    "SIGNING_ALGORITHMS",
    "Key",
    "KeyKind",
    "create_key",
    "destroy_key",
    "get_key",
    "list_keys",
    "public_key_pem",
    "workspace_kms",
]

KeyKind = Literal["signing", "kek"]
KEY_KINDS: tuple[str, ...] = ("signing", "kek")
SIGNING_ALGORITHMS: tuple[str, ...] = ("ed25519", "ecdsa-p256")
KEK_ALGORITHM = "aes-256-gcm"
_MAX_PURPOSE = 2000
_MAX_REASON = 2000


@dataclass(frozen=True)
class Key:
    """What the control plane knows about a key; never its secret material."""

    id: str
    kind: str
    algorithm: str
    provider: str
    purpose: str
    public_key: str
    created_at: datetime
    destroyed_at: datetime | None

    @property
    def destroyed(self) -> bool:
        return self.destroyed_at is not None

    @classmethod
    def from_row(cls, row: KeyRecord) -> Key:
        return cls(
            id=row.id,
            kind=row.kind,
            algorithm=row.algorithm,
            provider=row.provider,
            purpose=row.purpose,
            public_key=row.public_key,
            created_at=row.created_at,
            destroyed_at=row.destroyed_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "algorithm": self.algorithm,
            "provider": self.provider,
            "purpose": self.purpose,
            "public_key": self.public_key,
            "state": "destroyed" if self.destroyed else "active",
            "created_at": clock.format_time(self.created_at),
            "destroyed_at": clock.format_time(self.destroyed_at) if self.destroyed_at else None,
        }


def workspace_kms(ws: Workspace) -> KMS:
    """The KMS holding the workspace's key-encryption keys (the one place to choose it)."""
    return LocalKMS(ws.keys)


def create_key(
    ws: Workspace,
    session: Session,
    *,
    key_id: str,
    kind: str,
    algorithm: str | None = None,
    purpose: str = "",
    actor: str,
) -> Key:
    """Create a signing key or a key-encryption key; ids are unique and never reused."""
    validate_key_id(key_id)
    if not actor:
        raise InvalidInput("actor is required")
    if kind not in KEY_KINDS:
        raise InvalidInput(f"key kind must be one of {', '.join(KEY_KINDS)}, not {kind!r}")
    if len(purpose) > _MAX_PURPOSE:
        raise InvalidInput(f"key purpose must be at most {_MAX_PURPOSE} characters")
    algorithm = _algorithm(kind, algorithm)
    existing = session.get(KeyRecord, key_id)
    if existing is not None:
        if existing.destroyed_at is not None:
            raise Conflict(
                f"key {key_id!r} already existed and was destroyed at "
                f"{clock.format_time(existing.destroyed_at)}; key ids are never reused"
            )
        raise Conflict(f"key {key_id!r} already exists")
    kms = workspace_kms(ws)
    _refuse_stray_material(ws, key_id)

    provider = kms.name if kind == "kek" else "local"
    row = KeyRecord(
        id=key_id,
        kind=kind,
        algorithm=algorithm,
        provider=provider,
        purpose=purpose,
        public_key="",
        created_at=clock.now(),
        destroyed_at=None,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"key {key_id!r} already exists") from None
    # Material after the record: if making it fails, the caller's transaction rolls the
    # record back, so a record never points at material that was not made.
    if kind == "kek":
        kms.create_kek(key_id)
    else:
        signing: SigningAlgorithm = "ed25519" if algorithm == "ed25519" else "ecdsa-p256"
        private = ws.keys.create_signing_key(key_id, signing)
        row.public_key = public_pem(private.public_key()).decode("ascii")
    details: dict[str, Any] = {
        "kind": kind,
        "algorithm": algorithm,
        "provider": provider,
        "purpose": purpose,
    }
    if row.public_key:
        details["public_key_sha256"] = hashlib.sha256(row.public_key.encode()).hexdigest()
    try:
        session.flush()
        ws.audit.append(
            session, actor=actor, action="key.create", subject=f"key:{key_id}", details=details
        )
    except BaseException:
        # The record rolls back; do not leave fresh material behind without one. Local key
        # material (the signing key, and a LocalKMS key) lives in the workspace key store.
        with contextlib.suppress(NotFound):
            ws.keys.destroy(key_id)
        raise
    return Key.from_row(row)


def list_keys(session: Session, include_destroyed: bool = False) -> list[Key]:
    """Keys in creation order; destroyed ones only when asked."""
    query = select(KeyRecord).order_by(KeyRecord.created_at, KeyRecord.id)
    if not include_destroyed:
        query = query.where(KeyRecord.destroyed_at.is_(None))
    return [Key.from_row(row) for row in session.scalars(query)]


def get_key(session: Session, key_id: str) -> Key:
    return Key.from_row(_row(session, key_id))


def public_key_pem(ws: Workspace, session: Session, key_id: str) -> str:
    """The PEM public key of a signing key, also after it was destroyed.

    Signing keys made outside the control plane (e.g. the audit checkpoint key) have no
    record; their public key comes from the key store.
    """
    try:
        row = _row(session, key_id)
    except NotFound:
        return public_pem(ws.keys.public_key(key_id)).decode("ascii")
    if row.kind != "signing":
        raise InvalidInput(f"key {key_id!r} is a key-encryption key; it has no public key")
    return row.public_key


def destroy_key(ws: Workspace, session: Session, *, key_id: str, actor: str, reason: str) -> Key:
    """Destroy a key's material for good and record when, by whom and why.

    A destroyed key-encryption key makes every object encrypted under it unreadable
    (crypto-shredding); a destroyed signing key can no longer sign, and its public key
    stays on record so earlier signatures still verify. The record is kept for audit.
    """
    if not actor:
        raise InvalidInput("actor is required")
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a reason is required to destroy a key")
    if len(reason) > _MAX_REASON:
        raise InvalidInput(f"the reason must be at most {_MAX_REASON} characters")
    row = _row(session, key_id, for_update=True)
    if row.destroyed_at is not None:
        raise Conflict(
            f"key {key_id!r} was already destroyed at {clock.format_time(row.destroyed_at)}"
        )
    material_found = _has_material(ws, row)
    row.destroyed_at = clock.now()
    session.flush()
    ws.audit.append(
        session,
        actor=actor,
        action="key.destroy",
        subject=f"key:{key_id}",
        details={
            "kind": row.kind,
            "algorithm": row.algorithm,
            "provider": row.provider,
            "reason": reason,
            "material_found": material_found,
        },
    )
    # Shred last, after everything that could still fail and roll back has run.
    if material_found:
        _destroy_material(ws, row)
    return Key.from_row(row)


# -- internals ----------------------------------------------------------------------------


def _algorithm(kind: str, algorithm: str | None) -> str:
    if kind == "kek":
        if algorithm not in (None, KEK_ALGORITHM):
            raise InvalidInput(
                f"a key-encryption key is always {KEK_ALGORITHM}; --algorithm chooses "
                f"a signing algorithm ({', '.join(SIGNING_ALGORITHMS)})"
            )
        return KEK_ALGORITHM
    algorithm = algorithm or "ed25519"
    if algorithm not in SIGNING_ALGORITHMS:
        raise InvalidInput(
            f"signing algorithm must be one of {', '.join(SIGNING_ALGORITHMS)}, not {algorithm!r}"
        )
    return algorithm


def _row(session: Session, key_id: str, *, for_update: bool = False) -> KeyRecord:
    # Ids that cannot exist never reach the database (nor its text-encoding rules).
    try:
        validate_key_id(key_id)
    except InvalidInput:
        raise NotFound(f"key {key_id[:100]!r} not found") from None
    row = session.get(KeyRecord, key_id, with_for_update=for_update)
    if row is None:
        raise NotFound(f"key {key_id!r} not found")
    return row


def _has_signing_material(ws: Workspace, key_id: str) -> bool:
    try:
        ws.keys.public_key(key_id)
    except NotFound:
        try:
            ws.keys.signing_key(key_id)
        except NotFound:
            return False
    return True


def _refuse_stray_material(ws: Workspace, key_id: str) -> None:
    """Key material without a record (made by hand, or left by a failed commit) is not adopted."""
    if ws.keys.has_kek(key_id) or _has_signing_material(ws, key_id):
        raise Conflict(
            f"key material for {key_id!r} already exists in {ws.keys.root} without a "
            "record; choose another id, or remove that material if you know it is unused"
        )


def _has_material(ws: Workspace, row: KeyRecord) -> bool:
    """False when the material is already gone (an earlier attempt shredded it but did not
    commit), so destroying again only completes the record."""
    if row.kind == "kek":
        return workspace_kms(ws).has_kek(row.id)
    return _has_signing_material(ws, row.id)


def _destroy_material(ws: Workspace, row: KeyRecord) -> None:
    if row.kind == "kek":
        workspace_kms(ws).destroy_kek(row.id)
        return
    if ws.keys.has_kek(row.id):
        # KeyStore.destroy removes every file of an id.
        raise Conflict(
            f"key id {row.id!r} names both a signing key and a key-encryption key in "
            f"{ws.keys.root}; refusing to destroy both"
        )
    ws.keys.destroy(row.id)
