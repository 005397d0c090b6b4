"""SQLAlchemy tables of the control plane: inventory, lifecycle, audit, keys, tokens, events,
evidence and findings. Alembic migrations under `migrations/` create them; never edit a table
here without a new migration.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from stockade.core import clock

__all__ = [
    "AISystem",
    "ApiToken",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Dataset",
    "DatasetVersion",
    "Endpoint",
    "EventRecord",
    "EvidenceRecord",
    "FindingRecord",
    "KeyRecord",
    "LifecycleTransition",
    "Model",
    "ModelVersion",
    "new_id",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return uuid.uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: use stockade.core.clock.now()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(default=clock.now, onupdate=clock.now)


class _Governed(_Timestamps):
    """Columns every governed inventory entity carries."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(200), default="")
    risk_tier: Mapped[str] = mapped_column(String(20), default="unclassified")
    lifecycle_state: Mapped[str] = mapped_column(String(20), default="draft")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AISystem(_Governed, Base):
    __tablename__ = "ai_systems"

    models: Mapped[list[Model]] = relationship(back_populates="system")
    datasets: Mapped[list[Dataset]] = relationship(back_populates="system")
    endpoints: Mapped[list[Endpoint]] = relationship(back_populates="system")


class Model(_Governed, Base):
    __tablename__ = "models"

    system_id: Mapped[str | None] = mapped_column(ForeignKey("ai_systems.id"), index=True)
    task: Mapped[str] = mapped_column(String(100), default="")
    framework: Mapped[str] = mapped_column(String(100), default="")

    system: Mapped[AISystem | None] = relationship(back_populates="models")
    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="ModelVersion.created_at"
    )


class ModelVersion(_Timestamps, Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(71), index=True)  # "sha256:" + 64 hex
    size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(50), default="")
    source_uri: Mapped[str] = mapped_column(Text, default="")
    lifecycle_state: Mapped[str] = mapped_column(String(20), default="draft")
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)

    model: Mapped[Model] = relationship(back_populates="versions")


class Dataset(_Governed, Base):
    __tablename__ = "datasets"

    system_id: Mapped[str | None] = mapped_column(ForeignKey("ai_systems.id"), index=True)
    source_uri: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str] = mapped_column(String(100), default="")

    system: Mapped[AISystem | None] = relationship(back_populates="datasets")
    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.created_at"
    )


class DatasetVersion(_Timestamps, Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    digest: Mapped[str] = mapped_column(String(71), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(50), default="")
    source_uri: Mapped[str] = mapped_column(Text, default="")
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class Endpoint(_Governed, Base):
    __tablename__ = "endpoints"

    system_id: Mapped[str | None] = mapped_column(ForeignKey("ai_systems.id"), index=True)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"), index=True)
    url: Mapped[str] = mapped_column(Text, default="")

    system: Mapped[AISystem | None] = relationship(back_populates="endpoints")
    model: Mapped[Model | None] = relationship()


class LifecycleTransition(Base):
    """Who moved which entity from which state to which, and why."""

    __tablename__ = "lifecycle_transitions"
    __table_args__ = (Index("ix_lifecycle_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_type: Mapped[str] = mapped_column(String(30))
    entity_id: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=clock.now)


class AuditEntry(Base):
    """One leaf of the append-only Merkle log. `idx` is the leaf index, from 0, gapless."""

    __tablename__ = "audit_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    entry: Mapped[bytes] = mapped_column(LargeBinary)  # canonical JSON, UTF-8
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    action: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(String(300), index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[datetime] = mapped_column()


class AuditHead(Base):
    """Single row serialising appends: the tree size and its compact range (frontier)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    frontier: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class AuditCheckpoint(Base):
    """A signed statement of the tree size and root hash at one moment."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)  # the signed text form
    key_id: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=clock.now)


class KeyRecord(Base):
    """Metadata of a key in the key store (the material itself never enters the database)."""

    __tablename__ = "keys"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # "signing" | "kek"
    algorithm: Mapped[str] = mapped_column(String(30))
    provider: Mapped[str] = mapped_column(String(30), default="local")
    purpose: Mapped[str] = mapped_column(Text, default="")
    public_key: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    destroyed_at: Mapped[datetime | None] = mapped_column()


class ApiToken(Base):
    """A control-plane API token, stored as a salted hash; `prefix` identifies it in logs."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public part
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    salt: Mapped[bytes] = mapped_column(LargeBinary(16))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=clock.now)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    last_used_at: Mapped[datetime | None] = mapped_column()


class EventRecord(Base):
    """What the gateway and monitors emit; stored, listed, later aggregated."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(300), default="", index=True)
    severity: Mapped[str] = mapped_column(String(10), default="info")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=clock.now)


class EvidenceRecord(Base):
    """The outcome of one control check; gates read these, never raw tool output."""

    __tablename__ = "evidence"
    __table_args__ = (Index("ix_evidence_subject_check", "subject", "check"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    check: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(200))
    input_digest: Mapped[str] = mapped_column(String(71), default="")
    outcome: Mapped[str] = mapped_column(String(20))  # pass | fail | error
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=clock.now)

    findings: Mapped[list[FindingRecord]] = relationship(
        back_populates="evidence", cascade="all, delete-orphan"
    )


class FindingRecord(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    evidence_id: Mapped[str] = mapped_column(ForeignKey("evidence.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(100), index=True)
    severity: Mapped[str] = mapped_column(String(10))
    data: Mapped[dict[str, Any]] = mapped_column()  # the Finding as JSON

    evidence: Mapped[EvidenceRecord] = relationship(back_populates="findings")
