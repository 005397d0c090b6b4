"""The SARIF 2.1.0 report, shaped for GitHub code scanning: one run, rules with
`security-severity` and tags, results with stable fingerprints, and every could-not-inspect
error as a tool execution notification that marks the run unsuccessful.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any, TextIO
from urllib.parse import quote

from stockade.core import clock
from stockade.core.findings import Finding, Location, ScanResult, Severity

__all__ = ["FINGERPRINT_KEY", "SARIF_SCHEMA_URI", "SRCROOT", "to_sarif", "write_sarif"]

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SRCROOT = "%SRCROOT%"
FINGERPRINT_KEY = "stockade/v1"

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
# GitHub buckets security-severity: >= 9.0 critical, 7.0-8.9 high, 4.0-6.9 medium, < 4 low.
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "2.0",
    Severity.INFO: "0.0",
}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_SAFE = "!#$&'()*+,/:;=?@[]~%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SEMVER = re.compile(r"\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")


def write_sarif(result: ScanResult, stream: TextIO) -> None:
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
    text = json.dumps(to_sarif(result), indent=2, ensure_ascii=encoding != "utf8")
    stream.write(text + "\n")
    stream.flush()


def to_sarif(result: ScanResult) -> dict[str, Any]:
    """The SARIF log as a JSON-ready dict."""
    issues, errors = result.issues, result.errors
    rule_ids = sorted({f.rule_id for f in issues})
    rule_index = {rule_id: index for index, rule_id in enumerate(rule_ids)}
    notice_ids = sorted({f.rule_id for f in errors})
    notice_index = {rule_id: index for index, rule_id in enumerate(notice_ids)}

    driver: dict[str, Any] = {"name": result.tool, "version": result.version}
    if _SEMVER.fullmatch(result.version):
        driver["semanticVersion"] = result.version
    uri = _information_uri(result.tool)
    if uri:
        driver["informationUri"] = uri
    driver["rules"] = [_rule([f for f in issues if f.rule_id == rule_id]) for rule_id in rule_ids]
    if notice_ids:
        driver["notifications"] = [
            _descriptor([f for f in errors if f.rule_id == rule_id]) for rule_id in notice_ids
        ]

    invocation: dict[str, Any] = {
        "executionSuccessful": not errors,
        "startTimeUtc": clock.format_time(result.started_at),
        "endTimeUtc": clock.format_time(result.finished_at),
    }
    if errors:
        invocation["toolExecutionNotifications"] = [
            _notification(f, notice_index[f.rule_id], result.root) for f in errors
        ]

    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "automationDetails": {"id": f"{result.tool}/{result.scanner}/"},
        "invocations": [invocation],
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, rule_index[f.rule_id], result.root) for f in issues],
        "properties": {
            "scanner": result.scanner,
            "targets": list(result.targets),
            "summary": result.summary(),
        },
    }
    if result.root is not None:
        run["originalUriBaseIds"] = {SRCROOT: {"uri": _directory_uri(result.root)}}
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


# -- rules ----------------------------------------------------------------------------
def _rule(findings: list[Finding]) -> dict[str, Any]:
    """A rule described by its most severe finding (findings arrive most severe first)."""
    top = findings[0]
    rule = _descriptor(findings)
    rule["defaultConfiguration"] = {"level": _LEVELS[top.severity]}
    rule["properties"] = {
        "security-severity": _SECURITY_SEVERITY[top.severity],
        "precision": _precision(max(f.confidence for f in findings)),
        "tags": _tags(findings),
    }
    return rule


def _descriptor(findings: list[Finding]) -> dict[str, Any]:
    top = findings[0]
    descriptor: dict[str, Any] = {
        "id": top.rule_id,
        "shortDescription": {"text": top.title},
        "help": {"text": top.remediation or top.title},
    }
    links = [ref for f in findings for ref in f.references if _SCHEME.match(ref)]
    if links:
        descriptor["helpUri"] = _url(links[0])
    return descriptor


def _tags(findings: list[Finding]) -> list[str]:
    tags: list[str] = ["security"]
    for finding in findings:
        if finding.category:
            tags.append(finding.category)
        for ref in finding.references:
            if _SCHEME.match(ref):
                continue
            if ref.upper().startswith("CWE-"):
                # The form GitHub code scanning recognises as a CWE.
                tags.append(f"external/cwe/cwe-{ref[4:].lower()}")
            else:
                tags.append(ref)
    return list(dict.fromkeys(tags))


def _precision(confidence: float) -> str:
    if confidence >= 0.9:
        return "very-high"
    if confidence >= 0.7:
        return "high"
    if confidence >= 0.4:
        return "medium"
    return "low"


# -- results and notifications --------------------------------------------------------
def _result(finding: Finding, index: int, root: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding.rule_id,
        "ruleIndex": index,
        "level": _LEVELS[finding.severity],
        "message": {"text": finding.message},
    }
    location = _location(finding, root)
    if location:
        result["locations"] = [location]
    result["partialFingerprints"] = {FINGERPRINT_KEY: finding.fingerprint}
    result["properties"] = _properties(finding)
    return result


def _notification(finding: Finding, index: int, root: str | None) -> dict[str, Any]:
    notification: dict[str, Any] = {
        "level": "error",
        "message": {"text": finding.message},
        "descriptor": {"id": finding.rule_id, "index": index},
    }
    location = _location(finding, root)
    if location:
        notification["locations"] = [location]
    notification["properties"] = _properties(finding)
    return notification


def _properties(finding: Finding) -> dict[str, Any]:
    loc = finding.location
    properties: dict[str, Any] = {
        "severity": finding.severity.value,
        "confidence": finding.confidence,
    }
    if finding.category:
        properties["category"] = finding.category
    if finding.references:
        properties["references"] = list(finding.references)
    if finding.remediation:
        properties["remediation"] = finding.remediation
    # Positions SARIF's region cannot carry (dataset cells, places inside an archive member).
    for name in ("member", "row", "column", "line", "start", "end", "offset"):
        value = getattr(loc, name)
        if value is not None:
            properties[name] = value
    if finding.snippet and not _region(loc):
        properties["snippet"] = finding.snippet
    if finding.properties:
        properties["details"] = dict(finding.properties)
    return properties


def _location(finding: Finding, root: str | None) -> dict[str, Any] | None:
    loc = finding.location
    location: dict[str, Any] = {}
    if loc.path:
        physical: dict[str, Any] = {"artifactLocation": _artifact_location(loc.path, root)}
        region = _region(loc)
        if region:
            if finding.snippet:
                region["snippet"] = {"text": finding.snippet}
            physical["region"] = region
        location["physicalLocation"] = physical
    logical = _logical_location(loc)
    if logical:
        location["logicalLocations"] = [logical]
    return location or None


def _region(loc: Location) -> dict[str, Any]:
    """Line, column and offsets, only where they are offsets into the file named by `path`:
    positions inside an archive member are not positions in the archive."""
    if loc.member is not None or not loc.path:
        return {}
    region: dict[str, Any] = {}
    if loc.line is not None:
        region["startLine"] = loc.line
        if loc.start is not None:
            region["startColumn"] = loc.start + 1
            if loc.end is not None:
                region["endColumn"] = loc.end + 1
    elif loc.start is not None:
        region["charOffset"] = loc.start
        if loc.end is not None:
            region["charLength"] = loc.end - loc.start
    if loc.offset is not None:
        region["byteOffset"] = loc.offset
    return region


def _logical_location(loc: Location) -> dict[str, Any] | None:
    """An archive member as `model.pt!/archive/data.pkl`, a dataset cell as
    `customers.csv row 12 col email`: the places a file URI and region cannot name."""
    if loc.member is None and loc.row is None and loc.column is None:
        return None
    logical = Location(path=loc.path, member=loc.member, row=loc.row, column=loc.column)
    if loc.member is not None:
        return {"name": loc.member, "fullyQualifiedName": logical.describe(), "kind": "resource"}
    name = f"row {loc.row}" if loc.row is not None else str(loc.column)
    return {"name": name, "fullyQualifiedName": logical.describe(), "kind": "element"}


# -- URIs -----------------------------------------------------------------------------
def _artifact_location(path: str, root: str | None) -> dict[str, Any]:
    """URLs stay absolute; file paths become relative to `%SRCROOT%` where they can."""
    if _SCHEME.match(path):
        return {"uri": _url(path)}
    pure = PurePosixPath(path)
    if pure.is_absolute():
        if root is not None:
            try:
                relative = pure.relative_to(PurePosixPath(root))
            except ValueError:
                pass
            else:
                return {"uri": _path_uri(relative.as_posix()), "uriBaseId": SRCROOT}
        return {"uri": "file://" + _path_uri(pure.as_posix())}
    return {"uri": _path_uri(pure.as_posix()), "uriBaseId": SRCROOT}


def _path_uri(path: str) -> str:
    # Everything but unreserved characters and "/" is escaped: ":" in a relative path
    # would otherwise read as a scheme, "%" in a file name is a literal percent sign.
    return quote(path, safe="/")


def _url(url: str) -> str:
    return quote(_LONE_PERCENT.sub("%25", url), safe=_URL_SAFE)


def _directory_uri(root: str) -> str:
    uri = "file://" + _path_uri(PurePosixPath(root).as_posix())
    return uri if uri.endswith("/") else uri + "/"


@lru_cache(maxsize=8)
def _information_uri(tool: str) -> str | None:
    """The project's home page from the installed package metadata, when it declares one."""
    try:
        meta = metadata.metadata(tool)
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or ():
        label, _, url = entry.partition(",")
        if label.strip().lower() in {"homepage", "home", "source", "repository"} and url.strip():
            return _url(url.strip())
    home = meta.get("Home-page")
    return _url(home) if home and _SCHEME.match(home) else None
