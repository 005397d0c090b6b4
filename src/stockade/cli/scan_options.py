"""What every scanning command shares: `--format`, `--output` and `--fail-on`, and
`emit_report`, which writes the report (atomically, to a file or stdout) and returns the
exit code: 0 clean, 1 findings at or above `--fail-on`, 2 something could not be inspected.

A scanning command is then a few lines::

    @app.command()
    def scan(path: Path, fmt: FormatOption = ReportFormat.console,
             output: OutputOption = None, fail_on: FailOnOption = Severity.HIGH) -> None:
        result = scan_files([path])
        raise typer.Exit(emit_report(result, fmt, output, fail_on))
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Annotated

import typer

from stockade.core.files import write_atomic
from stockade.core.findings import ScanResult, Severity, exit_code
from stockade.core.report import ReportFormat, write_report

__all__ = [
    "FailOnOption",
    "FormatOption",
    "OutputOption",
    "ReportFormat",
    "Severity",
    "emit_report",
]

FormatOption = Annotated[
    ReportFormat,
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        help="Report format: console (a table), json, or sarif (GitHub code scanning).",
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        dir_okay=False,
        help="Write the report to FILE (atomically) instead of standard output.",
        metavar="FILE",
    ),
]
FailOnOption = Annotated[
    Severity,
    typer.Option(
        "--fail-on",
        case_sensitive=False,
        help="Exit 1 when a finding is at or above this severity "
        "(exit 2 whenever something could not be inspected).",
    ),
]


def emit_report(
    result: ScanResult,
    fmt: ReportFormat | str,
    output: Path | str | None,
    fail_on: Severity | str = Severity.HIGH,
) -> int:
    """Write the report to `output` (or stdout when None or `-`) and return the exit code."""
    threshold = Severity.parse(fail_on)
    fmt = ReportFormat.parse(fmt)
    if output is None or str(output) == "-":
        write_report(result, fmt, sys.stdout)
    else:
        buffer = io.StringIO()
        write_report(result, fmt, buffer)
        write_atomic(Path(output), buffer.getvalue(), what="report")
        summary = result.summary()
        sys.stderr.write(
            f"wrote {fmt.value} report to {output}: {summary['findings']} findings, "
            f"{summary['errors']} could not be inspected\n"
        )
    return exit_code(result, threshold)
