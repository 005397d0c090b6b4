"""The tamper-evident audit log: canonical JSON entries as leaves of an RFC 6962 Merkle tree,
signed checkpoints (C2SP signed notes), proofs, and a verifier that trusts only entry bytes.

Entries are written in the caller's transaction, so a state change and its audit entry commit
together. Secrets never belong in an entry: callers mask them before `append` (an entry is
permanent by design and cannot be redacted later without breaking the log).

Each entry also names the leaf hash of the one before it (`previous`), so an entry edited
together with its stored leaf hash is still pinned to its index by its successor.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import itertools
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import Row, String, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stockade.core import clock
from stockade.core.errors import ConfigError, InvalidInput, StorageUnavailable, TamperDetected
from stockade.core.keys import KeyStore, validate_key_id
from stockade.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    ConsistencyProof,
    Frontier,
    InclusionProof,
    consistency_ranges,
    hash_ranges,
    inclusion_ranges,
    leaf_hash,
)
from stockade.core.tables import AuditCheckpoint, AuditEntry, AuditHead

__all__ = [
    "MAX_ENTRY_BYTES",
    "AuditLog",
    "AuditProblem",
    "AuditRecord",
    "AuditVerification",
    "Checkpoint",
    "ProblemKind",
    "ProvedConsistency",
    "ProvedInclusion",
    "parse_checkpoint",
    "verify_checkpoint",
]

MAX_ENTRY_BYTES = 256 * 1024
MAX_PAGE = 10_000
_MAX_NOTE_CHARS = 16 * 1024
_MAX_PROBLEMS = 1000
_BATCH = 1000
_HEAD_ID = 1
_LAST_INDEX = 2**63 - 1
_ED25519 = b"\x01"  # signature type of Ed25519 in C2SP signed notes
_DASH = "\u2014"
_FIELDS = frozenset({"index", "actor", "action", "subject", "timestamp", "details", "previous"})
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_VERIFY_HINT = "run `stockade audit verify`"

ProblemKind = Literal[
    "missing",  # entries absent: a gap, or the tail cut off
    "unexpected",  # entries where the log has none (outside the head's size)
    "malformed",  # not a canonical JSON audit entry
    "misplaced",  # the entry names another index: reordered or renumbered
    "leaf_hash",  # content no longer matches its stored leaf hash
    "columns",  # the indexed columns disagree with the entry
    "altered",  # content no longer matches the hash its successor (or the head) recorded
    "head",  # the log head disagrees with the entries
    "forged_checkpoint",  # a checkpoint whose signature, origin or columns do not hold
    "checkpoint_mismatch",  # a valid checkpoint whose root differs from the recomputed one
    "truncated",  # a valid checkpoint vouches for more entries than the log holds
    "shrunk",  # a later checkpoint covers fewer entries than an earlier one
    "more",  # further problems, not listed
]


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One audit entry as recorded (read from its hashed bytes, not from the index columns)."""

    index: int
    timestamp: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    leaf_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "timestamp": clock.format_time(self.timestamp),
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "details": self.details,
            "leaf_hash": self.leaf_hash.hex(),
        }


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the log `origin` had `size` entries with root `root_hash`."""

    origin: str
    size: int
    root_hash: bytes
    text: str
    id: int | None = None
    created_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash.hex(),
            "created_at": clock.format_time(self.created_at) if self.created_at else None,
            "text": self.text,
        }


@dataclass(frozen=True)
class ProvedInclusion:
    """Entry `record` is leaf `proof.leaf_index` of the tree of `proof.tree_size` leaves."""

    record: AuditRecord
    entry: bytes
    proof: InclusionProof
    root_hash: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "leaf_index": self.proof.leaf_index,
            "tree_size": self.proof.tree_size,
            "leaf_hash": self.record.leaf_hash.hex(),
            "root_hash": self.root_hash.hex(),
            "hashes": [h.hex() for h in self.proof.hashes],
            "entry": self.entry.decode("utf-8"),
        }


@dataclass(frozen=True)
class ProvedConsistency:
    """The tree of `proof.old_size` leaves (root `old_root`) is a prefix of the newer one."""

    proof: ConsistencyProof
    old_root: bytes
    new_root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "old_size": self.proof.old_size,
            "new_size": self.proof.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "hashes": [h.hex() for h in self.proof.hashes],
        }


@dataclass(frozen=True)
class AuditProblem:
    """One sign of tampering; `index` names the entry where one can be named."""

    index: int | None
    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return f"{self.message} [{self.kind}]"


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of recomputing the whole log; `uncovered` entries follow the latest
    valid checkpoint, so only the unsigned head vouches for them."""

    ok: bool
    size: int
    checkpoints_checked: int
    uncovered: int
    problems: tuple[AuditProblem, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "checkpoints_checked": self.checkpoints_checked,
            "uncovered": self.uncovered,
            "problems": [
                {"index": p.index, "kind": p.kind, "message": p.message} for p in self.problems
            ],
        }


