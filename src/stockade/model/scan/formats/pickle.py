"""Pickle streams (protocols 0-5, several in one stream, joblib's inline arrays): judge what
the symbolic interpreter saw against the allow/deny policy in `rules/pickle_policy.toml`.

Never unpickles: `pickle_vm` interprets the opcodes on symbolic values.
"""

from __future__ import annotations

import re
import tomllib
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass
from fnmatch import translate
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from stockade.core.errors import ConfigError
from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext
from stockade.model.scan.pickle_vm import (
    NO_ROLES,
    UNKNOWN_ROLES,
    CallRoles,
    GlobalUse,
    Interpretation,
    Issue,
    Use,
    interpret,
    looks_like_pickle,
)

__all__ = [
    "RULES",
    "SCANNER",
    "PicklePolicy",
    "PickleScanner",
    "PolicyEntry",
    "Verdict",
    "default_policy",
    "load_policy",
    "scan_pickle",
    "validate_policy",
]

RULES: dict[str, str] = {
    "STK-PKL-001": "Dangerous callable invoked when the pickle is loaded",
    "STK-PKL-002": "Dangerous global imported by the pickle",
    "STK-PKL-003": "Unknown callable invoked when the pickle is loaded",
    "STK-PKL-004": "Global whose name is computed at load time",
    "STK-PKL-005": "Unregistered extension code",
    "STK-PKL-006": "Calls a value computed at load time",
    "STK-PKL-007": "Modifies a module-level object",
    "STK-PKL-008": "Unknown global imported by the pickle",
    "STK-PKL-009": "Persistent id the standard loaders do not define",
    "STK-PKL-010": "Unpickles data computed at load time",
    "STK-PKL-011": "joblib array read from a file outside the model folder",
    "STK-PKL-012": "Trailing data after the last pickle",
    "STK-PKL-013": "joblib array data of unknown size",
}

_USES = {"reference": Use.REFERENCE, "construct": Use.CONSTRUCT, "call": Use.CALL}
_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]+")
_ENTRY_KEYS = {
    "deny": {
        "reason",
        "globals",
        "unless",
        "severity",
        "calls",
        "constructs",
        "unpickles",
        "resolves",
    },
    "allow": {"reason", "globals", "use", "calls", "constructs", "unpickles", "resolves"},
}
_MAX_ROLE_INDEX = 32
_CHAIN_DUNDERS = re.compile(r"__\w+__")


@dataclass(frozen=True)
class PolicyEntry:
    """One [[allow]] or [[deny]] entry of the policy file."""

    kind: Literal["allow", "deny"]
    patterns: tuple[str, ...]
    reason: str
    use: Use = Use.REFERENCE  # allow: the strongest safe use
    severity: Severity = Severity.CRITICAL  # deny: when invoked
    roles: CallRoles = NO_ROLES
    exact: frozenset[str] = frozenset()
    regex: re.Pattern[str] | None = None
    unless: re.Pattern[str] | None = None  # deny: exceptions to the patterns

    def matches(self, label: str) -> bool:
        if self.unless is not None and self.unless.match(label):
            return False
        return label in self.exact or (self.regex is not None and bool(self.regex.match(label)))

    def allows(self, label: str, *, chained: bool) -> bool:
        """A wildcard never allows an attribute chain (`name` with dots); exact names may."""
        if label in self.exact:
            return True
        return not chained and self.regex is not None and bool(self.regex.match(label))


@dataclass(frozen=True)
class Verdict:
    """The policy's judgement of one global: `denied` (with the entry), `allowed`, or
    neither (unknown)."""

    denied: PolicyEntry | None
    allowed: Use | None  # the strongest use an allow entry permits


