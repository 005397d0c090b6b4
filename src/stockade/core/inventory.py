"""The inventory: AI systems, models and their versions, datasets and their versions, endpoints.

One set of functions serves the CLI, the REST API and later phases; every change is written
to the audit log in the same transaction, and lifecycle moves go through `core.lifecycle`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from stockade.core import lifecycle
from stockade.core.errors import Conflict, InvalidInput, NotFound
from stockade.core.tables import (
    AISystem,
    Dataset,
    DatasetVersion,
    Endpoint,
    LifecycleTransition,
    Model,
    ModelVersion,
)

if TYPE_CHECKING:
    from stockade.core.audit import AuditLog

__all__ = [
    "KINDS",
    "RISK_TIERS",
    "ArtifactFacts",
    "DatasetCreate",
    "DatasetOut",
    "DatasetUpdate",
    "DatasetVersionCreate",
    "DatasetVersionOut",
    "EndpointCreate",
    "EndpointOut",
    "EndpointUpdate",
    "InventoryFilter",
    "Kind",
    "ModelCreate",
    "ModelOut",
    "ModelUpdate",
    "ModelVersionCreate",
    "ModelVersionOut",
    "SystemCreate",
    "SystemOut",
    "SystemUpdate",
    "TransitionOut",
    "add_version",
    "create",
    "describe_artifact",
    "get",
    "get_version",
    "history",
    "kind_of",
    "list_entities",
    "list_versions",
    "parse_spec",
    "transition",
    "transition_version",
    "update",
]

_S = TypeVar("_S", bound=BaseModel)

RISK_TIERS: tuple[str, ...] = ("unclassified", "minimal", "limited", "high", "unacceptable")
RiskTier = Literal["unclassified", "minimal", "limited", "high", "unacceptable"]
State = Literal["draft", "development", "validated", "staging", "production", "retired"]

Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"),
    Field(description="Letters, digits, '.', '_', '-'; unique within its kind."),
]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")]
Digest = Annotated[
    str,
    StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$"),
    Field(description="`sha256:` followed by 64 lower-case hex digits."),
]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refusing it keeps both databases alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NoNul = AfterValidator(_no_nul)
Text = Annotated[str, StringConstraints(max_length=4000), NoNul]
Short = Annotated[str, StringConstraints(max_length=200), NoNul]
Uri = Annotated[str, StringConstraints(max_length=2000), NoNul]
Tags = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=100), NoNul], Short],
    Field(max_length=50),
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class SystemCreate(_Spec):
    name: Name
    description: Text = ""
    owner: Short = ""
    risk_tier: RiskTier = "unclassified"
    tags: Tags = Field(default_factory=dict)


class SystemUpdate(_Spec):
    description: Text | None = None
    owner: Short | None = None
    risk_tier: RiskTier | None = None
    tags: Tags | None = None


class ModelCreate(SystemCreate):
    system: Name | None = Field(default=None, description="Name of the AI system it belongs to.")
    task: Short = ""
    framework: Short = ""


class ModelUpdate(SystemUpdate):
    system: Name | None = None
    task: Short | None = None
    framework: Short | None = None


class DatasetCreate(SystemCreate):
    system: Name | None = None
    source_uri: Uri = ""
    license: Short = ""


class DatasetUpdate(SystemUpdate):
    system: Name | None = None
    source_uri: Uri | None = None
    license: Short | None = None


class EndpointCreate(SystemCreate):
    system: Name | None = None
    model: Name | None = Field(default=None, description="Name of the model it serves.")
    url: Uri = ""


class EndpointUpdate(SystemUpdate):
    system: Name | None = None
    model: Name | None = None
    url: Uri | None = None


class ModelVersionCreate(_Spec):
    version: Version
    digest: Digest
    size: int = Field(ge=0, lt=2**63)
    format: Short = ""
    source_uri: Uri = ""
    tags: Tags = Field(default_factory=dict)


class DatasetVersionCreate(ModelVersionCreate):
    row_count: int | None = Field(default=None, ge=0, lt=2**63)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SystemOut(_Out):
    id: str
    name: str
    description: str
    owner: str
    risk_tier: str
    lifecycle_state: str
    tags: dict[str, str]
    created_at: datetime
    updated_at: datetime


class ModelOut(SystemOut):
    system: str | None
    task: str
    framework: str
    latest_version: str | None


class DatasetOut(SystemOut):
    system: str | None
    source_uri: str
    license: str
    latest_version: str | None


class EndpointOut(SystemOut):
    system: str | None
    model: str | None
    url: str


class ModelVersionOut(_Out):
    id: str
    model: str
    version: str
    digest: str
    size: int
    format: str
    source_uri: str
    lifecycle_state: str
    tags: dict[str, str]
    created_at: datetime


class DatasetVersionOut(_Out):
    id: str
    dataset: str
    version: str
    digest: str
    size: int
    format: str
    source_uri: str
    row_count: int | None
    tags: dict[str, str]
    created_at: datetime


class TransitionOut(_Out):
    from_state: str
    to_state: str
    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Kind:
    """One kind of governed inventory entity and the records that describe it."""

    name: str
    plural: str
    table: type[Any]
    create: type[SystemCreate]
    update: type[SystemUpdate]
    out: type[SystemOut]
    version_table: type[Any] | None = None
    version_create: type[ModelVersionCreate] | None = None
    version_out: type[_Out] | None = None

    def subject(self, name: str, version: str | None = None) -> str:
        return f"{self.name}:{name}" + (f"@{version}" if version else "")


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("system", "systems", AISystem, SystemCreate, SystemUpdate, SystemOut),
        Kind(
            "model",
            "models",
            Model,
            ModelCreate,
            ModelUpdate,
            ModelOut,
            ModelVersion,
            ModelVersionCreate,
            ModelVersionOut,
        ),
        Kind(
            "dataset",
            "datasets",
            Dataset,
            DatasetCreate,
            DatasetUpdate,
            DatasetOut,
            DatasetVersion,
            DatasetVersionCreate,
            DatasetVersionOut,
        ),
        Kind("endpoint", "endpoints", Endpoint, EndpointCreate, EndpointUpdate, EndpointOut),
    )
}


def kind_of(name: str) -> Kind:
    """A kind by its singular or plural name."""
    for kind in KINDS.values():
        if name in (kind.name, kind.plural):
            return kind
    raise InvalidInput(f"unknown inventory kind {name!r}; kinds: {', '.join(KINDS)}")


def parse_spec(spec_type: type[_S], data: dict[str, Any]) -> _S:
    """Validate user input into a spec, turning pydantic's errors into one clear line."""
    try:
        return spec_type.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidInput(problems) from None


