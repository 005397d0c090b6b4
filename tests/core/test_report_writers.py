"""Report writers: the console table, the JSON document read back, SARIF validated against
the official OASIS schema, and `emit_report` driven through a small Typer scanner."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stockade.cli.scan_options import FailOnOption, FormatOption, OutputOption, emit_report
from stockade.core import clock
from stockade.core.errors import InvalidInput, StockadeError
from stockade.core.findings import Finding, Location, ScanResult, Severity
from stockade.core.report import (
    ReportFormat,
    to_sarif,
    write_console,
    write_json,
    write_report,
    write_sarif,
)
from stockade.core.report.sarif import FINGERPRINT_KEY, SARIF_SCHEMA_URI, SRCROOT

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SCHEMA_PATH = FIXTURES / "sarif-schema-2.1.0.json"
SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
# The schema declares draft-04; it uses nothing whose meaning changed by draft-07, and
# both validators are run so a difference between them would show.
VALIDATORS = [
    jsonschema.validators.validator_for(SCHEMA)(SCHEMA, format_checker=jsonschema.FormatChecker()),
    jsonschema.Draft7Validator(SCHEMA, format_checker=jsonschema.FormatChecker()),
]

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "sk-live-0123456789abcdefghijklmnop"

# RFC 3986: what may appear in a URI reference (jsonschema checks `uri-reference` only with
# an optional package, so the tests check it themselves).
_URI_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def assert_uri_reference(uri: str, *, absolute: bool = False) -> None:
    assert _URI_CHARS.fullmatch(uri), uri
    if absolute:
        assert _SCHEME.match(uri), uri
    elif not _SCHEME.match(uri):
        first = uri.split("/", 1)[0]
        assert ":" not in first, uri


def assert_valid_sarif(log: dict[str, Any]) -> None:
    for validator in VALIDATORS:
        errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    if "informationUri" in driver:
        assert_uri_reference(driver["informationUri"], absolute=True)
    for rule in driver["rules"]:
        if "helpUri" in rule:
            assert_uri_reference(rule["helpUri"], absolute=True)
        score = float(rule["properties"]["security-severity"])
        assert 0.0 <= score <= 10.0
    for item in run["results"]:
        assert driver["rules"][item["ruleIndex"]]["id"] == item["ruleId"]
    notifications = run["invocations"][0].get("toolExecutionNotifications", [])
    for note in notifications:
        assert (
            driver["notifications"][note["descriptor"]["index"]]["id"] == note["descriptor"]["id"]
        )
    for item in [*run["results"], *notifications]:
        for location in item.get("locations", []):
            physical = location.get("physicalLocation")
            if physical:
                artifact = physical["artifactLocation"]
                assert_uri_reference(artifact["uri"], absolute="uriBaseId" not in artifact)
    for base in run.get("originalUriBaseIds", {}).values():
        assert_uri_reference(base["uri"], absolute=True)
        assert base["uri"].endswith("/")
    invocation = run["invocations"][0]
    for key in ("startTimeUtc", "endTimeUtc"):
        datetime.fromisoformat(invocation[key])


def scan(*records: Finding, root: str | None = None) -> ScanResult:
    return ScanResult(
        "model scan",
        targets=("model.pt", "app.py", "customers.csv"),
        findings=records,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
        root=root,
    )


def sample() -> ScanResult:
    return scan(
        Finding(
            "STK-PII-002",
            "Email address",
            Severity.MEDIUM,
            confidence=0.75,
            location=Location(path="customers.csv", row=12, column="email"),
            snippet="bob@example.com",
            category="pii",
        ),
        Finding(
            "STK-PKL-001",
            "Pickle calls os.system",
            Severity.CRITICAL,
            location=Location(path="model.pt", member="archive/data.pkl", offset=1024),
            snippet="GLOBAL 'os system'",
            remediation="Convert the model to safetensors.",
            references=("CWE-502", "ATLAS:AML.T0011", "https://owasp.org/www-project-top-10/"),
            category="unsafe-deserialization",
        ),
        Finding(
            "STK-SEC-001",
            "API key [bold red]in code[/]",
            Severity.HIGH,
            location=Location(path="app.py", line=14, start=10, end=44),
            snippet=SECRET,
            secret=True,
            references=("OWASP-LLM02:2025",),
        ),
        Finding(
            "STK-INFO-001", "Model card missing", Severity.INFO, location=Location(path="model.pt")
        ),
        Finding.error("broken.pkl", "truncated pickle stream at byte 12"),
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- console ------------------------------------------------------------------------------
def render(result: ScanResult, stream: io.StringIO | None = None, width: int = 160) -> str:
    stream = stream or io.StringIO()
    write_console(result, stream, width=width)
    return stream.getvalue()


def test_console_lists_findings_most_severe_first_with_a_summary() -> None:
    text = render(sample())
    order = [text.index(label) for label in ("CRITICAL", "HIGH", "MEDIUM", "INFO")]
    assert order == sorted(order)
    assert "model.pt!/archive/data.pkl @ byte 1024" in text
    assert "app.py:14:11" in text
    assert "customers.csv row 12 col email" in text
    assert "fix: Convert the model to safetensors." in text
    assert "Could not inspect (1)" in text
    assert "truncated pickle stream at byte 12" in text
    summary = text.strip().splitlines()[-1]
    assert summary.startswith("Summary: 1 critical, 1 high, 1 medium, 0 low, 1 info · 4 findings")
    assert "1 could not be inspected" in summary
    assert "stockade model scan" in text.splitlines()[0]
    assert "3 targets scanned in 3.00 s" in text.splitlines()[0]


def test_console_never_shows_a_secret_and_never_interprets_markup() -> None:
    text = render(sample())
    assert SECRET not in text
    assert SECRET[4:-4] not in text
    assert "sk-l********mnop" in text
    assert "API key [bold red]in code[/]" in text


def test_console_escapes_terminal_control_sequences_from_scanned_content() -> None:
    hostile = scan(
        Finding(
            "STK-X",
            "Odd member",
            Severity.LOW,
            location=Location(path="a.zip", member="\x1b]0;pwned\x07\x1b[2J"),
            snippet="\u202eexe.txt",
        )
    )
    stream = Terminal()
    write_console(hostile, stream, width=120)
    text = stream.getvalue()
    assert "\x1b[" in text  # colours are on for a terminal, but the content is inert:
    assert "\x1b]0;" not in text
    assert "\x07" not in text
    assert "\u202e" not in text
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in text
    assert "\\u202eexe.txt" in text


def test_console_without_findings_says_so() -> None:
    text = render(scan())
    assert "No findings." in text
    assert "Summary: 0 critical, 0 high, 0 medium, 0 low, 0 info · 0 findings" in text
    assert "could not be inspected" not in text
    plain = io.StringIO()
    write_console(scan(), plain)
    assert "\x1b[" not in plain.getvalue()  # no colour codes in a file


# -- JSON ---------------------------------------------------------------------------------
def test_json_report_reads_back_to_the_same_result() -> None:
    stream = io.StringIO()
    write_json(sample(), stream)
    document = json.loads(stream.getvalue())
    assert document["schema_version"] == 1
    assert document["tool"] == {"name": "stockade", "version": sample().version}
    assert document["scanner"] == "model scan"
    assert document["summary"] == {
        "findings": 4,
        "errors": 1,
        "by_severity": {"critical": 1, "high": 1, "medium": 1, "low": 0, "info": 1},
    }
    assert [f["severity"] for f in document["findings"]] == ["critical", "high", "medium", "info"]
    assert document["errors"][0]["kind"] == "error"
    assert document["errors"][0]["detail"] == "truncated pickle stream at byte 12"
    assert document["started_at"] == "2025-03-01T12:00:00.000000Z"
    assert document["duration_seconds"] == 3.0
    assert SECRET[4:-4] not in stream.getvalue()
    assert ScanResult.from_dict(document) == sample()


def test_json_keeps_unicode_readable() -> None:
    result = scan(Finding("STK-U", "Nom défini: 名前", Severity.LOW))
    stream = io.StringIO()
    write_json(result, stream)
    assert "名前" in stream.getvalue()


# -- SARIF --------------------------------------------------------------------------------
def test_vendored_schema_is_the_complete_oasis_document() -> None:
    raw = SCHEMA_PATH.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256
    assert SCHEMA["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    assert SCHEMA["id"] == SARIF_SCHEMA_URI
    assert {"run", "result", "region", "notification", "toolComponent"} <= set(
        SCHEMA["definitions"]
    )
    jsonschema.validators.validator_for(SCHEMA).check_schema(SCHEMA)


def test_the_schema_rejects_what_it_should() -> None:
    # Guards against a vacuous validator: a wrong level and a bad line must fail.
    log = to_sarif(sample())
    log["runs"][0]["results"][0]["level"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        VALIDATORS[0].validate(log)
    log = to_sarif(sample())
    log["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    with pytest.raises(jsonschema.ValidationError):
        VALIDATORS[1].validate(log)


def test_sarif_for_github_code_scanning() -> None:
    stream = io.StringIO()
    write_sarif(sample(), stream)
    log = json.loads(stream.getvalue())
    assert_valid_sarif(log)
    assert log["$schema"] == SARIF_SCHEMA_URI
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "stockade"
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert set(rules) == {"STK-PII-002", "STK-PKL-001", "STK-SEC-001", "STK-INFO-001"}
    pickle = rules["STK-PKL-001"]
    assert pickle["shortDescription"]["text"] == "Pickle calls os.system"
    assert pickle["help"]["text"] == "Convert the model to safetensors."
    assert pickle["helpUri"] == "https://owasp.org/www-project-top-10/"
    assert pickle["properties"]["security-severity"] == "9.5"
    assert pickle["properties"]["tags"] == [
        "security",
        "unsafe-deserialization",
        "external/cwe/cwe-502",
        "ATLAS:AML.T0011",
    ]
    assert rules["STK-SEC-001"]["properties"]["security-severity"] == "8.0"
    assert rules["STK-PII-002"]["properties"]["precision"] == "high"

    results = {item["ruleId"]: item for item in run["results"]}
    assert {rule: item["level"] for rule, item in results.items()} == {
        "STK-PKL-001": "error",
        "STK-SEC-001": "error",
        "STK-PII-002": "warning",
        "STK-INFO-001": "note",
    }
    key = results["STK-SEC-001"]["locations"][0]["physicalLocation"]
    assert key["artifactLocation"] == {"uri": "app.py", "uriBaseId": SRCROOT}
    assert key["region"] == {
        "startLine": 14,
        "startColumn": 11,
        "endColumn": 45,
        "snippet": {"text": "sk-l********mnop"},
    }
    assert SECRET[4:-4] not in stream.getvalue()

    member = results["STK-PKL-001"]["locations"][0]
    assert member["physicalLocation"] == {
        "artifactLocation": {"uri": "model.pt", "uriBaseId": SRCROOT}
    }
    assert member["logicalLocations"] == [
        {
            "name": "archive/data.pkl",
            "fullyQualifiedName": "model.pt!/archive/data.pkl",
            "kind": "resource",
        }
    ]
    assert results["STK-PKL-001"]["properties"]["offset"] == 1024
    cell = results["STK-PII-002"]["locations"][0]["logicalLocations"][0]
    assert cell["fullyQualifiedName"] == "customers.csv row 12 col email"

    prints = [item["partialFingerprints"][FINGERPRINT_KEY] for item in run["results"]]
    assert len(set(prints)) == len(prints)
    assert prints == [
        item["partialFingerprints"][FINGERPRINT_KEY]
        for item in to_sarif(sample())["runs"][0]["results"]
    ]

    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    [note] = invocation["toolExecutionNotifications"]
    assert note["level"] == "error"
    assert note["message"]["text"] == "Could not inspect: truncated pickle stream at byte 12"
    assert note["descriptor"] == {"id": "STK-ERR-001", "index": 0}
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "broken.pkl"
    assert "STK-ERR-001" not in rules
    assert run["automationDetails"]["id"] == "stockade/model scan/"


def test_sarif_without_errors_is_a_successful_execution() -> None:
    log = to_sarif(scan(Finding("STK-A", "a", Severity.LOW)))
    assert_valid_sarif(log)
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is True
    assert "toolExecutionNotifications" not in invocation
    assert "notifications" not in log["runs"][0]["tool"]["driver"]


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("models/a b.pkl", None, {"uri": "models/a%20b.pkl", "uriBaseId": SRCROOT}),
        ("./data/x.csv", None, {"uri": "data/x.csv", "uriBaseId": SRCROOT}),
        ("c:odd%name.pkl", None, {"uri": "c%3Aodd%25name.pkl", "uriBaseId": SRCROOT}),
        ("/srv/repo/m/é.pt", "/srv/repo", {"uri": "m/%C3%A9.pt", "uriBaseId": SRCROOT}),
        ("/elsewhere/m.pt", "/srv/repo", {"uri": "file:///elsewhere/m.pt"}),
        ("/abs/m.pt", None, {"uri": "file:///abs/m.pt"}),
        ("https://hub.example/org/model v1", None, {"uri": "https://hub.example/org/model%20v1"}),
        ("s3://bucket/k%2Fey", None, {"uri": "s3://bucket/k%2Fey"}),
    ],
)
def test_sarif_artifact_uris(path: str, root: str | None, expected: dict[str, str]) -> None:
    result = scan(Finding("STK-A", "a", Severity.LOW, location=Location(path=path)), root=root)
    log = to_sarif(result)
    assert_valid_sarif(log)
    artifact = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == expected
    if root is not None:
        assert log["runs"][0]["originalUriBaseIds"] == {SRCROOT: {"uri": f"file://{root}/"}}
    if "uriBaseId" in artifact and root is None:
        assert unquote(artifact["uri"]) == Path(path).as_posix()


@pytest.mark.parametrize(
    ("location", "region"),
    [
        (Location(path="a.py", line=3), {"startLine": 3}),
        (Location(path="a.py", line=3, start=0, end=5),
         {"startLine": 3, "startColumn": 1, "endColumn": 6}),
        (Location(path="p.txt", start=7, end=9), {"charOffset": 7, "charLength": 2}),
        (Location(path="p.txt", start=7), {"charOffset": 7}),
        (Location(path="w.bin", offset=99), {"byteOffset": 99}),
        (Location(path="a.py", line=2, offset=40), {"startLine": 2, "byteOffset": 40}),
    ],
)  # fmt: skip
def test_sarif_regions(location: Location, region: dict[str, int]) -> None:
    log = to_sarif(scan(Finding("STK-A", "a", Severity.LOW, location=location)))
    assert_valid_sarif(log)
    physical = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert physical["region"] == region


def test_sarif_result_without_any_location() -> None:
    log = to_sarif(scan(Finding("STK-A", "System prompt leaked", Severity.HIGH, snippet="You are")))
    assert_valid_sarif(log)
    item = log["runs"][0]["results"][0]
    assert "locations" not in item
    assert item["properties"]["snippet"] == "You are"


# Hypothesis: any finding, any text, any combination of location parts, errors included.
texts = st.text(max_size=30)


@st.composite
def locations(draw: st.DrawFn) -> Location:
    start = draw(st.none() | st.integers(min_value=0, max_value=300))
    end = None if start is None else draw(st.none() | st.integers(min_value=start, max_value=400))
    return Location(
        path=draw(
            st.none() | texts | st.sampled_from(["/abs/π.pt", "https://h.example/a b", "a:b"])
        ),
        member=draw(st.none() | texts),
        offset=draw(st.none() | st.integers(min_value=0, max_value=2**40)),
        row=draw(st.none() | st.integers(min_value=1, max_value=10**6)),
        column=draw(st.none() | texts),
        line=draw(st.none() | st.integers(min_value=1, max_value=10**6)),
        start=start,
        end=end,
    )


@st.composite
def findings(draw: st.DrawFn) -> Finding:
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return Finding.error(draw(st.none() | texts), draw(texts), location=draw(locations()))
    references = draw(
        st.lists(
            texts.filter(str.strip) | st.sampled_from(["CWE-79", "https://x.example/ü r"]),
            max_size=3,
        )
    )
    return Finding(
        rule_id=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,12}", fullmatch=True)),
        title=draw(texts.filter(str.strip)),
        severity=draw(st.sampled_from(Severity)),
        confidence=draw(st.floats(min_value=0, max_value=1)),
        location=draw(locations()),
        snippet=draw(texts),
        secret=draw(st.booleans()),
        detail=draw(texts),
        remediation=draw(texts),
        references=tuple(references),
        category=draw(texts),
        properties=draw(st.dictionaries(texts, st.none() | st.integers() | texts, max_size=2)),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(findings(), max_size=6),
    st.none() | st.sampled_from(["/srv/repo", "/", "/tmp/a b"]),
    st.text(min_size=1, max_size=20).filter(str.strip),
)
def test_any_result_gives_valid_sarif(
    records: list[Finding], root: str | None, scanner: str
) -> None:
    result = ScanResult(
        scanner, targets=("t",), findings=tuple(records), started_at=T0, finished_at=T0, root=root
    )
    stream = io.StringIO()
    write_sarif(result, stream)
    log = json.loads(stream.getvalue())
    assert_valid_sarif(log)
    run = log["runs"][0]
    assert len(run["results"]) == len(result.issues)
    notes = run["invocations"][0].get("toolExecutionNotifications", [])
    assert len(notes) == len(result.errors)
    assert run["invocations"][0]["executionSuccessful"] is (not result.errors)


# -- dispatch -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["console", "JSON", ReportFormat.sarif])
def test_write_report_dispatches_by_format(fmt: str) -> None:
    stream = io.StringIO()
    write_report(sample(), fmt, stream)
    text = stream.getvalue()
    if ReportFormat.parse(fmt) is ReportFormat.console:
        assert text.startswith("stockade model scan")
    elif ReportFormat.parse(fmt) is ReportFormat.json:
        assert json.loads(text)["schema_version"] == 1
    else:
        assert json.loads(text)["version"] == "2.1.0"


def test_unknown_format_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="use one of console, json, sarif"):
        write_report(sample(), "html", io.StringIO())


# -- a scanning command built on scan_options ---------------------------------------------
scanner = typer.Typer(add_completion=False)


@scanner.command()
def scan_files(
    paths: list[Path],
    fmt: FormatOption = ReportFormat.console,
    output: OutputOption = None,
    fail_on: FailOnOption = Severity.HIGH,
) -> None:
    """Flag `password=` (secret, high) and `TODO` (low) in text files."""
    started = clock.now()
    records: list[Finding] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            records.append(Finding.error(path, type(exc).__name__ + ": " + str(exc)))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            at = line.find("password=")
            if at != -1:
                records.append(
                    Finding(
                        "TEST-PASSWORD",
                        "Hard-coded password",
                        Severity.HIGH,
                        location=Location(path=path, line=number, start=at, end=len(line)),
                        snippet=line[at + len("password=") :],
                        secret=True,
                        references=("CWE-798",),
                    )
                )
            if "TODO" in line:
                records.append(
                    Finding(
                        "TEST-TODO",
                        "Unfinished work",
                        Severity.LOW,
                        location=Location(path=path, line=number),
                    )
                )
    result = ScanResult(
        "text scan",
        targets=tuple(paths),
        findings=tuple(records),
        started_at=started,
        finished_at=clock.now(),
    )
    try:
        code = emit_report(result, fmt, output, fail_on)
    except StockadeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "clean": "nothing to see\n",
        "secret": "user=admin\npassword=correct-horse-battery-staple\n",
        "todo": "# TODO: tidy up\n",
    }
    paths = {}
    for name, text in made.items():
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(scanner, [str(a) for a in args], catch_exceptions=False)


def test_clean_input_exits_0(files: dict[str, Path]) -> None:
    run = invoke(files["clean"])
    assert run.exit_code == 0
    assert "No findings." in run.stdout


def test_findings_at_the_threshold_exit_1_and_secrets_stay_masked(files: dict[str, Path]) -> None:
    run = invoke(files["secret"], "--format", "json")
    assert run.exit_code == 1
    document = json.loads(run.stdout)
    [record] = document["findings"]
    assert record["rule_id"] == "TEST-PASSWORD"
    assert record["location"]["line"] == 2
    assert record["snippet"] == "corr********aple"
    assert "battery" not in run.stdout


@pytest.mark.parametrize(
    ("name", "fail_on", "code"),
    [
        ("secret", "critical", 0),
        ("secret", "HIGH", 1),
        ("todo", "high", 0),
        ("todo", "low", 1),
        ("todo", "Info", 1),
    ],
)
def test_fail_on_sets_the_threshold(
    files: dict[str, Path], name: str, fail_on: str, code: int
) -> None:
    assert invoke(files[name], "--fail-on", fail_on).exit_code == code


def test_an_unknown_fail_on_is_a_usage_error(files: dict[str, Path]) -> None:
    run = invoke(files["clean"], "--fail-on", "severe")
    assert run.exit_code == 2
    assert "severe" in run.stderr
    assert "critical" in run.stderr


def test_what_could_not_be_read_exits_2_whatever_the_threshold(
    files: dict[str, Path], tmp_path: Path
) -> None:
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\xff\xfe\x00\x80")
    run = invoke(
        files["clean"], tmp_path / "missing.txt", binary, "--fail-on", "critical", "-f", "sarif"
    )
    assert run.exit_code == 2
    log = json.loads(run.stdout)
    assert_valid_sarif(log)
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    reasons = [note["message"]["text"] for note in invocation["toolExecutionNotifications"]]
    assert any("FileNotFoundError" in reason for reason in reasons)
    assert any("UnicodeDecodeError" in reason for reason in reasons)


def test_output_file_is_written_whole_and_stdout_stays_empty(
    files: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "reports" / "scan.sarif"
    target.parent.mkdir()
    target.write_text("old report that must be replaced entirely " * 100)
    run = invoke(files["secret"], files["todo"], "--format", "sarif", "--output", target)
    assert run.exit_code == 1
    assert run.stdout == ""
    assert f"wrote sarif report to {target}: 2 findings, 0 could not be inspected" in run.stderr
    log = json.loads(target.read_text(encoding="utf-8"))
    assert_valid_sarif(log)
    assert {item["ruleId"] for item in log["runs"][0]["results"]} == {"TEST-PASSWORD", "TEST-TODO"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["scan.sarif"]  # no temp file left


def test_console_report_to_a_file_is_plain_text(files: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "scan.txt"
    assert invoke(files["todo"], "-o", target).exit_code == 0
    text = target.read_text(encoding="utf-8")
    assert "TEST-TODO" in text
    assert "\x1b[" not in text


@pytest.mark.parametrize("where", ["missing-dir/out.json", "."])
def test_an_unwritable_output_is_a_clear_error(
    files: dict[str, Path], tmp_path: Path, where: str
) -> None:
    run = invoke(files["clean"], "-f", "json", "-o", tmp_path / where)
    assert run.exit_code == 2
    assert run.stdout == ""
    message = run.stderr.strip()
    assert "Traceback" not in run.stderr
    assert message.startswith("error: cannot write report to") or "Invalid value" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.txt", "secret.txt", "todo.txt"]


def test_emit_report_returns_the_exit_code_without_a_cli(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert emit_report(sample(), "json", out, "critical") == 2
    assert emit_report(scan(Finding("STK-A", "a", Severity.MEDIUM)), "json", out, "medium") == 1
    assert emit_report(scan(Finding("STK-A", "a", Severity.MEDIUM)), "json", out, "high") == 0
    assert json.loads(out.read_text())["summary"]["by_severity"]["medium"] == 1


def test_emit_report_refuses_a_directory_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is a directory"):
        emit_report(sample(), "sarif", tmp_path, "high")
    with pytest.raises(
        InvalidInput, match=r"cannot write report to .*: report folder .* does not exist"
    ):
        emit_report(sample(), "sarif", tmp_path / "absent" / "r.sarif", "high")
    assert list(tmp_path.iterdir()) == []
