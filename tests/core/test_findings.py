"""Findings: severity order and parsing, secret masking, validation, the dict round trip,
the canonical order of a scan result and the exit-code convention."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.core.errors import InvalidInput, StockadeError
from stockade.core.findings import (
    ERROR_RULE_ID,
    EXIT_CLEAN,
    EXIT_FINDINGS,
    EXIT_INCOMPLETE,
    Finding,
    Location,
    ScanResult,
    Severity,
    exit_code,
    mask_secret,
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# -- strategies ---------------------------------------------------------------------------
texts = st.text(max_size=40)  # any code point, surrogates and controls included
counts = st.none() | st.integers(min_value=1, max_value=10**9)
offsets = st.none() | st.integers(min_value=0, max_value=10**12)


@st.composite
def locations(draw: st.DrawFn) -> Location:
    start = draw(st.none() | st.integers(min_value=0, max_value=500))
    end = None if start is None else draw(st.none() | st.integers(min_value=start, max_value=600))
    return Location(
        path=draw(st.none() | texts),
        member=draw(st.none() | texts),
        offset=draw(offsets),
        row=draw(counts),
        column=draw(st.none() | texts),
        line=draw(counts),
        start=start,
        end=end,
    )


rule_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,20}", fullmatch=True)
json_values = st.none() | st.booleans() | st.integers() | st.text(max_size=10)


@st.composite
def findings(draw: st.DrawFn) -> Finding:
    if draw(st.booleans()):
        return Finding.error(draw(st.none() | texts), draw(texts), member=draw(st.none() | texts))
    return Finding(
        rule_id=draw(rule_ids),
        title=draw(texts.filter(lambda t: t.strip())),
        severity=draw(st.sampled_from(Severity)),
        confidence=draw(st.floats(min_value=0, max_value=1)),
        location=draw(locations()),
        snippet=draw(st.text(max_size=1200)),
        secret=draw(st.booleans()),
        detail=draw(texts),
        remediation=draw(texts),
        references=tuple(draw(st.lists(texts.filter(lambda t: t.strip()), max_size=3))),
        category=draw(texts),
        properties=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    )


def scan(*records: Finding, targets: tuple[str, ...] = ("model.pkl",)) -> ScanResult:
    return ScanResult(
        "model scan",
        targets=targets,
        findings=records,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
    )


def finding(severity: Severity | str = Severity.HIGH, **kwargs: object) -> Finding:
    base: dict[str, object] = {"rule_id": "STK-TEST-001", "title": "Something bad"}
    base.update(kwargs)
    return Finding(severity=severity, **base)  # type: ignore[arg-type]


# -- severity -----------------------------------------------------------------------------
def test_severities_are_ordered_from_info_to_critical() -> None:
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert Severity.CRITICAL >= Severity.HIGH >= Severity.HIGH
    assert max(Severity.LOW, Severity.CRITICAL, Severity.MEDIUM) is Severity.CRITICAL
    shuffled = [Severity.HIGH, Severity.INFO, Severity.CRITICAL, Severity.LOW, Severity.MEDIUM]
    assert [s.value for s in sorted(shuffled)] == ["info", "low", "medium", "high", "critical"]


def test_severity_does_not_compare_with_text() -> None:
    with pytest.raises(TypeError):
        assert Severity.HIGH < "critical"  # type: ignore[operator]


@pytest.mark.parametrize("text", ["high", "HIGH", "High", "  high\n", Severity.HIGH])
def test_severity_parses_case_insensitively(text: str) -> None:
    assert Severity.parse(text) is Severity.HIGH
    assert Severity(text) is Severity.HIGH


@pytest.mark.parametrize("text", ["", "severe", "hi", "5", "error"])
def test_unknown_severity_is_a_clear_error(text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Severity.parse(text)
    assert "use one of info, low, medium, high, critical" in caught.value.message
    assert isinstance(caught.value, StockadeError)
    assert caught.value.exit_code == 2


# -- masking ------------------------------------------------------------------------------
def test_mask_keeps_a_short_prefix_and_suffix() -> None:
    assert mask_secret("sk-abcdef0123456789") == "sk-a********6789"
    assert mask_secret("hunter22") == "hu********22"
    assert mask_secret("abcdefg") == "a********g"
    assert mask_secret("abc") == "********"
    assert mask_secret("") == "********"
    assert mask_secret("sk-abcdef0123456789", keep=2) == "sk********89"


@given(st.text(min_size=0, max_size=200), st.integers(min_value=0, max_value=8))
def test_mask_reveals_at_most_a_quarter_and_is_idempotent(secret: str, keep: int) -> None:
    masked = mask_secret(secret, keep)
    shown = len(masked) - len("********")
    assert shown % 2 == 0
    assert shown // 2 <= min(keep, len(secret) // 4)
    assert "********" in masked
    assert mask_secret(masked, keep) == masked


def test_a_secret_snippet_is_masked_when_the_finding_is_made() -> None:
    key = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    record = finding(snippet=key, secret=True)
    assert record.snippet == "sk-p********2345"
    assert key not in json.dumps(record.to_dict())
    assert key[4:-4] not in json.dumps(scan(record).to_dict())
    assert Finding.from_dict(record.to_dict()) == record


def test_a_plain_snippet_is_kept_and_long_ones_are_shortened() -> None:
    assert finding(snippet="os.system").snippet == "os.system"
    long = finding(snippet="x" * 5000).snippet
    assert len(long) == 1000
    assert long.endswith("…")


def test_control_and_bidi_characters_are_escaped() -> None:
    record = finding(
        title="bad\x1b[2Jtitle",
        snippet="a\x00b\u202ec\nd\te",
        location=Location(path="evil\x1b]0;x\x07.pkl", member="\udcff"),
    )
    assert record.title == "bad\\x1b[2Jtitle"
    assert record.snippet == "a\\x00b\\u202ec\nd\te"
    assert record.location.path == "evil\\x1b]0;x\\x07.pkl"
    assert record.location.member == "\\udcff"
    json.dumps(record.to_dict(), ensure_ascii=False).encode("utf-8")  # no lone surrogate left


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule_id": ""}, "invalid rule id"),
        ({"rule_id": "has space"}, "invalid rule id"),
        ({"rule_id": "X" * 101}, "invalid rule id"),
        ({"title": "   "}, "needs a title"),
        ({"confidence": 1.5}, "from 0 to 1"),
        ({"confidence": -0.1}, "from 0 to 1"),
        ({"confidence": math.nan}, "from 0 to 1"),
        ({"confidence": True}, "must be a number"),
        ({"kind": "warning"}, "finding kind"),
        ({"references": ("CWE-502", " ")}, "empty reference"),
        ({"properties": {"x": object()}}, "plain JSON"),
        ({"properties": {"x": math.inf}}, "plain JSON"),
    ],
)
def test_invalid_findings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        finding(**kwargs)


def test_unknown_severity_in_a_finding_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown severity"):
        finding("urgent")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"line": 0}, "line must be at least 1"),
        ({"row": 0}, "row must be at least 1"),
        ({"offset": -1}, "offset must be at least 0"),
        ({"start": 5, "end": 4}, "ends"),
        ({"line": "3"}, "line must be an integer"),
        ({"line": True}, "line must be an integer"),
        ({"path": 3}, "path must be text"),
    ],
)
def test_invalid_locations_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Location(**kwargs)  # type: ignore[arg-type]


def test_severity_given_as_text_is_parsed() -> None:
    assert finding("Critical").severity is Severity.CRITICAL


# -- locations ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "text"),
    [
        (Location(path="app.py", line=14, start=4), "app.py:14:5"),
        (Location(path="app.py", line=14), "app.py:14"),
        (Location(path="model.pt", member="archive/data.pkl", offset=1024),
         "model.pt!/archive/data.pkl @ byte 1024"),
        (Location(path="customers.csv", row=12, column="email"), "customers.csv row 12 col email"),
        (Location(path="prompt.txt", start=3, end=9), "prompt.txt chars 3-9"),
        (Location(), ""),
    ],
)  # fmt: skip
def test_locations_render_compactly(location: Location, text: str) -> None:
    assert location.describe() == text


def test_a_path_object_is_accepted(tmp_path: object) -> None:
    from pathlib import Path

    assert Location(path=Path("models") / "a.pkl").path == "models/a.pkl"
    assert Location().is_empty
    assert not Location(row=1).is_empty


# -- errors -------------------------------------------------------------------------------
def test_could_not_inspect_is_a_record_with_its_reason() -> None:
    error = Finding.error("broken.pkl", "truncated pickle stream", member="data.pkl")
    assert error.is_error
    assert error.kind == "error"
    assert error.rule_id == ERROR_RULE_ID
    assert error.location == Location(path="broken.pkl", member="data.pkl")
    assert error.message == "Could not inspect: truncated pickle stream"
    result = scan(error, finding())
    assert result.errors == (error,)
    assert len(result.issues) == 1
    assert result.summary() == {
        "findings": 1,
        "errors": 1,
        "by_severity": {"critical": 0, "high": 1, "medium": 0, "low": 0, "info": 0},
    }


# -- round trip ---------------------------------------------------------------------------
@settings(max_examples=200)
@given(findings())
def test_finding_dict_round_trip(record: Finding) -> None:
    data = json.loads(json.dumps(record.to_dict()))
    again = Finding.from_dict(data)
    assert again == record
    assert again.fingerprint == record.fingerprint == data["fingerprint"]


@settings(max_examples=75)
@given(st.lists(findings(), max_size=8), st.lists(texts, max_size=3), st.none() | texts)
def test_scan_result_dict_round_trip(
    records: list[Finding], targets: list[str], root: str | None
) -> None:
    result = ScanResult(
        "data scan",
        targets=tuple(targets),
        findings=tuple(records),
        started_at=T0,
        finished_at=T0 + timedelta(milliseconds=1500),
        root=root,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema_version"] == 1
    assert data["summary"]["findings"] == len(data["findings"]) == len(result.issues)
    assert data["summary"]["errors"] == len(data["errors"]) == len(result.errors)
    assert ScanResult.from_dict(data) == result


@given(st.lists(findings(), max_size=8), st.randoms(use_true_random=False))
def test_scan_order_does_not_depend_on_the_order_found(records: list[Finding], rnd: object) -> None:
    shuffled = list(records)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert scan(*records).findings == scan(*shuffled).findings
    ranks = [f.severity.rank for f in scan(*records).findings]
    assert ranks == sorted(ranks, reverse=True)


def test_from_dict_rejects_other_schema_versions_and_garbage() -> None:
    data = scan(finding()).to_dict()
    with pytest.raises(InvalidInput, match="schema_version"):
        ScanResult.from_dict({**data, "schema_version": 2})
    with pytest.raises(InvalidInput, match="missing rule_id"):
        Finding.from_dict({"title": "x", "severity": "low"})
    with pytest.raises(InvalidInput, match="must be an object"):
        Finding.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="RFC 3339"):
        ScanResult.from_dict({**data, "started_at": "yesterday"})


def test_a_scan_cannot_end_before_it_starts() -> None:
    with pytest.raises(InvalidInput, match="finish before it starts"):
        ScanResult("x", started_at=T0, finished_at=T0 - timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="timezone-aware"):
        ScanResult("x", started_at=datetime(2025, 1, 1), finished_at=T0)


def test_duration_and_counts() -> None:
    result = scan(finding(Severity.LOW), finding(Severity.LOW, rule_id="STK-B"), finding("info"))
    assert result.duration == 2.0
    assert result.counts() == {"critical": 0, "high": 0, "medium": 0, "low": 2, "info": 1}


def test_fingerprint_is_stable_and_depends_on_rule_and_location() -> None:
    a = finding(location=Location(path="a.py", line=3))
    assert a.fingerprint == finding(location=Location(path="a.py", line=3)).fingerprint
    assert a.fingerprint != finding(location=Location(path="a.py", line=4)).fingerprint
    assert a.fingerprint != finding(rule_id="STK-OTHER", location=a.location).fingerprint
    assert a.fingerprint == finding(Severity.LOW, location=a.location).fingerprint


# -- exit codes ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("records", "fail_on", "code"),
    [
        ((), Severity.HIGH, EXIT_CLEAN),
        ((), Severity.INFO, EXIT_CLEAN),
        ((finding(Severity.MEDIUM),), Severity.HIGH, EXIT_CLEAN),
        ((finding(Severity.HIGH),), Severity.HIGH, EXIT_FINDINGS),
        ((finding(Severity.CRITICAL),), Severity.HIGH, EXIT_FINDINGS),
        ((finding(Severity.HIGH),), Severity.CRITICAL, EXIT_CLEAN),
        ((finding(Severity.INFO),), Severity.INFO, EXIT_FINDINGS),
        ((finding(Severity.LOW), finding(Severity.INFO)), Severity.MEDIUM, EXIT_CLEAN),
        ((finding(Severity.LOW), finding(Severity.INFO)), "LOW", EXIT_FINDINGS),
        ((Finding.error("x.pkl", "unreadable"),), Severity.CRITICAL, EXIT_INCOMPLETE),
        ((Finding.error("x.pkl", "unreadable"),), Severity.INFO, EXIT_INCOMPLETE),
        ((Finding.error("x.pkl", "bad"), finding("critical")), Severity.HIGH, EXIT_INCOMPLETE),
        ((Finding.error("x.pkl", "bad", severity=Severity.INFO),), "high", EXIT_INCOMPLETE),
    ],
)  # fmt: skip
def test_exit_codes(records: tuple[Finding, ...], fail_on: Severity | str, code: int) -> None:
    assert exit_code(scan(*records), fail_on) == code


def test_exit_code_defaults_to_failing_on_high() -> None:
    assert exit_code(scan(finding(Severity.HIGH))) == EXIT_FINDINGS
    assert exit_code(scan(finding(Severity.MEDIUM))) == EXIT_CLEAN


def test_exit_code_refuses_an_unknown_threshold() -> None:
    with pytest.raises(InvalidInput):
        exit_code(scan(), "severe")
