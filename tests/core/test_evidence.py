"""Evidence: recorded with its findings and an audit entry in one transaction, listed,
filtered and read back the way a lifecycle gate reads it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stockade.core import clock
from stockade.core.audit import AuditLog
from stockade.core.db import Database
from stockade.core.errors import InvalidInput, NotFound
from stockade.core.evidence import (
    get_evidence,
    latest_evidence,
    list_evidence,
    outcome_of,
    record_evidence,
)
from stockade.core.findings import Finding, Location, ScanResult, Severity
from stockade.core.keys import KeyStore
from stockade.core.tables import EvidenceRecord, FindingRecord

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)
SUBJECT = "model:fraud-detector@1.2.0"
DIGEST = "sha256:" + "ab" * 32
KEY = "AKIAIOSFODNN7EXAMPLEKEY"


@pytest.fixture
def audit(stockade_home: Path) -> AuditLog:
    return AuditLog(KeyStore(stockade_home / "keys"), origin="stockade.test/audit")


def result(*records: Finding) -> ScanResult:
    return ScanResult(
        "model scan",
        targets=("fraud.pkl",),
        findings=records,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=1),
    )


CRITICAL = Finding(
    "STK-PKL-001",
    "Pickle calls os.system",
    Severity.CRITICAL,
    location=Location(path="fraud.pkl", member="data.pkl", offset=77),
    snippet="GLOBAL os system",
    references=("CWE-502", "ATLAS:AML.T0011"),
)
SECRET = Finding(
    "STK-SEC-003",
    "AWS key in metadata",
    Severity.MEDIUM,
    location=Location(path="fraud.pkl", line=2, start=0, end=23),
    snippet=KEY,
    secret=True,
)
ODD = Finding(
    "STK-PII-001",
    "Name in training row",
    Severity.LOW,
    location=Location(path="rows.csv", row=3, column="naam"),
    snippet="Zoë\x00 \u202e Łódź 名前 🙂",
)
BROKEN = Finding.error("fraud.pkl", "truncated pickle stream")


def record(
    session: Session, audit: Any, scan: ScanResult, *, check: str = "model.scan", **kwargs: Any
) -> Any:
    options: dict[str, Any] = {
        "check": check,
        "subject": SUBJECT,
        "actor": "cli:alice",
        "input_digest": DIGEST,
        "result": scan,
        "fail_on": Severity.HIGH,
    }
    options.update(kwargs)
    return record_evidence(session, audit, **options)


@pytest.mark.parametrize(
    ("records", "fail_on", "outcome"),
    [
        ((), "high", "pass"),
        ((SECRET,), "high", "pass"),
        ((SECRET,), "medium", "fail"),
        ((CRITICAL, SECRET), "high", "fail"),
        ((BROKEN,), "info", "error"),
        ((CRITICAL, BROKEN), "high", "error"),
    ],
)
def test_outcome_follows_the_exit_code(
    records: tuple[Finding, ...], fail_on: str, outcome: str
) -> None:
    assert outcome_of(result(*records), fail_on) == outcome


def test_record_stores_findings_and_appends_an_audit_entry(
    database: Database, audit: AuditLog
) -> None:
    scan = result(SECRET, BROKEN, CRITICAL, ODD)
    with clock.frozen(T0 + timedelta(minutes=5)), database.session() as session:
        evidence = record(session, audit, scan)
    assert evidence.outcome == "error"
    assert evidence.at == T0 + timedelta(minutes=5)
    assert evidence.findings == scan.findings
    assert evidence.summary["by_severity"] == {
        "critical": 1,
        "high": 0,
        "medium": 1,
        "low": 1,
        "info": 0,
    }
    assert evidence.summary["errors"] == 1
    assert evidence.summary["fail_on"] == "high"
    assert evidence.summary["targets"] == ["fraud.pkl"]

    with database.session() as session:
        stored = get_evidence(session, evidence.id)
        assert stored == evidence
        rows = session.scalars(select(FindingRecord).order_by(FindingRecord.id)).all()
        assert [(r.rule_id, r.severity) for r in rows] == [
            ("STK-PKL-001", "critical"),
            ("STK-ERR-001", "high"),
            ("STK-SEC-003", "medium"),
            ("STK-PII-001", "low"),
        ]
        assert all(KEY[4:-4] not in str(r.data) for r in rows)
        [entry] = audit.entries(session, action="evidence.record")
    assert entry.actor == "cli:alice"
    assert entry.subject == SUBJECT
    assert entry.details == {
        "check": "model.scan",
        "outcome": "error",
        "counts": scan.summary(),
        "evidence_id": evidence.id,
        "input_digest": DIGEST,
    }


def test_list_filters_newest_first_without_findings(database: Database, audit: AuditLog) -> None:
    made = []
    plan = [
        ("model.scan", SUBJECT, (CRITICAL,)),
        ("model.scan", SUBJECT, ()),
        ("model.scan", "model:other@1.0.0", (BROKEN,)),
        ("data.pii", SUBJECT, (SECRET,)),
    ]
    for minute, (check, subject, records) in enumerate(plan):
        with clock.frozen(T0 + timedelta(minutes=minute)), database.session() as session:
            made.append(record(session, audit, result(*records), check=check, subject=subject))

    with database.session() as session:
        everything = list_evidence(session)
        assert [e.id for e in everything] == [e.id for e in reversed(made)]
        assert all(e.findings is None for e in everything)
        by_subject = list_evidence(session, subject=SUBJECT)
        assert [e.check for e in by_subject] == ["data.pii", "model.scan", "model.scan"]
        scans = list_evidence(session, subject=SUBJECT, check="model.scan")
        assert [e.outcome for e in scans] == ["pass", "fail"]
        assert [e.id for e in list_evidence(session, outcome="error")] == [made[2].id]
        assert [e.id for e in list_evidence(session, limit=2)] == [made[3].id, made[2].id]
        assert list_evidence(session, subject="model:nobody@0") == []
        assert len(audit.entries(session, action="evidence.record")) == 4


def test_latest_is_what_a_gate_reads(database: Database, audit: AuditLog) -> None:
    with database.session() as session:
        assert latest_evidence(session, SUBJECT, "model.scan") is None
    with clock.frozen(T0), database.session() as session:
        record(session, audit, result(CRITICAL))
    with clock.frozen(T0 + timedelta(hours=1)), database.session() as session:
        fixed = record(session, audit, result(SECRET))
    with clock.frozen(T0 + timedelta(hours=2)), database.session() as session:
        record(session, audit, result(BROKEN), check="data.pii")

    with database.session() as session:
        latest = latest_evidence(session, SUBJECT, "model.scan")
    assert latest is not None
    assert latest.id == fixed.id
    assert latest.outcome == "pass"
    assert latest.findings == (SECRET,)
    assert latest.input_digest == DIGEST
    assert latest.to_dict()["findings"][0]["snippet"] == "AKIA********EKEY"


def test_unknown_evidence_is_not_found(database: Database) -> None:
    with database.session() as session, pytest.raises(NotFound, match="nope"):
        get_evidence(session, "nope")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"check": ""}, "check must not be empty"),
        ({"subject": "x" * 301}, "subject must be at most 300"),
        ({"actor": "  "}, "actor must not be empty"),
        ({"input_digest": "not a digest"}, "input digest"),
        ({"input_digest": "sha256:" + "a" * 65}, "input digest"),
        ({"fail_on": "severe"}, "unknown severity"),
    ],
)
def test_invalid_evidence_is_refused_and_nothing_is_stored(
    database: Database, audit: AuditLog, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message), database.session() as session:
        record(session, audit, result(CRITICAL), **kwargs)
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(EvidenceRecord)) == 0
        assert audit.size(session) == 0


def test_evidence_without_a_digest_is_accepted(database: Database, audit: AuditLog) -> None:
    with database.session() as session:
        evidence = record(session, audit, result(), input_digest="")
    assert evidence.outcome == "pass"
    assert evidence.input_digest == ""


class BrokenAudit:
    def append(self, session: Session, **kwargs: Any) -> None:
        raise InvalidInput("audit log refused the entry")


def test_evidence_and_its_audit_entry_commit_together(database: Database) -> None:
    with pytest.raises(InvalidInput, match="refused"), database.session() as session:
        record(session, BrokenAudit(), result(CRITICAL, SECRET))
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(EvidenceRecord)) == 0
        assert session.scalar(select(func.count()).select_from(FindingRecord)) == 0


def test_list_refuses_bad_filters(database: Database) -> None:
    with database.session() as session:
        with pytest.raises(InvalidInput, match="unknown outcome"):
            list_evidence(session, outcome="passed")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="limit"):
            list_evidence(session, limit=0)
