"""`stockade eval`: phase 3, evaluation. The evidence that checks and evaluations left on
models, datasets and systems: what was checked, by whom, on which bytes, with what outcome.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, open_workspace, print_json, print_rows
from stockade.core.errors import InvalidInput
from stockade.core.evidence import get_evidence, list_evidence
from stockade.core.findings import ScanResult
from stockade.core.report import ReportFormat, write_report

app = typer.Typer(no_args_is_help=True)

OUTCOMES = ("pass", "fail", "error")


@app.command()
def evidence(
    subject: Annotated[
        str | None, typer.Option(help="e.g. model:fraud-detector@1.0.0 or dataset:tx@v1.")
    ] = None,
    check: Annotated[str | None, typer.Option(help="e.g. data.integrity.")] = None,
    outcome: Annotated[str | None, typer.Option(help="pass, fail or error.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """List recorded evidence, newest first."""
    if outcome is not None and outcome not in OUTCOMES:
        raise InvalidInput(f"--outcome must be one of {', '.join(OUTCOMES)}")
    ws = open_workspace()
    with ws.session() as session:
        found = list_evidence(
            session,
            subject=subject,
            check=check,
            outcome=outcome,
            limit=limit,  # type: ignore[arg-type]
        )
    print_rows(
        [e.to_dict() for e in found],
        ["id", "at", "check", "subject", "outcome", "summary", "actor"],
        fmt,
        title="evidence",
    )


@app.command("show-evidence")
def show_evidence(
    evidence_id: Annotated[str, typer.Argument(help="Evidence id from `stockade eval evidence`.")],
    fmt: Annotated[
        ReportFormat, typer.Option("--format", "-f", case_sensitive=False)
    ] = ReportFormat.console,
) -> None:
    """One evidence record with its findings (console, json or sarif)."""
    ws = open_workspace()
    with ws.session() as session:
        record = get_evidence(session, evidence_id)
    if fmt is ReportFormat.json:
        print_json(record.to_dict())
        return
    result = ScanResult(
        scanner=record.check,
        targets=(record.subject,),
        findings=record.findings or (),
        started_at=record.at,
        finished_at=record.at,
    )
    write_report(result, fmt, sys.stdout)
