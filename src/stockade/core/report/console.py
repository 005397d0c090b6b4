"""The console report: a Rich table of findings, most severe first and grouped by severity,
then what could not be inspected, then one summary line with counts per severity.
"""

from __future__ import annotations

from itertools import groupby
from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stockade.core.findings import Finding, ScanResult, Severity

__all__ = ["write_console"]

MAX_EVIDENCE = 120

_STYLES = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def write_console(result: ScanResult, stream: TextIO, *, width: int | None = None) -> None:
    """Render for a person. Scanned content is never interpreted as Rich markup: every cell
    is a `Text`, and findings already hold control characters escaped."""
    console = Console(file=stream, width=width, highlight=False, emoji=False, soft_wrap=False)
    targets = len(result.targets)
    header = Text(f"{result.tool} {result.scanner}", style="bold")
    header.append(
        f" {result.version} · {targets} target{'s' if targets != 1 else ''} "
        f"scanned in {result.duration:.2f} s",
        style="dim",
    )
    console.print(header)

    issues = result.issues
    if issues:
        console.print(_findings_table(issues))
    else:
        console.print(Text("No findings.", style="green"))
    if result.errors:
        console.print(_errors_table(result.errors))
    console.print(_summary(result))
    stream.flush()


def _findings_table(issues: tuple[Finding, ...]) -> Table:
    table = Table(header_style="bold", show_lines=False, expand=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Rule", no_wrap=True)
    table.add_column("Finding", overflow="fold", ratio=3)
    table.add_column("Location", overflow="fold", ratio=2)
    table.add_column("Evidence", overflow="fold", ratio=2)
    for _severity, group in groupby(issues, key=lambda f: f.severity):
        rows = list(group)
        for index, finding in enumerate(rows):
            table.add_row(
                _severity_cell(finding.severity),
                Text(finding.rule_id),
                _finding_cell(finding),
                Text(finding.location.describe()),
                Text(_shorten(finding.snippet), style="italic"),
                end_section=index == len(rows) - 1,
            )
    return table


def _errors_table(errors: tuple[Finding, ...]) -> Table:
    table = Table(
        title=Text(f"Could not inspect ({len(errors)})", style="bold red"),
        title_justify="left",
        header_style="bold",
    )
    table.add_column("Rule", no_wrap=True)
    table.add_column("Location", overflow="fold", ratio=1)
    table.add_column("Reason", overflow="fold", ratio=2)
    for error in errors:
        table.add_row(
            Text(error.rule_id),
            Text(error.location.describe() or "-"),
            Text(error.detail or error.title),
        )
    return table


def _severity_cell(severity: Severity) -> Text:
    return Text(severity.value.upper(), style=_STYLES[severity])


def _finding_cell(finding: Finding) -> Text:
    cell = Text(finding.title, style="bold")
    if finding.detail:
        cell.append("\n" + finding.detail)
    if finding.remediation:
        cell.append("\nfix: " + finding.remediation, style="dim")
    if finding.references:
        cell.append("\nrefs: " + ", ".join(finding.references), style="dim")
    if finding.confidence < 1.0:
        cell.append(f"\nconfidence {finding.confidence:.0%}", style="dim")
    return cell


def _shorten(snippet: str) -> str:
    return snippet if len(snippet) <= MAX_EVIDENCE else snippet[: MAX_EVIDENCE - 1] + "…"


def _summary(result: ScanResult) -> Text:
    counts = result.counts()
    line = Text("Summary: ", style="bold")
    for index, (name, count) in enumerate(counts.items()):
        if index:
            line.append(", ")
        style = _STYLES[Severity(name)] if count else "dim"
        line.append(f"{count} {name}", style=style)
    total = len(result.issues)
    line.append(f" · {total} finding{'s' if total != 1 else ''}")
    errors = len(result.errors)
    if errors:
        line.append(
            f" · {errors} could not be inspected (scan incomplete)",
            style="bold red",
        )
    return line
