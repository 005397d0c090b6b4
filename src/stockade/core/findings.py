"""The Finding record every scanner produces, the ScanResult that carries a run's findings,
and the exit-code convention every scanning command follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import total_ordering
from typing import Any, Literal

from stockade import __version__
from stockade.core import clock
from stockade.core.errors import InvalidInput

__all__ = [
    "ERROR_RULE_ID",
    "EXIT_CLEAN",
    "EXIT_FINDINGS",
    "EXIT_INCOMPLETE",
    "REPORT_SCHEMA_VERSION",
    "Finding",
    "FindingKind",
    "Location",
    "ScanResult",
    "Severity",
    "exit_code",
    "mask_secret",
]

EXIT_CLEAN = 0
"""Nothing at or above the `--fail-on` threshold."""
EXIT_FINDINGS = 1
"""At least one finding at or above the threshold."""
EXIT_INCOMPLETE = 2
"""The scan could not complete: something could not be inspected. Takes precedence over 1."""

ERROR_RULE_ID = "STK-ERR-001"
REPORT_SCHEMA_VERSION = 1
MAX_SNIPPET = 1000
MAX_RULE_ID = 100  # the width of `findings.rule_id`

FindingKind = Literal["finding", "error"]
_KINDS = ("finding", "error")

_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]*")
_MASK = "********"
# Characters that rewrite a terminal or reorder text on screen ("Trojan Source").
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@total_ordering
class Severity(Enum):
    """How bad a finding is; ordered `info < low < medium < high < critical`."""

    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Severity | None:
        if isinstance(value, str):
            wanted = value.strip().lower()
            for member in cls:
                if member.value == wanted:
                    return member
        return None

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        """`"HIGH"`, `" high "` or `Severity.HIGH` → `Severity.HIGH`; anything else is refused."""
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            found = cls._missing_(value)
            if found is not None:
                return found
        names = ", ".join(member.value for member in cls)
        raise InvalidInput(f"unknown severity {value!r}: use one of {names}")


_RANKS = {severity: rank for rank, severity in enumerate(Severity)}


def mask_secret(value: str, keep: int = 4) -> str:
    """Hide a secret, keeping at most `keep` characters at each end and never more than a
    quarter of it at each end: `mask_secret("sk-abcdef0123456789")` → `"sk-a********6789"`.

    The mask has a fixed width, so the length of the secret does not show; masking an
    already masked value returns it unchanged.
    """
    if _is_masked(value, keep):
        return value
    shown = min(keep, len(value) // 4)
    if shown == 0:
        return _MASK
    return f"{value[:shown]}{_MASK}{value[-shown:]}"


def _is_masked(value: str, keep: int) -> bool:
    return any(
        len(value) == 2 * shown + len(_MASK) and value[shown : shown + len(_MASK)] == _MASK
        for shown in range(keep + 1)
    )


def _clean(text: str) -> str:
    """Escape what would corrupt a terminal, a database or a JSON document: control
    characters (tab and newline excepted), bidirectional overrides and lone surrogates.
    Idempotent, so a record read back is equal to the one written."""
    if text.isprintable() and text.isascii():
        return text
    out: list[str] = []
    for char in text:
        if char in "\t\n":
            out.append(char)
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cs") or char in _BIDI:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InvalidInput(f"location {name} must be text, not {type(value).__name__}")
    return _clean(value)


def _optional_count(value: Any, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"location {name} must be an integer, not {value!r}")
    if value < minimum:
        raise InvalidInput(f"location {name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class Location:
    """Where a finding is; every part is optional, fill in what the source knows.

    - `path`: the file (or URL) scanned, as given by the user.
    - `member`: the entry inside an archive or container (`archive/data.pkl` in a `.pt`).
    - `offset`: byte offset from the start of the file or member, from 0.
    - `row`: data record number, from 1 (a CSV header is not a record).
    - `column`: column name of a table, or field name of a record.
    - `line`: line number, from 1.
    - `start`, `end`: character span, from 0, end exclusive; within `line` when it is set,
      else within the text of the value (the cell, the prompt, the whole file).
    """

    path: str | None = None
    member: str | None = None
    offset: int | None = None
    row: int | None = None
    column: str | None = None
    line: int | None = None
    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        for name in ("path", "member", "column"):
            object.__setattr__(self, name, _optional_text(getattr(self, name), name))
        for name, minimum in (("offset", 0), ("row", 1), ("line", 1), ("start", 0), ("end", 0)):
            object.__setattr__(self, name, _optional_count(getattr(self, name), name, minimum))
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InvalidInput(f"location span ends ({self.end}) before it starts ({self.start})")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in _LOCATION_FIELDS)

    def describe(self) -> str:
        """Compact and readable: `model.pt!/archive/data.pkl @ byte 1024`, `app.py:14:5`,
        `customers.csv row 12 col email`."""
        text = self.path or ""
        if self.member is not None:
            text += f"!/{self.member}"
        if self.line is not None:
            text += f":{self.line}"
            if self.start is not None:
                text += f":{self.start + 1}"
        parts = [text] if text else []
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"col {self.column}")
        if self.line is None and self.start is not None:
            span = (
                f"chars {self.start}-{self.end}" if self.end is not None else f"char {self.start}"
            )
            parts.append(span)
        if self.offset is not None:
            parts.append(f"@ byte {self.offset}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _LOCATION_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Location:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidInput("location must be an object")
        return cls(**{name: data.get(name) for name in _LOCATION_FIELDS})


_LOCATION_FIELDS = ("path", "member", "offset", "row", "column", "line", "start", "end")


def _jsonable(properties: Mapping[str, Any]) -> dict[str, Any]:
    try:
        normalised = json.loads(json.dumps(dict(properties), allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"finding properties must be plain JSON values: {exc}") from None
    return normalised


@dataclass(frozen=True)
class Finding:
    """One thing a scanner found, or one thing it could not inspect (`kind="error"`).

    `snippet` is the evidence, shortened to 1000 characters; when `secret` is true it is
    masked here, at construction, so no writer, log or database ever sees it in clear.
    `references` name framework entries (`OWASP-LLM01:2025`, `ATLAS:AML.T0051`, `CWE-502`)
    or URLs. `properties` holds extra JSON facts (a package version, a CVSS score).
    """

    rule_id: str
    title: str
    severity: Severity
    confidence: float = 1.0
    location: Location = field(default_factory=Location)
    snippet: str = ""
    secret: bool = False
    detail: str = ""
    remediation: str = ""
    references: tuple[str, ...] = ()
    category: str = ""
    kind: FindingKind = "finding"
    properties: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.rule_id, str) or not (
            len(self.rule_id) <= MAX_RULE_ID and _RULE_ID.fullmatch(self.rule_id)
        ):
            raise InvalidInput(
                f"invalid rule id {self.rule_id!r}: 1 to {MAX_RULE_ID} characters, "
                "letters, digits and . _ : / + -"
            )
        if not isinstance(self.title, str) or not self.title.strip():
            raise InvalidInput(f"finding {self.rule_id} needs a title")
        object.__setattr__(self, "severity", Severity.parse(self.severity))
        confidence = self.confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | float):
            raise InvalidInput(f"confidence must be a number from 0 to 1, not {confidence!r}")
        if not 0.0 <= confidence <= 1.0:
            raise InvalidInput(f"confidence must be from 0 to 1, not {confidence!r}")
        object.__setattr__(self, "confidence", float(confidence))
        if self.kind not in _KINDS:
            raise InvalidInput(f"finding kind must be 'finding' or 'error', not {self.kind!r}")
        if not isinstance(self.location, Location):
            raise InvalidInput("finding location must be a Location")
        for name in ("title", "detail", "remediation", "category"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidInput(f"finding {name} must be text")
            object.__setattr__(self, name, _clean(value))
        if not isinstance(self.snippet, str):
            raise InvalidInput("finding snippet must be text")
        # Clean before masking, so masking a record read back changes nothing.
        snippet = _clean(self.snippet)
        if self.secret and snippet:
            snippet = mask_secret(snippet)
        if len(snippet) > MAX_SNIPPET:
            snippet = snippet[: MAX_SNIPPET - 1] + "…"
        object.__setattr__(self, "snippet", snippet)
        object.__setattr__(self, "secret", bool(self.secret))
        references = (self.references,) if isinstance(self.references, str) else self.references
        cleaned = tuple(_clean(str(ref)).strip() for ref in references)
        if any(not ref for ref in cleaned):
            raise InvalidInput(f"finding {self.rule_id} has an empty reference")
        object.__setattr__(self, "references", cleaned)
        object.__setattr__(self, "properties", _jsonable(self.properties))

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def error(
        cls,
        path: str | os.PathLike[str] | None,
        reason: str,
        *,
        member: str | None = None,
        location: Location | None = None,
        rule_id: str = ERROR_RULE_ID,
        severity: Severity = Severity.HIGH,
    ) -> Finding:
        """A record that something could not be inspected, and why. Never drop one: it
        makes the scan's exit code 2 (fail closed)."""
        where = location or Location(path=path, member=member)
        return cls(
            rule_id=rule_id,
            title="Could not inspect",
            severity=severity,
            location=where,
            detail=reason,
            remediation="Fix or remove the input, or inspect it by other means, then rescan.",
            category="could-not-inspect",
            kind="error",
        )

    # -- derived ----------------------------------------------------------------------
    @property
    def is_error(self) -> bool:
        return self.kind == "error"

    @property
    def message(self) -> str:
        """Title and detail in one line of prose."""
        return f"{self.title}: {self.detail}" if self.detail else self.title

    @property
    def fingerprint(self) -> str:
        """Stable across runs over the same input: rule, location and evidence."""
        material = json.dumps(
            [self.rule_id, self.location.to_dict(), self.snippet, self.kind],
            sort_keys=True,
            ensure_ascii=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity.value,
            "confidence": self.confidence,
            "kind": self.kind,
            "category": self.category,
            "location": self.location.to_dict(),
            "snippet": self.snippet,
            "secret": self.secret,
            "detail": self.detail,
            "remediation": self.remediation,
            "references": list(self.references),
            "properties": dict(self.properties),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """The inverse of `to_dict`; unknown keys are ignored, so newer records still read."""
        if not isinstance(data, Mapping):
            raise InvalidInput("finding must be an object")
        missing = [key for key in ("rule_id", "title", "severity") if key not in data]
        if missing:
            raise InvalidInput(f"finding is missing {', '.join(missing)}")
        references = data.get("references") or ()
        if isinstance(references, str) or not isinstance(references, Iterable):
            raise InvalidInput("finding references must be a list of text")
        properties = data.get("properties") or {}
        if not isinstance(properties, Mapping):
            raise InvalidInput("finding properties must be an object")
        return cls(
            rule_id=data["rule_id"],
            title=data["title"],
            severity=Severity.parse(data["severity"]),
            confidence=data.get("confidence", 1.0),
            location=Location.from_dict(data.get("location")),
            snippet=data.get("snippet", ""),
            secret=bool(data.get("secret", False)),
            detail=data.get("detail", ""),
            remediation=data.get("remediation", ""),
            references=tuple(references),
            category=data.get("category", ""),
            kind=data.get("kind", "finding"),
            properties=properties,
        )


def _order(finding: Finding) -> tuple[Any, ...]:
    """Most severe first, then by place; every other field breaks ties, so records that
    differ in anything at all always sort the same way."""
    loc = finding.location

    def num(value: int | None) -> int:
        return -1 if value is None else value

    return (
        -finding.severity.rank,
        loc.path or "",
        loc.member or "",
        num(loc.line),
        num(loc.start),
        num(loc.end),
        num(loc.row),
        loc.column or "",
        num(loc.offset),
        (loc.path is None, loc.member is None, loc.column is None),
        finding.rule_id,
        finding.kind,
        finding.title,
        finding.detail,
        finding.snippet,
        finding.secret,
        finding.confidence,
        finding.category,
        finding.remediation,
        finding.references,
        json.dumps(finding.properties, sort_keys=True) if finding.properties else "",
    )


def _moment(value: Any, name: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{name} is not an RFC 3339 time: {value!r}") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware time")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class ScanResult:
    """One scanning run: what was scanned, by which tool, when, and every record it made.

    `findings` holds problems and could-not-inspect errors alike, in a canonical order
    (most severe first, then by location), so reports are identical for identical input
    however the scan was parallelised. `root`, when given, is the directory relative
    paths are relative to.
    """

    scanner: str
    targets: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    started_at: datetime = field(default_factory=clock.now)
    finished_at: datetime = field(default_factory=clock.now)
    tool: str = "stockade"
    version: str = __version__
    root: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scanner, str) or not self.scanner.strip():
            raise InvalidInput("a scan result needs the scanner's name")
        targets = (self.targets,) if isinstance(self.targets, str | os.PathLike) else self.targets
        object.__setattr__(self, "targets", tuple(_clean(os.fspath(t)) for t in targets))
        findings = tuple(self.findings)
        if not all(isinstance(f, Finding) for f in findings):
            raise InvalidInput("scan result findings must be Finding records")
        object.__setattr__(self, "findings", tuple(sorted(findings, key=_order)))
        object.__setattr__(self, "started_at", _moment(self.started_at, "started_at"))
        object.__setattr__(self, "finished_at", _moment(self.finished_at, "finished_at"))
        if self.finished_at < self.started_at:
            raise InvalidInput("a scan cannot finish before it starts")
        if self.root is not None:
            object.__setattr__(self, "root", _clean(os.fspath(self.root)))

    @property
    def issues(self) -> tuple[Finding, ...]:
        """The findings proper: everything that is not a could-not-inspect error."""
        return tuple(f for f in self.findings if not f.is_error)

    @property
    def errors(self) -> tuple[Finding, ...]:
        """What could not be inspected, each with its reason."""
        return tuple(f for f in self.findings if f.is_error)

    @property
    def duration(self) -> float:
        """Seconds from start to finish."""
        return (self.finished_at - self.started_at).total_seconds()

    def counts(self) -> dict[str, int]:
        """Findings (errors excluded) per severity, most severe first, every level present."""
        tally = Counter(f.severity for f in self.issues)
        return {s.value: tally.get(s, 0) for s in sorted(Severity, reverse=True)}

    def summary(self) -> dict[str, Any]:
        return {
            "findings": len(self.issues),
            "errors": len(self.errors),
            "by_severity": self.counts(),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON report document (schema version 1)."""
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "tool": {"name": self.tool, "version": self.version},
            "scanner": self.scanner,
            "targets": list(self.targets),
            "root": self.root,
            "started_at": clock.format_time(self.started_at),
            "finished_at": clock.format_time(self.finished_at),
            "duration_seconds": self.duration,
            "summary": self.summary(),
            "findings": [f.to_dict() for f in self.issues],
            "errors": [f.to_dict() for f in self.errors],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanResult:
        if not isinstance(data, Mapping):
            raise InvalidInput("scan result must be an object")
        version = data.get("schema_version")
        if version != REPORT_SCHEMA_VERSION:
            raise InvalidInput(
                f"unsupported report schema_version {version!r} (expected {REPORT_SCHEMA_VERSION})"
            )
        tool = data.get("tool") or {}
        records = [*(data.get("findings") or ()), *(data.get("errors") or ())]
        return cls(
            scanner=data.get("scanner", ""),
            targets=tuple(data.get("targets") or ()),
            findings=tuple(Finding.from_dict(item) for item in records),
            started_at=data.get("started_at"),  # type: ignore[arg-type]
            finished_at=data.get("finished_at"),  # type: ignore[arg-type]
            tool=tool.get("name", "stockade"),
            version=tool.get("version", ""),
            root=data.get("root"),
        )


def exit_code(result: ScanResult, fail_on: Severity | str = Severity.HIGH) -> int:
    """0: nothing at or above `fail_on`; 1: findings at or above it; 2: something could
    not be inspected (fail closed; takes precedence over 1)."""
    threshold = Severity.parse(fail_on)
    if result.errors:
        return EXIT_INCOMPLETE
    if any(f.severity >= threshold for f in result.issues):
        return EXIT_FINDINGS
    return EXIT_CLEAN