class PicklePolicy:
    """Allow and deny entries, matched against `module.name`."""

    def __init__(self, entries: list[PolicyEntry], source: str) -> None:
        self.entries = entries
        self.source = source
        self.deny = [e for e in entries if e.kind == "deny"]
        self.allow = [e for e in entries if e.kind == "allow"]
        self._verdicts: dict[tuple[str, str, str | None], Verdict] = {}
        self._roles: dict[tuple[str, str], CallRoles] = {}

    # -- judgement ------------------------------------------------------------------------
    def judge(self, module: str, name: str, written: str | None = None) -> Verdict:
        """Deny if any form of the name is denied (as written, as mapped from Python 2,
        any suffix of an attribute chain); otherwise the strongest use allowed, if any."""
        key = (module, name, written)
        found = self._verdicts.get(key)
        if found is None:
            found = self._verdicts[key] = self._judge(module, name, written)
        return found

    def _judge(self, module: str, name: str, written: str | None) -> Verdict:
        for label in _candidates(module, name, written):
            for entry in self.deny:
                if entry.matches(label):
                    return Verdict(entry, None)
        if "." in name and _CHAIN_DUNDERS.search(name):
            return Verdict(_INTERNALS, None)
        label = f"{module}.{name}"
        best: Use | None = None
        for entry in self.allow:
            if entry.allows(label, chained="." in name) and (best is None or entry.use > best):
                best = entry.use
        return Verdict(None, best)

    def roles(self, module: str, name: str) -> CallRoles:
        """What a callable does with its arguments (for the interpreter): the roles an
        entry names, none for a callable allowed to be called, and "may call any function
        it is given" for everything else."""
        key = (module, name)
        found = self._roles.get(key)
        if found is None:
            label = f"{module}.{name}"
            chained = "." in name
            for entry in (*self.deny, *self.allow):
                if entry.roles is not NO_ROLES and entry.allows(label, chained=chained):
                    found = entry.roles
                    break
            else:
                verdict = self.judge(module, name)
                safe = verdict.denied is None and verdict.allowed == Use.CALL
                found = NO_ROLES if safe else UNKNOWN_ROLES
            self._roles[key] = found
        return found


def _candidates(module: str, name: str, written: str | None) -> list[str]:
    """The full name, the name as written (Python 2), its Python 3 mapping, and every
    suffix of an attribute chain (`pkg.mod` + `os.system` → `os.system`)."""
    labels = [f"{module}.{name}"]
    if written:
        labels.append(written)
    mapped = NAME_MAPPING.get((module, name))
    if mapped:
        labels.append(".".join(mapped))
    elif module in IMPORT_MAPPING:
        labels.append(f"{IMPORT_MAPPING[module]}.{name}")
    parts = name.split(".")
    labels.extend(".".join(parts[index:]) for index in range(len(parts) - 1))
    return labels


_INTERNALS = PolicyEntry(
    kind="deny",
    patterns=("*.__*__.*",),
    reason="reaches interpreter internals through an attribute chain",
)


# -- loading and validating the policy --------------------------------------------------


def load_policy(path: str | Path | None = None) -> PicklePolicy:
    """Read and validate a policy file (the built-in one when `path` is None)."""
    if path is None:
        text = resources.files("stockade.model.scan.rules").joinpath("pickle_policy.toml")
        source = "built-in pickle policy"
        raw = text.read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read pickle policy {source}: {exc.strerror}") from None
    try:
        document = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"pickle policy {source} is not valid TOML: {exc}") from None
    return PicklePolicy(validate_policy(document, source), source)


def validate_policy(document: dict[str, Any], source: str = "pickle policy") -> list[PolicyEntry]:
    """Check a parsed policy document and build its entries; a problem is a ConfigError
    that names the entry."""
    unknown = set(document) - {"version", "allow", "deny"}
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    if document.get("version") != 1:
        raise ConfigError(f"{source}: version must be 1")
    entries: list[PolicyEntry] = []
    kinds: tuple[Literal["deny", "allow"], ...] = ("deny", "allow")
    for kind in kinds:
        items = document.get(kind, [])
        if not isinstance(items, list):
            raise ConfigError(f"{source}: [[{kind}]] must be a list of tables")
        for number, item in enumerate(items, 1):
            entries.append(_entry(kind, item, f"{source}: {kind} entry {number}"))
    return entries


def _entry(kind: Literal["allow", "deny"], item: Any, where: str) -> PolicyEntry:
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table")
    extra = set(item) - _ENTRY_KEYS[kind]
    if extra:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(extra))}")
    reason = item.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"{where}: needs a reason")
    patterns = item.get("globals")
    if not isinstance(patterns, list) or not patterns:
        raise ConfigError(f"{where}: globals must be a non-empty list")
    for pattern in patterns:
        if not isinstance(pattern, str) or not _PATTERN.fullmatch(pattern) or "." not in pattern:
            raise ConfigError(f"{where}: {pattern!r} is not a module.name pattern")
    use = Use.REFERENCE
    if kind == "allow":
        named = item.get("use")
        if named not in _USES:
            raise ConfigError(f"{where}: use must be one of {', '.join(_USES)}")
        use = _USES[named]
    severity = Severity.CRITICAL
    if "severity" in item:
        try:
            severity = Severity.parse(item["severity"])
        except Exception:
            raise ConfigError(f"{where}: unknown severity {item['severity']!r}") from None
        if severity < Severity.HIGH:
            raise ConfigError(f"{where}: a denied global is at least high")
    roles = CallRoles(
        calls=_indices(item, "calls", where),
        constructs=_indices(item, "constructs", where),
        unpickles=_indices(item, "unpickles", where),
        resolves=_resolves(item, where),
    )
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    wild = [p for p in patterns if p not in exact]
    regex = re.compile("|".join(f"(?:{translate(p)})" for p in wild)) if wild else None
    exceptions = item.get("unless", [])
    if not isinstance(exceptions, list) or not all(
        isinstance(p, str) and _PATTERN.fullmatch(p) and "." in p for p in exceptions
    ):
        raise ConfigError(f"{where}: unless must be a list of module.name patterns")
    unless = re.compile("|".join(f"(?:{translate(p)})" for p in exceptions)) if exceptions else None
    return PolicyEntry(
        kind=kind,
        patterns=tuple(patterns),
        reason=reason.strip(),
        use=use,
        severity=severity,
        roles=NO_ROLES if roles == NO_ROLES else roles,
        exact=exact,
        regex=regex,
        unless=unless,
    )