# -- reading ----------------------------------------------------------------------------


def _row(session: Session, kind: Kind, ref: str) -> Any:
    row = session.scalar(select(kind.table).where(kind.table.name == ref))
    if row is None:
        row = session.get(kind.table, ref) if len(ref) == 32 else None
    if row is None:
        raise NotFound(f"{kind.name} {ref!r} not found")
    return row


def _outs(kind: Kind, session: Session, rows: list[Any]) -> list[SystemOut]:
    """Records for rows of one kind, with the latest version of each in one query."""
    latest: dict[str, str] = {}
    if "latest_version" in kind.out.model_fields and kind.version_table is not None and rows:
        parent = _parent_column(kind)
        ordered = session.execute(
            select(parent, kind.version_table.version)
            .where(parent.in_([row.id for row in rows]))
            .order_by(kind.version_table.created_at, kind.version_table.version)
        )
        latest = {parent_id: version for parent_id, version in ordered}  # noqa: C416 (last wins)
    outs = []
    for row in rows:
        data = {name: getattr(row, name, None) for name in kind.out.model_fields}
        if "system" in data:
            data["system"] = row.system.name if row.system else None
        if kind.name == "endpoint":
            data["model"] = row.model.name if row.model else None
        if "latest_version" in data:
            data["latest_version"] = latest.get(row.id)
        outs.append(kind.out.model_validate(data))
    return outs


def _out(kind: Kind, session: Session, row: Any) -> SystemOut:
    return _outs(kind, session, [row])[0]


def _version_out(kind: Kind, row: Any) -> Any:
    assert kind.version_out is not None
    data = {name: getattr(row, name, None) for name in kind.version_out.model_fields}
    data[kind.name] = getattr(row, kind.name).name
    return kind.version_out.model_validate(data)


def _parent_column(kind: Kind) -> Any:
    return getattr(kind.version_table, f"{kind.name}_id")


def get(session: Session, kind: Kind, ref: str) -> SystemOut:
    """One entity by name (or id)."""
    return _out(kind, session, _row(session, kind, ref))


class InventoryFilter(_Spec):
    owner: Short | None = None
    risk_tier: RiskTier | None = None
    lifecycle_state: State | None = None
    system: Short | None = None
    tag: Short | None = Field(default=None, description="`key=value`, or `key` for presence.")
    q: Short | None = Field(default=None, description="Substring of the name.")
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, lt=2**63)