# -- canonical entries ------------------------------------------------------------------


class _Malformed(Exception):
    """An entry's bytes are not a canonical audit entry (message says why)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def _canonical(value: Any) -> bytes:
    """Keys sorted, no spaces, UTF-8, no NaN or infinities."""
    return _ENCODER.encode(value).encode("utf-8")


def _string_keys(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _string_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_string_keys(v) for v in value)
    return True


def _parse_time(text: str) -> datetime:
    """The inverse of `clock.format_time`; ValueError for any other form."""
    if not _TIMESTAMP.fullmatch(text):
        raise ValueError(f"not an audit timestamp: {text!r}")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def _decode(data: bytes) -> dict[str, Any]:
    """The fields of an entry, or `_Malformed` when the bytes are not a canonical entry."""
    try:
        value = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Malformed("is not UTF-8 JSON") from exc
    if not isinstance(value, dict) or set(value) != _FIELDS:
        raise _Malformed("is not an audit entry (wrong fields)")
    if _canonical(value) != data:
        raise _Malformed("is not in canonical form (re-encoded, or bytes changed)")
    index, previous = value["index"], value["previous"]
    if type(index) is not int or index < 0:
        raise _Malformed("has an invalid index")
    if not all(isinstance(value[k], str) for k in ("actor", "action", "subject", "timestamp")):
        raise _Malformed("has a non-text actor, action, subject or timestamp")
    if not isinstance(value["details"], dict):
        raise _Malformed("has details that are not an object")
    try:
        value["timestamp"] = _parse_time(value["timestamp"])
    except ValueError as exc:
        raise _Malformed("has an invalid timestamp") from exc
    if index == 0 and previous is not None:
        raise _Malformed("is the first entry but names a previous one")
    if index > 0 and not (isinstance(previous, str) and _HEX_HASH.fullmatch(previous)):
        raise _Malformed("does not name the previous entry's hash")
    return value


def _blob(value: Any) -> bytes:
    """A binary column's value as bytes; SQLite keeps whatever type an attacker wrote."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def _stored_time(value: Any) -> datetime | None:
    """The `at` column read without its type's processing, so a garbled value cannot stop
    verification (SQLite returns text, PostgreSQL a datetime)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record(idx: int, data: bytes, stored_hash: bytes) -> AuditRecord:
    try:
        value = _decode(data)
    except _Malformed as exc:
        raise TamperDetected(f"audit entry {idx} {exc}; {_VERIFY_HINT}") from None
    return AuditRecord(
        index=value["index"],
        timestamp=value["timestamp"],
        actor=value["actor"],
        action=value["action"],
        subject=value["subject"],
        details=value["details"],
        leaf_hash=stored_hash,
    )


def _check_text(name: str, value: Any, limit: int, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"audit {name} must be text")
    if required and not value:
        raise InvalidInput(f"audit {name} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"audit {name} must be at most {limit} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidInput(f"audit {name} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"audit {name} is not valid Unicode text") from None
    return value


# -- signed notes -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    name: str
    key_hash: bytes
    signature: bytes


def _key_hash(name: str, raw_public: bytes) -> bytes:
    return sha256(name.encode("utf-8") + b"\n" + _ED25519 + raw_public).digest()[:4]


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str) -> bool:
    """A key name (here, the origin) is non-empty, printable, without spaces or '+'."""
    return bool(name) and name.isprintable() and not any(c.isspace() or c == "+" for c in name)


def _note_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def _parse_note(text: str) -> tuple[Checkpoint, str, list[_Signature]]:
    def invalid(reason: str) -> InvalidInput:
        return InvalidInput(f"not a signed audit checkpoint: {reason}")

    if not isinstance(text, str):
        raise invalid("not text")
    if len(text) > _MAX_NOTE_CHARS:
        raise invalid(f"longer than {_MAX_NOTE_CHARS} characters")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise invalid("contains control characters")
    if not text.endswith("\n"):
        raise invalid("does not end with a newline")
    head, sep, tail = text.partition("\n\n")
    if not sep or not tail:
        raise invalid("no blank line before the signatures")
    body = head + "\n"
    lines = head.split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise invalid("the body needs origin, size and root hash lines")
    origin, size_text, root_text = lines[:3]
    if not _check_name(origin):
        raise invalid("invalid origin line")
    if not _SIZE.fullmatch(size_text) or int(size_text) >= 2**63:
        raise invalid("invalid tree size line")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise invalid("the root hash is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_text:
        raise invalid("the root hash is not 32 bytes of canonical base64")
    signatures = []
    for line in tail[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or not _check_name(parts[1]):
            raise invalid("malformed signature line")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise invalid("a signature is not base64") from None
        if len(blob) < 5:
            raise invalid("a signature is too short")
        signatures.append(_Signature(parts[1], blob[:4], blob[4:]))
    return Checkpoint(origin, int(size_text), root, text), body, signatures


def parse_checkpoint(text: str) -> Checkpoint:
    """Read a checkpoint's origin, size and root hash (signatures are not checked here)."""
    return _parse_note(text)[0]