def _indices(item: dict[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < _MAX_ROLE_INDEX for i in value
    ):
        raise ConfigError(f"{where}: {key} must be a list of argument positions")
    return tuple(value)


def _resolves(item: dict[str, Any], where: str) -> tuple[int, int] | None:
    if "resolves" not in item:
        return None
    value = _indices(item, "resolves", where)
    if len(value) != 2:
        raise ConfigError(f"{where}: resolves names two argument positions")
    return value[0], value[1]


@lru_cache(maxsize=1)
def default_policy() -> PicklePolicy:
    """The built-in policy, loaded and validated once per process."""
    return load_policy()


# -- scanning ---------------------------------------------------------------------------

_USE_WORDS = {
    Use.REFERENCE: "imported",
    Use.CONSTRUCT: "instantiated",
    Use.CALL: "called",
    Use.MODIFY: "modified",
}


def scan_pickle(blob: Blob, ctx: ScanContext, policy: PicklePolicy | None = None) -> None:
    """Interpret every pickle in `blob` (they may follow one another) and report what the
    policy says about each global and construct; a break is an error finding, reported
    after everything found before it."""
    policy = policy or default_policy()
    data = blob.data
    size = len(data)
    budget = ctx.limits.max_pickle_ops
    pos = 0
    first = True
    while pos < size:
        result = interpret(data, pos, roles=policy.roles, max_ops=max(budget, 1))
        if not first and result.error is not None and not result.globals:
            # Bytes after a STOP that do not start a pickle (torch's legacy storages,
            # padding): a loader reading one more pickle fails there before importing.
            _trailing(blob, ctx, pos, size)
            return
        _report(blob, ctx, policy, result)
        for nested in result.nested:
            ctx.scan_member(blob, f"<nested pickle @{nested.offset}>", nested.data)
        if result.error is not None:
            ctx.error(
                blob,
                f"pickle stream broken at byte {result.error.offset}: {result.error.reason}",
                offset=result.error.offset,
            )
            return
        if _stopped_early(result):
            return
        budget -= result.ops
        if budget <= 0 and result.end < size:
            ctx.error(blob, "too many pickle opcodes to inspect", offset=result.end)
            return
        pos = result.end
        first = False


def _stopped_early(result: Interpretation) -> bool:
    return any(issue.code == "joblib-unknown-size" for issue in result.issues)


def _trailing(blob: Blob, ctx: ScanContext, pos: int, size: int) -> None:
    ctx.report(
        blob,
        "STK-PKL-012",
        RULES["STK-PKL-012"],
        Severity.INFO,
        offset=pos,
        detail=f"{size - pos} bytes after the last pickle do not start another pickle "
        "(raw data such as legacy PyTorch storages); they were not interpreted",
        remediation="Nothing to do if a loader reads this data as raw bytes.",
        references=(),
        category="coverage",
    )


def _report(blob: Blob, ctx: ScanContext, policy: PicklePolicy, result: Interpretation) -> None:
    for use in result.globals:
        _report_global(blob, ctx, policy, use)
    for issue in result.issues:
        _report_issue(blob, ctx, issue)


def _where(use: GlobalUse) -> str:
    text = f"imported by {use.opcode} at byte {use.offset}"
    if use.use > Use.REFERENCE:
        text += f", {_USE_WORDS[use.use]} by {use.use_opcode} at byte {use.use_offset}"
        if use.invocations > 1:
            text += f" ({use.invocations} times)"
    if use.written:
        text += f"; written as {use.written}"
    return text


def _report_global(blob: Blob, ctx: ScanContext, policy: PicklePolicy, use: GlobalUse) -> None:
    label = use.label
    props: dict[str, object] = {
        "global": label,
        "use": _USE_WORDS[use.use],
        "opcode": use.opcode,
        "invocations": use.invocations,
    }
    invoked = use.use >= Use.CONSTRUCT
    offset = use.use_offset if invoked else use.offset
    if use.kind == "computed":
        ctx.report(
            blob,
            "STK-PKL-004",
            RULES["STK-PKL-004"],
            Severity.CRITICAL if invoked else Severity.HIGH,
            offset=offset,
            detail=f"The module or name of this global is made by calls at load time, so what "
            f"it imports cannot be known before loading; {_where(use)}.",
            snippet=label,
            properties=props,
        )
        return
    if use.kind == "extension":
        ctx.report(
            blob,
            "STK-PKL-005",
            RULES["STK-PKL-005"],
            Severity.MEDIUM,
            offset=offset,
            detail=f"Extension code {use.extension} is not in the copyreg registry; a loader "
            f"that registers it imports an unknown global; {_where(use)}.",
            snippet=label,
            properties=props,
        )
        return
    verdict = policy.judge(use.module or "", use.name or "", use.written)
    if verdict.denied is not None:
        entry = verdict.denied
        if invoked:
            ctx.report(
                blob,
                "STK-PKL-001",
                RULES["STK-PKL-001"],
                entry.severity,
                offset=offset,
                detail=f"{label} {entry.reason}; {_where(use)}.",
                snippet=label,
                properties=props,
            )
        else:
            ctx.report(
                blob,
                "STK-PKL-002",
                RULES["STK-PKL-002"],
                Severity.HIGH,
                offset=offset,
                detail=f"{label} {entry.reason}; the pickle imports it without calling it "
                f"directly ({_where(use)}), so anything that later calls it runs it.",
                snippet=label,
                properties=props,
            )
        return
    if use.use == Use.MODIFY:
        ctx.report(
            blob,
            "STK-PKL-007",
            RULES["STK-PKL-007"],
            Severity.HIGH,
            offset=offset,
            detail=f"The pickle sets items or attributes of {label} itself, changing it for the "
            f"whole process; {_where(use)}.",
            snippet=label,
            properties=props,
        )
        return
    if verdict.allowed is not None and use.use <= verdict.allowed:
        return
    if invoked:
        allowed = (
            f" (the policy allows it only to be {_USE_WORDS[verdict.allowed]})"
            if verdict.allowed is not None
            else ""
        )
        ctx.report(
            blob,
            "STK-PKL-003",
            RULES["STK-PKL-003"],
            Severity.MEDIUM,
            offset=offset,
            detail=f"{label} is not known to be safe to run while loading a model{allowed}; "
            f"{_where(use)}.",
            snippet=label,
            properties=props,
        )
    else:
        ctx.report(
            blob,
            "STK-PKL-008",
            RULES["STK-PKL-008"],
            Severity.MEDIUM,
            offset=offset,
            detail=f"{label} is not a known model-loading global; importing it runs its "
            f"module's code and code that uses it may call it; {_where(use)}.",
            snippet=label,
            properties=props,
        )


_ISSUES: dict[str, tuple[str, Severity, str]] = {
    "computed-callable": (
        "STK-PKL-006",
        Severity.MEDIUM,
        "{count} call(s) by {subject} of an object made at load time (first at byte "
        "{offset}); what runs depends on that object",
    ),
    "persistent-id": (
        "STK-PKL-009",
        Severity.MEDIUM,
        "persistent id {subject} at byte {offset} ({count} in all) is not a PyTorch storage "
        "reference; what it loads depends on the loader's persistent_load",
    ),
    "computed-unpickle": (
        "STK-PKL-010",
        Severity.HIGH,
        "{subject} unpickles bytes made at load time (at byte {offset}), which cannot be "
        "inspected before loading",
    ),
    "joblib-file": (
        "STK-PKL-011",
        Severity.HIGH,
        "a joblib array wrapper at byte {offset} reads {subject!r}, a path outside the "
        "model's own folder",
    ),
    "joblib-unknown-size": (
        "STK-PKL-013",
        Severity.INFO,
        "the size of the joblib array data after byte {offset} could not be computed; the "
        "rest of the stream was not interpreted",
    ),
}


def _report_issue(blob: Blob, ctx: ScanContext, issue: Issue) -> None:
    rule, severity, text = _ISSUES[issue.code]
    detail = text.format(subject=issue.subject, offset=issue.offset, count=issue.count)
    ctx.report(
        blob,
        rule,
        RULES[rule],
        severity,
        offset=issue.offset,
        detail=detail[0].upper() + detail[1:] + ".",
        snippet=issue.subject,
        properties={"count": issue.count},
        category="coverage" if severity == Severity.INFO else "model-code-execution",
    )


class PickleScanner:
    """Pickle streams, recognised by their PROTO header or, for protocols 0 and 1, by a
    run of well-formed opcodes."""

    name: ClassVar[str] = "pickle"

    def detect(self, blob: Blob) -> bool:
        return looks_like_pickle(blob.data)

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        scan_pickle(blob, ctx)


SCANNER = PickleScanner()
