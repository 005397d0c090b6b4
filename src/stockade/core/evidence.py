"""Evidence: the stored outcome of one control check (who, when, on what input, pass, fail
or error, with its findings), each recorded together with an audit log entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from stockade.core import clock
from stockade.core.errors import InvalidInput, NotFound
from stockade.core.findings import (
    EXIT_CLEAN,
    EXIT_FINDINGS,
    Finding,
    ScanResult,
    Severity,
    exit_code,
)
from stockade.core.tables import EvidenceRecord, FindingRecord, new_id

__all__ = [
    "OUTCOMES",
    "AuditAppend",
    "Evidence",
    "Outcome",
    "get_evidence",
    "latest_evidence",
    "list_evidence",
    "outcome_of",
    "record_evidence",
]

Outcome = Literal["pass", "fail", "error"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "error")
MAX_LIST = 1000

_DIGEST = re.compile(r"[a-z0-9-]+:[0-9a-f]+")
# Column widths of `evidence`.
_LIMITS = {"check": 100, "subject": 300, "actor": 200, "input_digest": 71}


class AuditAppend(Protocol):
    """What evidence needs of the audit log (`stockade.core.audit.AuditLog` provides it)."""

    def append(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        subject: str,
        details: dict[str, Any],
    ) -> Any: ...


@dataclass(frozen=True)
class Evidence:
    """One control check's outcome. `findings` is None where it was not loaded
    (`list_evidence`); `get_evidence`, `latest_evidence` and `record_evidence` load it."""

    id: str
    check: str
    subject: str
    actor: str
    at: datetime
    input_digest: str
    outcome: Outcome
    summary: dict[str, Any]
    findings: tuple[Finding, ...] | None = None

    @classmethod
    def from_row(cls, row: EvidenceRecord, *, with_findings: bool) -> Evidence:
        findings = None
        if with_findings:
            ordered = sorted(row.findings, key=lambda record: record.id)
            findings = tuple(Finding.from_dict(record.data) for record in ordered)
        return cls(
            id=row.id,
            check=row.check,
            subject=row.subject,
            actor=row.actor,
            at=row.at,
            input_digest=row.input_digest,
            outcome=row.outcome,  # type: ignore[arg-type]
            summary=dict(row.summary),
            findings=findings,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "check": self.check,
            "subject": self.subject,
            "actor": self.actor,
            "at": clock.format_time(self.at),
            "input_digest": self.input_digest,
            "outcome": self.outcome,
            "summary": self.summary,
            "findings": None
            if self.findings is None
            else [finding.to_dict() for finding in self.findings],
        }


def outcome_of(result: ScanResult, fail_on: Severity | str = Severity.HIGH) -> Outcome:
    """pass, fail or error, by the same rule as a scanning command's exit code."""
    code = exit_code(result, fail_on)
    if code == EXIT_CLEAN:
        return "pass"
    if code == EXIT_FINDINGS:
        return "fail"
    return "error"


def record_evidence(
    session: Session,
    audit: AuditAppend,
    *,
    check: str,
    subject: str,
    actor: str,
    input_digest: str,
    result: ScanResult,
    fail_on: Severity | str = Severity.HIGH,
) -> Evidence:
    """Store the outcome of `check` on `subject` with all its findings and append an
    `evidence.record` audit entry, in the caller's transaction: both or neither."""
    _require_text("check", check)
    _require_text("subject", subject)
    _require_text("actor", actor)
    if input_digest and not (
        len(input_digest) <= _LIMITS["input_digest"] and _DIGEST.fullmatch(input_digest)
    ):
        raise InvalidInput(
            f"input digest {input_digest!r} must look like 'sha256:<hex>' (at most 71 characters)"
        )
    threshold = Severity.parse(fail_on)
    outcome = outcome_of(result, threshold)
    counts = result.summary()
    summary = {
        **counts,
        "fail_on": threshold.value,
        "scanner": result.scanner,
        "tool": {"name": result.tool, "version": result.version},
        "targets": list(result.targets),
        "started_at": clock.format_time(result.started_at),
        "finished_at": clock.format_time(result.finished_at),
    }
    row = EvidenceRecord(
        id=new_id(),
        check=check,
        subject=subject,
        actor=actor,
        input_digest=input_digest,
        outcome=outcome,
        summary=summary,
        at=clock.now(),
    )
    row.findings = [
        FindingRecord(rule_id=f.rule_id, severity=f.severity.value, data=f.to_dict())
        for f in result.findings
    ]
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="evidence.record",
        subject=subject,
        details={
            "check": check,
            "outcome": outcome,
            "counts": counts,
            "evidence_id": row.id,
            "input_digest": input_digest,
        },
    )
    return Evidence.from_row(row, with_findings=True)


def list_evidence(
    session: Session,
    *,
    subject: str | None = None,
    check: str | None = None,
    outcome: Outcome | None = None,
    limit: int = 100,
) -> list[Evidence]:
    """Newest first, without findings (see `get_evidence`)."""
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be from 1 to {MAX_LIST}")
    query = select(EvidenceRecord)
    if subject is not None:
        query = query.where(EvidenceRecord.subject == subject)
    if check is not None:
        query = query.where(EvidenceRecord.check == check)
    if outcome is not None:
        query = query.where(EvidenceRecord.outcome == outcome)
    query = query.order_by(EvidenceRecord.at.desc(), EvidenceRecord.id).limit(limit)
    return [Evidence.from_row(row, with_findings=False) for row in session.scalars(query)]


def latest_evidence(session: Session, subject: str, check: str) -> Evidence | None:
    """The most recent outcome of `check` on `subject`, with findings; what a gate reads."""
    query = (
        select(EvidenceRecord)
        .where(EvidenceRecord.subject == subject, EvidenceRecord.check == check)
        .order_by(EvidenceRecord.at.desc(), EvidenceRecord.id)
        .limit(1)
        .options(selectinload(EvidenceRecord.findings))
    )
    row = session.scalars(query).first()
    return None if row is None else Evidence.from_row(row, with_findings=True)


def get_evidence(session: Session, evidence_id: str) -> Evidence:
    """One evidence record with its findings."""
    query = (
        select(EvidenceRecord)
        .where(EvidenceRecord.id == evidence_id)
        .options(selectinload(EvidenceRecord.findings))
    )
    row = session.scalars(query).first()
    if row is None:
        raise NotFound(f"evidence {evidence_id!r} not found")
    return Evidence.from_row(row, with_findings=True)


def _require_text(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"evidence {name} must not be empty")
    if len(value) > _LIMITS[name]:
        raise InvalidInput(f"evidence {name} must be at most {_LIMITS[name]} characters")