def _public_key(value: ed25519.Ed25519PublicKey | bytes | str) -> ed25519.Ed25519PublicKey:
    if isinstance(value, ed25519.Ed25519PublicKey):
        return value
    data = value.encode("utf-8") if isinstance(value, str) else value
    try:
        if len(data) == 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("the public key is neither PEM nor 32 raw Ed25519 bytes") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInput("audit checkpoints are signed with Ed25519; this key is another kind")
    return key


def verify_checkpoint(
    text: str,
    public_key: ed25519.Ed25519PublicKey | bytes | str,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint, if `public_key` (object, PEM or 32 raw bytes) signed it.

    Needs nothing but the text and the key, so an auditor can check an exported checkpoint
    offline. Raises InvalidInput for text that is not a checkpoint (or is for another
    `origin`), TamperDetected when no valid signature by the key is on it.
    """
    key = _public_key(public_key)
    checkpoint, body, signatures = _parse_note(text)
    if origin is not None and checkpoint.origin != origin:
        raise InvalidInput(f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}")
    expected = _key_hash(checkpoint.origin, _raw_public(key))
    for signature in signatures:
        if signature.name != checkpoint.origin or signature.key_hash != expected:
            continue
        try:
            key.verify(signature.signature, body.encode("utf-8"))
        except InvalidSignature:
            raise TamperDetected(
                "the checkpoint's signature does not verify: the checkpoint was altered or forged"
            ) from None
        return checkpoint
    raise TamperDetected("the checkpoint carries no signature by this log's key")


# -- the log ----------------------------------------------------------------------------


def _batches(session: Session, columns: Sequence[Any], *, stop: int) -> Iterator[Row[Any]]:
    """Entry rows with idx < stop in idx order, fetched `_BATCH` at a time (bounded memory)."""
    after = None
    while True:
        query = select(*columns).where(AuditEntry.idx < stop).order_by(AuditEntry.idx).limit(_BATCH)
        if after is not None:
            query = query.where(AuditEntry.idx > after)
        rows = session.execute(query).all()
        yield from rows
        if len(rows) < _BATCH:
            return
        after = rows[-1].idx


# Built once: append runs with every state change, and building statements costs more than
# running them.
_READ_HEAD = select(AuditHead.size, AuditHead.frontier).where(AuditHead.id == _HEAD_ID)
_LOCK_HEAD = _READ_HEAD.with_for_update()
_MOVE_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == _HEAD_ID)
    .values(size=bindparam("new_size"), frontier=bindparam("new_frontier"))
)
_LEAF_AT = select(AuditEntry.leaf_hash).where(AuditEntry.idx == bindparam("at"))
_ADD_ENTRY = insert(AuditEntry)


def _head_from(size: int, blob: bytes) -> Frontier:
    try:
        return Frontier.from_bytes(size, blob)
    except (ValueError, TypeError) as exc:
        raise TamperDetected(f"the audit log head is corrupted ({exc}); {_VERIFY_HINT}") from None


class AuditLog:
    """The append-only audit log of one workspace, signed with the Ed25519 key `key_id`."""

    def __init__(self, keys: KeyStore, origin: str, key_id: str = "audit") -> None:
        if not _check_name(origin):
            raise ConfigError(
                f"invalid audit origin {origin!r}: it names the log and its key, so it must be "
                "non-empty and printable, without spaces or '+'"
            )
        self.keys = keys
        self.origin = origin
        self.key_id = validate_key_id(key_id)

    parse_checkpoint = staticmethod(parse_checkpoint)
    verify_checkpoint = staticmethod(verify_checkpoint)

    # -- keys -------------------------------------------------------------------------
    def _signing_key(self) -> ed25519.Ed25519PrivateKey:
        key = self.keys.ensure_signing_key(self.key_id)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(
                f"audit signing key {self.key_id!r} is not Ed25519, which signed notes require"
            )
        return key

    def public_key(self) -> ed25519.Ed25519PublicKey:
        """The key checkpoints verify with (the signing key is created on first use)."""
        return self._signing_key().public_key()

    def _verifying_key(self) -> ed25519.Ed25519PublicKey:
        key = self.keys.public_key(self.key_id)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"audit public key {self.key_id!r} is not Ed25519")
        return key

    # -- head -------------------------------------------------------------------------
    def _head(self, session: Session, *, lock: bool = False) -> Frontier | None:
        row = session.execute(_LOCK_HEAD if lock else _READ_HEAD).one_or_none()
        return None if row is None else _head_from(row.size, row.frontier)

    def _lock_head(self, session: Session) -> Frontier:
        """The head row, locked until the caller's transaction ends; created on first use."""
        head = self._head(session, lock=True)
        if head is not None:
            return head
        if session.execute(select(AuditEntry.idx).limit(1)).first() is not None:
            raise TamperDetected(f"the audit log head is missing but entries exist; {_VERIFY_HINT}")
        dialect = session.get_bind().dialect.name
        values = {"id": _HEAD_ID, "size": 0, "frontier": b""}
        if dialect == "postgresql":
            statement: Any = postgresql.insert(AuditHead).values(values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            statement = sqlite.insert(AuditHead).values(values).on_conflict_do_nothing()
        else:
            statement = insert(AuditHead).values(values)
        session.execute(statement)
        head = self._head(session, lock=True)
        if head is None:  # neither inserted here nor by a concurrent first append
            raise StorageUnavailable("the audit log head could not be created")
        return head

    def size(self, session: Session) -> int:
        head = self._head(session)
        return head.size if head else 0

    def root(self, session: Session) -> bytes:
        head = self._head(session)
        return head.root() if head else EMPTY_ROOT

    # -- writing ----------------------------------------------------------------------
    def append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        subject: str,
        details: dict[str, Any],
    ) -> AuditRecord:
        """Add one entry in the caller's transaction. Mask secrets in `details` first."""
        _check_text("actor", actor, 200, required=True)
        _check_text("action", action, 100, required=True)
        _check_text("subject", subject, 300, required=False)
        if not isinstance(details, dict):
            raise InvalidInput("audit details must be a JSON object")
        try:
            if not _string_keys(details):
                raise InvalidInput("audit details must have text keys")
            _canonical(details)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"audit details are not JSON: {exc}") from None

        head = self._lock_head(session)
        index = head.size
        previous = None
        if index:
            previous = session.execute(_LEAF_AT, {"at": index - 1}).scalar_one_or_none()
            if previous is None:
                raise TamperDetected(f"audit entry {index - 1} is missing; {_VERIFY_HINT}")
        stamp = clock.format_time(clock.now())
        data = _canonical(
            {
                "index": index,
                "actor": actor,
                "action": action,
                "subject": subject,
                "timestamp": stamp,
                "details": details,
                "previous": _blob(previous).hex() if previous is not None else None,
            }
        )
        if len(data) > MAX_ENTRY_BYTES:
            raise InvalidInput(f"audit entry exceeds {MAX_ENTRY_BYTES} bytes")
        leaf = leaf_hash(data)
        moment = _parse_time(stamp)
        try:
            session.execute(
                _ADD_ENTRY,
                {
                    "idx": index,
                    "entry": data,
                    "leaf_hash": leaf,
                    "action": action,
                    "subject": subject,
                    "actor": actor,
                    "at": moment,
                },
            )
        except IntegrityError:
            raise TamperDetected(
                f"audit entry {index} already exists beyond the log head; {_VERIFY_HINT}"
            ) from None
        head = head.append(leaf)
        session.execute(_MOVE_HEAD, {"new_size": head.size, "new_frontier": head.to_bytes()})
        return _record(index, data, leaf)

    def checkpoint(self, session: Session, *, only_if_grown: bool = False) -> Checkpoint | None:
        """Sign the current size and root. With `only_if_grown`, None when nothing was added
        since the latest checkpoint (an empty log is never signed then)."""
        head = self._lock_head(session)
        count, top = session.execute(select(func.count(), func.max(AuditEntry.idx))).one()
        if count != head.size or (count and top != head.size - 1):
            raise TamperDetected(
                f"the audit log head says {head.size} entries but {count} are stored; "
                f"{_VERIFY_HINT}"
            )
        latest = self.latest_checkpoint(session)
        if latest is not None and head.size < latest.size:
            raise TamperDetected(
                f"the audit log has {head.size} entries but checkpoint {latest.id} vouched "
                f"for {latest.size}; {_VERIFY_HINT}"
            )
        if only_if_grown and head.size == (latest.size if latest else 0):
            return None
        key = self._signing_key()
        root = head.root()
        body = _note_body(self.origin, head.size, root)
        blob = _key_hash(self.origin, _raw_public(key.public_key())) + key.sign(
            body.encode("utf-8")
        )
        text = f"{body}\n{_DASH} {self.origin} {base64.b64encode(blob).decode('ascii')}\n"
        row = AuditCheckpoint(
            size=head.size, root_hash=root, note=text, key_id=self.key_id, at=clock.now()
        )
        session.add(row)
        session.flush()
        return Checkpoint(self.origin, head.size, root, text, row.id, row.at)

    # -- reading ----------------------------------------------------------------------
    def entries(
        self,
        session: Session,
        *,
        start: int = 0,
        limit: int = 100,
        action: str | None = None,
        subject: str | None = None,
        actor: str | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        """Entries matching the filters, oldest first; `start` skips that many matches."""
        if start < 0:
            raise InvalidInput("start must not be negative")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        query = select(AuditEntry.idx, AuditEntry.entry, AuditEntry.leaf_hash)
        if action is not None:
            query = query.where(AuditEntry.action == action)
        if subject is not None:
            query = query.where(AuditEntry.subject == subject)
        if actor is not None:
            query = query.where(AuditEntry.actor == actor)
        order = AuditEntry.idx.desc() if newest_first else AuditEntry.idx
        query = query.order_by(order).offset(start).limit(limit)
        rows = session.execute(query)
        return [_record(r.idx, _blob(r.entry), _blob(r.leaf_hash)) for r in rows]

    def _checkpoint_from(self, row: AuditCheckpoint) -> Checkpoint:
        try:
            parsed = parse_checkpoint(row.note)
        except InvalidInput as exc:
            raise TamperDetected(
                f"audit checkpoint {row.id} is corrupted ({exc.message}); {_VERIFY_HINT}"
            ) from None
        return Checkpoint(parsed.origin, parsed.size, parsed.root_hash, row.note, row.id, row.at)

    def latest_checkpoint(self, session: Session) -> Checkpoint | None:
        row = session.scalars(
            select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)
        ).first()
        return self._checkpoint_from(row) if row else None

    def checkpoints(self, session: Session, *, limit: int = 100) -> list[Checkpoint]:
        """The most recent checkpoints, newest first."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        rows = session.scalars(
            select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(limit)
        )
        return [self._checkpoint_from(row) for row in rows]

    # -- proofs -----------------------------------------------------------------------
    def _subtree_hashes(
        self, session: Session, head: Frontier, ranges: list[tuple[int, int]]
    ) -> list[bytes]:
        """Hashes of `ranges` plus the root at the head's size, from the stored leaf hashes
        read once; raises TamperDetected when those do not add up to the head's root."""

        def leaves() -> Iterator[bytes]:
            expected = 0
            for row in _batches(session, (AuditEntry.idx, AuditEntry.leaf_hash), stop=head.size):
                if row.idx != expected:
                    raise TamperDetected(f"audit entry {expected} is missing; {_VERIFY_HINT}")
                expected += 1
                yield _blob(row.leaf_hash)
            if expected != head.size:
                raise TamperDetected(f"audit entry {expected} is missing; {_VERIFY_HINT}")

        try:
            *hashes, head_root = hash_ranges(leaves(), [*ranges, (0, head.size)])
        except ValueError as exc:
            raise TamperDetected(
                f"a stored leaf hash is corrupted ({exc}); {_VERIFY_HINT}"
            ) from None
        if not hmac.compare_digest(head_root, head.root()):
            raise TamperDetected(
                f"the stored leaf hashes do not add up to the log head; {_VERIFY_HINT}"
            )
        return hashes

    def _check_against_checkpoints(self, session: Session, roots: dict[int, bytes]) -> None:
        """A cheap cross-check of proved roots with the stored checkpoint text at the same
        size, if any; `verify` is what checks signatures."""
        for size, root in roots.items():
            row = session.scalars(
                select(AuditCheckpoint)
                .where(AuditCheckpoint.size == size)
                .order_by(AuditCheckpoint.id.desc())
                .limit(1)
            ).first()
            if row is None:
                continue
            checkpoint = self._checkpoint_from(row)
            if checkpoint.size != size or not hmac.compare_digest(checkpoint.root_hash, root):
                raise TamperDetected(
                    f"the log at size {size} does not match checkpoint {row.id}; {_VERIFY_HINT}"
                )

    def inclusion_proof(
        self, session: Session, index: int, tree_size: int | None = None
    ) -> ProvedInclusion:
        """Prove that entry `index` is in the log of `tree_size` entries (default: now)."""
        head = self._head(session) or Frontier()
        size = head.size if tree_size is None else tree_size
        if not 0 < size <= head.size:
            raise InvalidInput(f"tree size must be between 1 and {head.size} (the log's size)")
        if not 0 <= index < size:
            raise InvalidInput(f"entry {index} is not in a log of {size} entries")
        row = session.execute(
            select(AuditEntry.entry, AuditEntry.leaf_hash).where(AuditEntry.idx == index)
        ).one_or_none()
        if row is None:
            raise TamperDetected(f"audit entry {index} is missing; {_VERIFY_HINT}")
        entry = _blob(row.entry)
        leaf = leaf_hash(entry)
        if not hmac.compare_digest(leaf, _blob(row.leaf_hash)):
            raise TamperDetected(
                f"audit entry {index} no longer matches its leaf hash; {_VERIFY_HINT}"
            )
        record = _record(index, entry, leaf)
        *path, root = self._subtree_hashes(
            session, head, [*inclusion_ranges(index, size), (0, size)]
        )
        self._check_against_checkpoints(session, {size: root, head.size: head.root()})
        return ProvedInclusion(record, entry, InclusionProof(index, size, tuple(path)), root)

    def consistency_proof(
        self, session: Session, old_size: int, new_size: int | None = None
    ) -> ProvedConsistency:
        """Prove that the log of `old_size` entries is a prefix of the one of `new_size`."""
        head = self._head(session) or Frontier()
        new = head.size if new_size is None else new_size
        if not 0 <= old_size <= new <= head.size:
            raise InvalidInput(
                f"sizes must satisfy 0 <= old ({old_size}) <= new ({new}) <= {head.size} "
                "(the log's size)"
            )
        ranges = consistency_ranges(old_size, new)
        *path, old_root, new_root = self._subtree_hashes(
            session, head, [*ranges, (0, old_size), (0, new)]
        )
        self._check_against_checkpoints(
            session, {old_size: old_root, new: new_root, head.size: head.root()}
        )
        return ProvedConsistency(ConsistencyProof(old_size, new, tuple(path)), old_root, new_root)

    # -- verification -----------------------------------------------------------------
    def verify(
        self, session: Session, *, external_checkpoints: Sequence[str] = ()
    ) -> AuditVerification:
        """Recompute the log from the stored entry bytes and check every stored checkpoint,
        and each checkpoint text saved elsewhere (`external_checkpoints`), against it.

        Raises only when verification cannot be done (unreadable checkpoint text, missing
        public key, storage errors); every sign of tampering is an `AuditProblem`.
        """
        return _Verification(self, session, external_checkpoints).run()