def list_entities(
    session: Session, kind: Kind, filters: InventoryFilter | None = None
) -> list[Any]:
    filters = filters or InventoryFilter()
    table = kind.table
    query = select(table).order_by(table.name)
    if kind.name != "system":
        query = query.options(selectinload(table.system))
    if kind.name == "endpoint":
        query = query.options(selectinload(table.model))
    if filters.owner is not None:
        query = query.where(table.owner == filters.owner)
    if filters.risk_tier is not None:
        query = query.where(table.risk_tier == filters.risk_tier)
    if filters.lifecycle_state is not None:
        query = query.where(table.lifecycle_state == filters.lifecycle_state)
    if filters.system is not None:
        if kind.name == "system":
            raise InvalidInput("systems cannot be filtered by system")
        query = query.join(AISystem, table.system_id == AISystem.id).where(
            AISystem.name == filters.system
        )
    if filters.q:
        escaped = filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(table.name.like(f"%{escaped}%", escape="\\"))
    rows = list(session.scalars(query))
    if filters.tag:
        # Tags are a small JSON object; filtering in Python keeps SQLite and PostgreSQL equal.
        key, _, value = filters.tag.partition("=")
        rows = [
            r
            for r in rows
            if key in (r.tags or {}) and ("=" not in filters.tag or r.tags[key] == value)
        ]
    rows = rows[filters.offset : filters.offset + filters.limit]
    return _outs(kind, session, rows)


def list_versions(session: Session, kind: Kind, ref: str) -> list[Any]:
    if kind.version_table is None:
        raise InvalidInput(f"{kind.plural} have no versions")
    parent = _row(session, kind, ref)
    rows = session.scalars(
        select(kind.version_table)
        .where(_parent_column(kind) == parent.id)
        .order_by(kind.version_table.created_at, kind.version_table.version)
    )
    return [_version_out(kind, row) for row in rows]


def _version_row(session: Session, kind: Kind, ref: str, version: str) -> Any:
    if kind.version_table is None:
        raise InvalidInput(f"{kind.plural} have no versions")
    parent = _row(session, kind, ref)
    row = session.scalar(
        select(kind.version_table).where(
            _parent_column(kind) == parent.id, kind.version_table.version == version
        )
    )
    if row is None:
        raise NotFound(f"{kind.subject(parent.name, version)} not found")
    return row


def get_version(session: Session, kind: Kind, ref: str, version: str) -> Any:
    return _version_out(kind, _version_row(session, kind, ref, version))


def history(
    session: Session, kind: Kind, ref: str, version: str | None = None
) -> list[TransitionOut]:
    """Every lifecycle transition of an entity (or of one model version), oldest first."""
    if version is None:
        row, entity_type = _row(session, kind, ref), kind.name
    else:
        row, entity_type = _version_row(session, kind, ref, version), f"{kind.name}_version"
    rows = session.scalars(
        select(LifecycleTransition)
        .where(
            LifecycleTransition.entity_type == entity_type,
            LifecycleTransition.entity_id == row.id,
        )
        .order_by(LifecycleTransition.id)
    )
    return [TransitionOut.model_validate(r, from_attributes=True) for r in rows]


# -- writing ----------------------------------------------------------------------------


def _resolve_references(session: Session, values: dict[str, Any]) -> dict[str, Any]:
    """Turn `system` / `model` names into foreign keys."""
    resolved = dict(values)
    if "system" in resolved:
        name = resolved.pop("system")
        resolved["system_id"] = _row(session, KINDS["system"], name).id if name else None
    if "model" in resolved:
        name = resolved.pop("model")
        resolved["model_id"] = _row(session, KINDS["model"], name).id if name else None
    return resolved


def create(
    session: Session, audit: AuditLog, kind: Kind, spec: SystemCreate, *, actor: str
) -> SystemOut:
    if not isinstance(spec, kind.create):
        raise InvalidInput(f"expected a {kind.create.__name__}")
    if session.scalar(select(kind.table.id).where(kind.table.name == spec.name)) is not None:
        raise Conflict(f"{kind.name} {spec.name!r} already exists")
    row = kind.table(**_resolve_references(session, spec.model_dump()))
    session.add(row)
    _flush(session, f"{kind.name} {spec.name!r} already exists")
    audit.append(
        session,
        actor=actor,
        action=f"{kind.name}.create",
        subject=kind.subject(spec.name),
        details=spec.model_dump(mode="json"),
    )
    return _out(kind, session, row)


