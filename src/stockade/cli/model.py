"""`stockade model`: phase 2, models. Scan model files for embedded code, and register
them as immutable, fingerprinted versions whose scan is kept as evidence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, console, err_console, open_workspace, print_json
from stockade.cli.scan_options import (
    FailOnOption,
    FormatOption,
    OutputOption,
    ReportFormat,
    Severity,
    emit_report,
)
from stockade.core.findings import ScanResult, exit_code
from stockade.model.scan.engine import iter_files, scan_paths

app = typer.Typer(no_args_is_help=True)

SCAN_CHECK = "model.scan"


def _scan_with_progress(paths: list[Path], jobs: int | None) -> ScanResult:
    """Scan, with a Rich progress bar on stderr when it is a terminal."""
    if not err_console.is_terminal:
        return scan_paths(paths, jobs=jobs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    total = sum(1 for _path, problem in iter_files(paths) if problem is None)
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total)
        return scan_paths(
            paths, jobs=jobs, progress=lambda p: bar.update(task, advance=1, description=p)
        )


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Model files or directories.")],
    fmt: FormatOption = ReportFormat.console,
    output: OutputOption = None,
    fail_on: FailOnOption = Severity.MEDIUM,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, help="Parallel processes (default: cores).")
    ] = None,
) -> None:
    """Find anything in model files that would run code, touch files or reach the network
    when loaded. Nothing is ever loaded or executed.

    Exit 0 clean, 1 findings at or above --fail-on (default medium), 2 something could not
    be fully inspected.
    """
    result = _scan_with_progress(paths, jobs)
    raise typer.Exit(emit_report(result, fmt, output, fail_on))


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Model name; created if new.")],
    version: Annotated[str, typer.Argument(help="Version label, e.g. 1.2.0.")],
    file: Annotated[Path, typer.Argument(help="The model artifact.")],
    system: Annotated[str | None, typer.Option(help="AI system, for a new model.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner, for a new model.")] = None,
    framework: Annotated[str | None, typer.Option(help="Framework, for a new model.")] = None,
    source_uri: Annotated[str | None, typer.Option(help="Where the artifact came from.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE; repeat for several.")
    ] = None,
    fail_on: FailOnOption = Severity.MEDIUM,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Scan FILE, fingerprint it (SHA-256, size, format) and register it as NAME@VERSION;
    the scan is stored as evidence on the version. Exits as a scan does (0, 1, 2), after
    registering."""
    # The inventory and evidence stores are imported here: `model scan` never needs them.
    from stockade.cli.inventory import parse_tags, register_file
    from stockade.core.evidence import record_evidence

    scanned = scan_paths([file], jobs=1)
    added, created = register_file(
        "model",
        name,
        version,
        file,
        create_values={"system": system, "owner": owner, "framework": framework},
        version_values={"source_uri": source_uri, "tags": parse_tags(tag)},
    )
    ws = open_workspace()
    with ws.session() as session:
        evidence = record_evidence(
            session,
            ws.audit,
            check=SCAN_CHECK,
            subject=f"model:{name}@{added.version}",
            actor=ws.settings.cli_actor,
            input_digest=added.digest,
            result=scanned,
            fail_on=fail_on,
        )
    if fmt is OutputFormat.json:
        print_json({**added.model_dump(), "scan": evidence.to_dict()})
    else:
        if created:
            console.print(f"created model:{name}", markup=False)
        console.print(f"registered model:{name}@{added.version} {added.digest}", markup=False)
        summary = scanned.summary()
        console.print(
            f"scan: {evidence.outcome} ({summary['findings']} findings, "
            f"{summary['errors']} could not be inspected); evidence {evidence.id}",
            markup=False,
        )
    raise typer.Exit(exit_code(scanned, fail_on))