# -- verification -----------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Target:
    """A root some checkpoint vouches for at `size`, to compare with the recomputed one."""

    size: int
    order: int
    label: str = field(compare=False)
    root: bytes = field(compare=False)


def _entries(first: int, last: int) -> str:
    return f"entry {first} is" if first == last else f"entries {first} to {last} are"


class _Verification:
    """One pass over the entries in idx order, comparing each checkpoint (stored ones are
    streamed in size order) when the recomputed tree reaches its size."""

    def __init__(self, log: AuditLog, session: Session, externals: Sequence[str]) -> None:
        self.log = log
        self.session = session
        self.problems: list[AuditProblem] = []
        self.unlisted = 0
        self.tree = Frontier()  # the tree recomputed from the entry bytes
        self.next_stop: int | None = 0  # the next tree size some checkpoint vouches for
        self.targets: list[_Target] = []  # heap, smallest size first
        self.order = itertools.count()
        self.checked = 0
        self.signed_size = 0  # the largest size a validly signed checkpoint vouches for
        self.last_match = 0  # the largest size whose checkpoint matched
        self.max_checkpoint_id = 0
        self._key: ed25519.Ed25519PublicKey | None = None
        self._stored: list[Row[Any]] = []  # fetched, not yet examined; next at the end
        self._stored_after: tuple[int, int] | None = None
        self._stored_done = False
        self._newest: Row[Any] | None = None  # the highest-id checkpoint examined so far
        self._externals = [parse_checkpoint(text) for text in externals]
        for checkpoint in self._externals:
            if checkpoint.origin != log.origin:
                raise InvalidInput(
                    f"a checkpoint of log {checkpoint.origin!r} cannot vouch for log {log.origin!r}"
                )

    def problem(self, index: int | None, kind: ProblemKind, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(AuditProblem(index, kind, message))
        else:
            self.unlisted += 1

    def key(self) -> ed25519.Ed25519PublicKey:
        if self._key is None:
            self._key = self.log._verifying_key()
        return self._key

    # -- checkpoints ------------------------------------------------------------------
    def _fetch_stored(self) -> None:
        table = AuditCheckpoint
        query = (
            select(table.id, table.size, table.root_hash, table.note)
            .where(table.id <= self.max_checkpoint_id)
            .order_by(table.size, table.id)
            .limit(_BATCH)
        )
        if self._stored_after is not None:
            size, ident = self._stored_after
            query = query.where((table.size > size) | ((table.size == size) & (table.id > ident)))
        rows = self.session.execute(query).all()
        self._stored = rows[::-1]
        self._stored_done = len(rows) < _BATCH
        if rows:
            self._stored_after = (rows[-1].size, rows[-1].id)

    def _pull(self, size: int | None) -> None:
        """Examine the stored checkpoints whose size column is <= size (all when None)."""
        while True:
            if not self._stored:
                if self._stored_done:
                    return
                self._fetch_stored()
                continue
            if size is not None and self._stored[-1].size > size:
                return
            self._examine(self._stored.pop())

    def _examine(self, row: Row[Any]) -> None:
        label = f"checkpoint {row.id}"
        newest = self._newest
        if newest is not None and row.id < newest.id:
            self.problem(
                None,
                "shrunk",
                f"checkpoint {newest.id} (size {newest.size}) was made after checkpoint "
                f"{row.id} (size {row.size}): the log shrank",
            )
        else:
            self._newest = row
        try:
            signed = verify_checkpoint(row.note, self.key(), origin=self.log.origin)
        except (InvalidInput, TamperDetected) as exc:
            self.problem(None, "forged_checkpoint", f"{label} is forged or altered: {exc.message}")
            return
        if signed.size != row.size or signed.root_hash != _blob(row.root_hash):
            self.problem(
                None, "forged_checkpoint", f"{label}'s size or root column differs from its text"
            )
        self._add_target(signed.size, label, signed.root_hash)

    def _add_target(self, size: int, label: str, root: bytes) -> None:
        self.signed_size = max(self.signed_size, size)
        heapq.heappush(self.targets, _Target(size, next(self.order), label, root))

    def _add_externals(self) -> None:
        for number, checkpoint in enumerate(self._externals, start=1):
            label = f"external checkpoint {number} (size {checkpoint.size})"
            try:
                verify_checkpoint(checkpoint.text, self.key())
            except TamperDetected as exc:
                self.problem(
                    None,
                    "forged_checkpoint",
                    f"{label} does not verify with this log's key ({exc.message}): it was "
                    "forged, or the log's key was replaced",
                )
                continue
            self._add_target(checkpoint.size, label, checkpoint.root_hash)

    def _settle(self) -> int | None:
        """Compare every checkpoint at the current size; returns the next size to stop at."""
        size = self.tree.size
        self._pull(size)
        while self.targets and self.targets[0].size <= size:
            target = heapq.heappop(self.targets)
            if target.size < size:
                continue  # its size column lied; reported as forged already
            self.checked += 1
            if hmac.compare_digest(target.root, self.tree.root()):
                self.last_match = max(self.last_match, target.size)
                continue
            self.problem(
                None,
                "checkpoint_mismatch",
                f"{target.label} does not match the log: an entry from {self.last_match} to "
                f"{target.size - 1} was changed, removed or inserted after it was signed",
            )
        following = [self.targets[0].size] if self.targets else []
        if self._stored:  # after _pull, an empty buffer means no more stored checkpoints
            following.append(self._stored[-1].size)
        return min(following, default=None)

    # -- the pass ---------------------------------------------------------------------
    def run(self) -> AuditVerification:
        # One statement, so PostgreSQL reads all four from the same snapshot.
        head_size, head_blob, top, max_checkpoint_id = self.session.execute(
            select(
                select(AuditHead.size).where(AuditHead.id == _HEAD_ID).scalar_subquery(),
                select(AuditHead.frontier).where(AuditHead.id == _HEAD_ID).scalar_subquery(),
                select(func.max(AuditEntry.idx)).scalar_subquery(),
                select(func.max(AuditCheckpoint.id)).scalar_subquery(),
            )
        ).one()
        self.max_checkpoint_id = max_checkpoint_id or 0
        if top is not None and not isinstance(top, int):
            # SQLite keeps text an attacker writes into an integer column, and sorts it last.
            self.problem(None, "malformed", "an entry's index is not a number")
            top = _LAST_INDEX - 1
        stop = max(
            head_size if isinstance(head_size, int) else 0, top + 1 if top is not None else 0
        )

        self._add_externals()
        expected = 0  # the next idx
        previous: bytes | None = None  # recomputed leaf hash of the entry before, if sound
        columns = (
            AuditEntry.idx,
            AuditEntry.entry,
            AuditEntry.leaf_hash,
            AuditEntry.actor,
            AuditEntry.action,
            AuditEntry.subject,
            type_coerce(AuditEntry.at, String).label("at"),
        )
        leaves: list[bytes] = []
        for row in _batches(self.session, columns, stop=stop):
            idx = row.idx
            if idx > expected:
                self.problem(expected, "missing", f"{_entries(expected, idx - 1)} missing")
                previous = None
            elif idx < expected:
                self.problem(idx, "unexpected", f"entry {idx} has a negative index")
                previous = None
            entry = _blob(row.entry)
            leaf = leaf_hash(entry)
            previous = leaf if self._check_entry(row, entry, leaf, previous) else None
            leaves.append(leaf)
            if len(leaves) == _BATCH:
                self._grow(leaves)
                leaves = []
            expected = idx + 1
        self._grow(leaves)
        self._pull(None)
        for target in sorted(self.targets):
            if target.size <= expected:
                self.checked += 1
                self.problem(
                    None,
                    "checkpoint_mismatch",
                    f"{target.label} does not match the log: entries before {target.size} "
                    "are missing",
                )
                continue
            self.problem(
                expected,
                "truncated",
                f"{target.label} vouches for {target.size} entries but the log ends before "
                f"entry {expected}: {_entries(expected, target.size - 1)} gone (truncated or "
                "rolled back)",
            )
        self._check_head(head_size, head_blob, expected)
        if self.unlisted:
            self.problems.append(
                AuditProblem(None, "more", f"{self.unlisted} more problems not listed")
            )
        return AuditVerification(
            ok=not self.problems,
            size=self.tree.size,
            checkpoints_checked=self.checked,
            uncovered=max(0, self.tree.size - self.signed_size),
            problems=tuple(self.problems),
        )

    def _grow(self, leaves: list[bytes]) -> None:
        """Add leaves to the recomputed tree, stopping at each size a checkpoint names."""
        done = 0
        while True:
            if self.next_stop == self.tree.size:
                self.next_stop = self._settle()
            if done == len(leaves):
                return
            end = len(leaves)
            if self.next_stop is not None:
                end = min(end, done + self.next_stop - self.tree.size)
            self.tree = self.tree.extend(leaves[done:end])
            done = end

    def _check_entry(
        self, row: Row[Any], entry: bytes, leaf: bytes, previous: bytes | None
    ) -> bool:
        """Report the entry's first problem; True when it has none of its own."""
        idx = row.idx
        try:
            value = _decode(entry)
        except _Malformed as exc:
            self.problem(idx, "malformed", f"entry {idx} {exc}")
            return False
        if value["index"] != idx:
            self.problem(
                idx,
                "misplaced",
                f"entry {idx} holds entry {value['index']}: entries were reordered, "
                "renumbered or copied",
            )
            return False
        if not hmac.compare_digest(leaf, _blob(row.leaf_hash)):
            self.problem(
                idx, "leaf_hash", f"entry {idx} was altered: it no longer matches its leaf hash"
            )
            return False
        recorded = (value["actor"], value["action"], value["subject"], value["timestamp"])
        if recorded != (row.actor, row.action, row.subject, _stored_time(row.at)):
            self.problem(
                idx,
                "columns",
                f"entry {idx}'s actor, action, subject or time column differs from its content",
            )
            return False
        if previous is not None and value["previous"] != previous.hex():
            self.problem(
                idx - 1,
                "altered",
                f"entry {idx - 1} was altered: it no longer matches the hash entry {idx} "
                f"recorded for it (or entry {idx}'s link was edited)",
            )
        return True

    def _check_head(self, head_size: Any, head_blob: Any, end: int) -> None:
        if head_size is None or head_blob is None:
            if self.tree.size:
                self.problem(None, "head", "the log head is missing")
            return
        if not isinstance(head_size, int):
            self.problem(None, "head", "the log head is corrupted (its size is not a number)")
            return
        if head_size > end:
            self.problem(
                end, "missing", f"{_entries(end, head_size - 1)} missing: the log was cut short"
            )
            return
        if head_size < end:
            self.problem(
                head_size,
                "unexpected",
                f"{_entries(head_size, end - 1)} beyond the log head: added outside the log",
            )
            return
        try:
            head = Frontier.from_bytes(head_size, head_blob)
        except ValueError as exc:
            self.problem(None, "head", f"the log head is corrupted ({exc})")
            return
        if head_size != self.tree.size:
            return  # entries are missing in the middle, reported above
        for (start, stop), stored, recomputed in zip(
            head.ranges(), head.hashes, self.tree.hashes, strict=True
        ):
            if hmac.compare_digest(stored, recomputed):
                continue
            explained = any(p.index is not None and start <= p.index < stop for p in self.problems)
            if stop == self.tree.size and not explained:
                # The newest entry has no successor recording its hash; only the head does.
                self.problem(
                    stop - 1,
                    "altered",
                    f"entry {stop - 1} was altered: it no longer matches the log head",
                )
            else:
                self.problem(
                    None, "head", f"{_entries(start, stop - 1)} no longer what the log head records"
                )
