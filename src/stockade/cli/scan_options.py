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

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from stockade.core.errors import InvalidInput
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
        _write_atomically(Path(output), buffer.getvalue())
        summary = result.summary()
        sys.stderr.write(
            f"wrote {fmt.value} report to {output}: {summary['findings']} findings, "
            f"{summary['errors']} could not be inspected\n"
        )
    return exit_code(result, threshold)


def _write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: a reader sees the old report or the
    whole new one, never half of it. The file is private to the user (0600), as reports
    can name sensitive places even with secrets masked."""
    if path.is_dir():
        raise InvalidInput(f"cannot write report to {path}: it is a directory")
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InvalidInput(f"cannot write report to {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidInput(f"cannot write report to {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
