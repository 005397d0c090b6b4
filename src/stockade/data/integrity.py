"""Dataset integrity: count the records of a dataset file and check a copy of a registered
dataset version against its recorded digest, leaving evidence for the lifecycle gates.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from stockade.core import clock, inventory
from stockade.core.errors import InvalidInput
from stockade.core.evidence import Evidence, record_evidence
from stockade.core.findings import Finding, Location, ScanResult, Severity

if TYPE_CHECKING:
    from stockade.core.audit import AuditLog

__all__ = ["INTEGRITY_CHECK", "RULE_MISMATCH", "check_integrity", "count_records"]

_CSV_FIELD_LIMIT = 16 * 1024 * 1024


def count_records(path: Path, fmt: str) -> int | None:
    """Records in a CSV/TSV (header excluded, quoted newlines respected) or JSON-lines file,
    streamed; None for formats without a record structure."""
    fmt = fmt.lower()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            if fmt in {"csv", "tsv"}:
                csv.field_size_limit(_CSV_FIELD_LIMIT)
                reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
                rows = sum(1 for row in reader if row)
                return max(rows - 1, 0)
            if fmt in {"jsonl", "ndjson"}:
                return sum(1 for line in text if line.strip())
    except (OSError, csv.Error, EOFError) as exc:
        raise InvalidInput(f"{path}: cannot count records: {exc}") from exc
    return None


INTEGRITY_CHECK = "data.integrity"
RULE_MISMATCH = "STK-DATA-INT-001"


def check_integrity(
    session: Session,
    audit: AuditLog,
    *,
    dataset: str,
    version: str,
    path: Path,
    actor: str,
) -> tuple[ScanResult, Evidence]:
    """Compare a copy of a dataset with the digest registered for `dataset@version`.

    A different digest is a critical finding (the copy was altered, truncated or replaced:
    a poisoning signal); an unreadable copy is a could-not-inspect error. Either way the
    outcome is stored as evidence for the lifecycle gates.
    """
    kind = inventory.KINDS["dataset"]
    registered = inventory.get_version(session, kind, dataset, version)
    subject = kind.subject(dataset, version)
    started = clock.now()
    findings: list[Finding] = []
    actual = ""
    try:
        facts = inventory.describe_artifact(path)
    except InvalidInput as exc:
        findings.append(Finding.error(str(path), exc.message))
    else:
        actual = facts.digest
        if facts.digest != registered.digest:
            findings.append(
                Finding(
                    rule_id=RULE_MISMATCH,
                    title="Dataset copy differs from the registered version",
                    severity=Severity.CRITICAL,
                    location=Location(path=str(path)),
                    detail=(
                        f"{subject} was registered with {registered.digest} "
                        f"({registered.size} bytes); this copy is {facts.digest} "
                        f"({facts.size} bytes)"
                    ),
                    remediation=(
                        "Do not train on this copy. Fetch the dataset again from its source, "
                        "or register the new bytes as a new version after review."
                    ),
                    references=("ATLAS:AML.T0020", "OWASP-LLM04:2025"),
                    category="integrity",
                )
            )
    result = ScanResult(
        scanner=INTEGRITY_CHECK,
        targets=(str(path),),
        findings=tuple(findings),
        started_at=started,
        finished_at=clock.now(),
    )
    evidence = record_evidence(
        session,
        audit,
        check=INTEGRITY_CHECK,
        subject=subject,
        actor=actor,
        input_digest=actual,
        result=result,
    )
    return result, evidence
