"""`stockade data`: phase 1, data. Register dataset files as fingerprinted versions with
their provenance, and check copies against what was registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, console, open_workspace, print_json
from stockade.cli.inventory import TagOpt, parse_tags, register_file
from stockade.cli.scan_options import (
    FormatOption,
    OutputOption,
    ReportFormat,
    Severity,
    emit_report,
)
from stockade.core.inventory import describe_artifact
from stockade.data.integrity import check_integrity, count_records

app = typer.Typer(no_args_is_help=True)


def _data_format(file: Path, given: str | None) -> str:
    if given:
        return given.lower()
    suffixes = [s.lower().lstrip(".") for s in file.suffixes if s.lower() != ".gz"]
    known = {"csv", "tsv", "jsonl", "ndjson", "json", "parquet", "txt", "md"}
    return suffixes[-1] if suffixes and suffixes[-1] in known else describe_artifact(file).format


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Dataset name; created if new.")],
    version: Annotated[str, typer.Argument(help="Version label, e.g. 2026-11-01.")],
    file: Annotated[Path, typer.Argument(help="The dataset file.")],
    data_format: Annotated[
        str | None, typer.Option("--data-format", help="csv, tsv, jsonl, parquet... (sniffed).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="AI system, for a new dataset.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner, for a new dataset.")] = None,
    license_: Annotated[str | None, typer.Option("--license", help="For a new dataset.")] = None,
    source_uri: Annotated[str | None, typer.Option(help="Where the data came from.")] = None,
    tag: TagOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Fingerprint FILE (SHA-256, size, records) and register it as NAME@VERSION."""
    data_fmt = _data_format(file, data_format)
    added, created = register_file(
        "dataset",
        name,
        version,
        file,
        create_values={
            "system": system,
            "owner": owner,
            "license": license_,
            "source_uri": source_uri,
        },
        version_values={
            "format": data_fmt,
            "row_count": count_records(file, data_fmt) if file.is_file() else None,
            "source_uri": source_uri,
            "tags": parse_tags(tag),
        },
    )
    if fmt is OutputFormat.json:
        print_json(added.model_dump())
        return
    if created:
        console.print(f"created dataset:{name}", markup=False)
    rows = f", {added.row_count} records" if added.row_count is not None else ""
    console.print(
        f"registered dataset:{name}@{added.version} {added.digest} ({added.size} bytes{rows})",
        markup=False,
    )


@app.command()
def verify(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    version: Annotated[str, typer.Argument(help="Registered version.")],
    file: Annotated[Path, typer.Argument(help="The copy to check.")],
    fmt: FormatOption = ReportFormat.console,
    output: OutputOption = None,
) -> None:
    """Check a copy of NAME@VERSION against its registered digest and record the evidence.

    Exit 0 identical, 1 altered (critical finding), 2 could not read the copy.
    """
    ws = open_workspace()
    with ws.session() as session:
        result, _evidence = check_integrity(
            session, ws.audit, dataset=name, version=version, path=file, actor=ws.settings.cli_actor
        )
    raise typer.Exit(emit_report(result, fmt, output, Severity.HIGH))