def update(
    session: Session, audit: AuditLog, kind: Kind, ref: str, changes: SystemUpdate, *, actor: str
) -> SystemOut:
    if not isinstance(changes, kind.update):
        raise InvalidInput(f"expected a {kind.update.__name__}")
    row = _row(session, kind, ref)
    if row.lifecycle_state == "retired":
        raise Conflict(f"{kind.subject(row.name)} is retired and can no longer change")
    given = changes.model_dump(exclude_unset=True, exclude_none=True)
    if not given:
        raise InvalidInput("nothing to update")
    before = _out(kind, session, row).model_dump(mode="json")
    for key, value in _resolve_references(session, given).items():
        setattr(row, key, value)
    _flush(session, f"cannot update {kind.subject(row.name)}")
    session.expire(row)  # reload relationships (system, model) from the new foreign keys
    after = _out(kind, session, row)
    diff = {
        key: {"from": before.get(key), "to": value}
        for key, value in after.model_dump(mode="json").items()
        if key in given and before.get(key) != value
    }
    if diff:
        audit.append(
            session,
            actor=actor,
            action=f"{kind.name}.update",
            subject=kind.subject(row.name),
            details={"changes": diff},
        )
    return after


def add_version(
    session: Session, audit: AuditLog, kind: Kind, ref: str, spec: ModelVersionCreate, *, actor: str
) -> Any:
    """Register an immutable version; the same version with other bytes is refused."""
    if kind.version_table is None or kind.version_create is None:
        raise InvalidInput(f"{kind.plural} have no versions")
    if not isinstance(spec, kind.version_create):
        raise InvalidInput(f"expected a {kind.version_create.__name__}")
    parent = _row(session, kind, ref)
    if parent.lifecycle_state == "retired":
        raise Conflict(f"{kind.subject(parent.name)} is retired; it takes no new versions")
    subject = kind.subject(parent.name, spec.version)
    existing = session.scalar(
        select(kind.version_table).where(
            _parent_column(kind) == parent.id, kind.version_table.version == spec.version
        )
    )
    if existing is not None:
        if existing.digest != spec.digest:
            raise Conflict(
                f"{subject} already exists with digest {existing.digest}; versions are "
                "immutable, register the new bytes as a new version"
            )
        raise Conflict(f"{subject} already exists")
    row = kind.version_table(**{f"{kind.name}_id": parent.id}, **spec.model_dump())
    session.add(row)
    _flush(session, f"{subject} already exists")
    audit.append(
        session,
        actor=actor,
        action=f"{kind.name}.version.create",
        subject=subject,
        details=spec.model_dump(mode="json"),
    )
    return _version_out(kind, row)


def transition(
    session: Session,
    audit: AuditLog,
    kind: Kind,
    ref: str,
    to_state: str,
    *,
    actor: str,
    reason: str,
) -> tuple[SystemOut, lifecycle.TransitionOutcome]:
    row = _row(session, kind, ref)
    outcome = lifecycle.transition(
        session,
        audit,
        entity=row,
        entity_type=kind.name,
        subject=kind.subject(row.name),
        to_state=to_state,
        actor=actor,
        reason=reason,
    )
    return _out(kind, session, row), outcome


def transition_version(
    session: Session,
    audit: AuditLog,
    kind: Kind,
    ref: str,
    version: str,
    to_state: str,
    *,
    actor: str,
    reason: str,
) -> tuple[Any, lifecycle.TransitionOutcome]:
    if kind.name != "model":
        raise InvalidInput("only model versions have a lifecycle of their own")
    row = _version_row(session, kind, ref, version)
    outcome = lifecycle.transition(
        session,
        audit,
        entity=row,
        entity_type="model_version",
        subject=kind.subject(row.model.name, version),
        to_state=to_state,
        actor=actor,
        reason=reason,
    )
    return _version_out(kind, row), outcome


def _flush(session: Session, conflict_message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict_message) from exc


# -- artifacts --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFacts:
    digest: str
    size: int
    format: str


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GGUF", "gguf"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"PK\x03\x04", "zip"),
    (b"\x93NUMPY", "numpy"),
    (b"PAR1", "parquet"),
    (b"\x1f\x8b", "gzip"),
)


def _sniff(head: bytes) -> str:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return "pickle"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 27:
        return "safetensors"
    if head[:1] in (b"{", b"["):
        return "json"
    return ""


def describe_artifact(path: Path) -> ArtifactFacts:
    """SHA-256 digest, size and a coarse content-sniffed format of one file, streamed."""
    path = Path(path)
    if path.is_symlink():
        raise InvalidInput(f"{path}: symbolic links are refused; give the file itself")
    if not path.is_file():
        raise InvalidInput(f"{path}: not a regular file")
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                if not head:
                    head = chunk[:64]
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from exc
    return ArtifactFacts(f"sha256:{digest.hexdigest()}", size, _sniff(head))
