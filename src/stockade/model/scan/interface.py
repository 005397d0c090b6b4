"""The shape every format scanner shares: a `Blob` of bytes to inspect, the `ScanContext`
that collects findings and recurses into nested members, and the `FormatScanner` protocol.

A format scanner never imports, unpickles or executes what it inspects: it parses bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from stockade.core.findings import Finding, Location, Severity

__all__ = [
    "REFERENCES",
    "Blob",
    "FormatScanner",
    "Limits",
    "ScanContext",
    "path_escapes",
]

# Framework references for "loading this model runs code".
REFERENCES: tuple[str, ...] = ("CWE-502", "OWASP-LLM03:2025", "ATLAS:AML.T0010")

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:|\\\\|//)")


def path_escapes(path: str) -> bool:
    """True for absolute paths (POSIX, Windows drive or UNC) and for relative ones that
    climb above where they start: `../x`, `a/../../x`."""
    if path.startswith(("/", "\\")) or _WINDOWS_ABSOLUTE.match(path):
        return True
    depth = 0
    for part in re.split(r"[/\\]", path):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile file from exhausting the scanner."""

    max_depth: int = 6  # containers within containers
    max_members: int = 20_000  # per container
    max_member_bytes: int = 8 << 30  # one decompressed member
    max_total_bytes: int = 32 << 30  # everything decompressed from one top-level file
    max_ratio: int = 250  # decompressed / compressed size above which a member is a bomb
    max_pickle_ops: int = 50_000_000  # opcodes interpreted per pickle stream


@dataclass(frozen=True)
class Blob:
    """Bytes to inspect: a whole file, or a member found inside one.

    `path` is the top-level file as the user named it; `member` the chain of member names
    inside it joined by `!/` (None for the file itself); `data` the bytes (a memoryview
    over an mmap for top-level files, so large files are not copied); `depth` how many
    containers deep it sits. `base` is the directory a model folder's relative references
    resolve against (ONNX external data, Hugging Face auto_map), None for members.
    """

    path: str
    data: bytes | memoryview
    member: str | None = None
    depth: int = 0
    base: str | None = None

    @property
    def name(self) -> str:
        """The last path component: the member's own name, or the file name."""
        last = self.member.rsplit("!/", 1)[-1] if self.member else self.path
        return last.replace("\\", "/").rsplit("/", 1)[-1]

    def location(self, offset: int | None = None) -> Location:
        return Location(path=self.path, member=self.member, offset=offset)

    def child(self, name: str, data: bytes | memoryview) -> Blob:
        member = f"{self.member}!/{name}" if self.member else name
        return Blob(self.path, data, member, self.depth + 1)


class FormatScanner(Protocol):
    """One format. `detect` looks at content (magic bytes, structure), never only at the
    extension; `scan` reports through the context and recurses via `ctx.scan_member`."""

    name: ClassVar[str]

    def detect(self, blob: Blob) -> bool: ...

    def scan(self, blob: Blob, ctx: ScanContext) -> None: ...


@dataclass
class ScanContext:
    """Collects findings for one top-level file and dispatches nested members.

    `dispatch` is set by the engine: it detects the member's format and runs its scanner
    (or reports it as unrecognised). Scanners call `scan_member` for every embedded file
    or byte string that may itself be a model artifact (archive members, nested pickles).
    """

    limits: Limits = field(default_factory=Limits)
    findings: list[Finding] = field(default_factory=list)
    dispatch: Callable[[Blob, ScanContext], None] | None = None
    total_bytes: int = 0
    formats: list[str] = field(default_factory=list)

    def report(
        self,
        blob: Blob,
        rule_id: str,
        title: str,
        severity: Severity,
        *,
        offset: int | None = None,
        detail: str = "",
        snippet: str = "",
        remediation: str = "",
        references: tuple[str, ...] = REFERENCES,
        confidence: float = 1.0,
        category: str = "model-code-execution",
        properties: dict[str, object] | None = None,
    ) -> None:
        self.findings.append(
            Finding(
                rule_id=rule_id,
                title=title,
                severity=severity,
                confidence=confidence,
                location=blob.location(offset),
                snippet=snippet,
                detail=detail,
                remediation=remediation
                or "Do not load this file. Obtain the model from a trusted source in a "
                "data-only format (safetensors, ONNX without custom ops, GGUF).",
                references=references,
                category=category,
                properties=dict(properties or {}),
            )
        )

    def error(self, blob: Blob, reason: str, *, offset: int | None = None) -> None:
        """Something could not be fully inspected: the scan fails closed (exit 2)."""
        self.findings.append(Finding.error(blob.path, reason, location=blob.location(offset)))

    def scan_member(self, parent: Blob, name: str, data: bytes | memoryview) -> None:
        """Inspect a member found inside `parent`, within the depth and size limits."""
        child = parent.child(name, data)
        if child.depth > self.limits.max_depth:
            self.error(child, f"nested deeper than {self.limits.max_depth} containers")
            return
        self.total_bytes += len(data)
        if self.total_bytes > self.limits.max_total_bytes:
            self.error(
                child, f"more than {self.limits.max_total_bytes} bytes unpacked from one file"
            )
            return
        if self.dispatch is None:
            raise RuntimeError("ScanContext.dispatch is not set")
        self.dispatch(child, self)
