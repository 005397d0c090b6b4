"""Retirement of inventory entities: refuse while something still depends on the entity,
then move it (and a model's versions) to the final `retired` state, all audited.

Crypto-shredding of stored artifacts and key revocation attach here as later steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from stockade.core import inventory, lifecycle
from stockade.core.errors import Conflict
from stockade.core.tables import Dataset, Endpoint, Model, ModelVersion

if TYPE_CHECKING:
    from stockade.core.audit import AuditLog

__all__ = ["Retirement", "retire"]


@dataclass(frozen=True)
class Retirement:
    subject: str
    previous_state: str
    versions_retired: tuple[str, ...]


def _blockers(session: Session, kind: inventory.Kind, row: object) -> list[str]:
    """Live entities that still depend on the one to retire."""
    live = Endpoint.lifecycle_state != "retired"
    if kind.name == "model":
        names = session.scalars(select(Endpoint.name).where(Endpoint.model_id == row.id, live))  # type: ignore[attr-defined]
        return [f"endpoint:{n}" for n in names]
    if kind.name == "system":
        found: list[str] = []
        for table, label in ((Model, "model"), (Dataset, "dataset"), (Endpoint, "endpoint")):
            names = session.scalars(
                select(table.name).where(
                    table.system_id == row.id,  # type: ignore[attr-defined]
                    table.lifecycle_state != "retired",
                )
            )
            found += [f"{label}:{n}" for n in names]
        return found
    return []


def retire(
    session: Session,
    audit: AuditLog,
    kind: inventory.Kind,
    name: str,
    *,
    actor: str,
    reason: str,
) -> Retirement:
    """Retire an entity; a model's live versions are retired with it."""
    row = session.scalar(select(kind.table).where(kind.table.name == name))
    if row is None:
        inventory.get(session, kind, name)  # raises NotFound with the usual message
    subject = kind.subject(row.name)
    if row.lifecycle_state == "retired":
        raise Conflict(f"{subject} is already retired")
    blockers = _blockers(session, kind, row)
    if blockers:
        raise Conflict(f"{subject} is still used by {', '.join(blockers)}: retire them first")
    retired_versions: list[str] = []
    if kind.name == "model":
        versions = session.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == row.id, ModelVersion.lifecycle_state != "retired"
            )
        )
        for version in versions:
            lifecycle.transition(
                session,
                audit,
                entity=version,
                entity_type="model_version",
                subject=kind.subject(row.name, version.version),
                to_state="retired",
                actor=actor,
                reason=reason,
            ).raise_if_refused()
            retired_versions.append(version.version)
    previous = row.lifecycle_state
    lifecycle.transition(
        session,
        audit,
        entity=row,
        entity_type=kind.name,
        subject=subject,
        to_state="retired",
        actor=actor,
        reason=reason,
    ).raise_if_refused()
    return Retirement(subject, previous, tuple(retired_versions))
