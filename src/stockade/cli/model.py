"""`stockade model`: phase 2, models. Register model artifacts as immutable, fingerprinted
versions in the inventory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, console, print_json
from stockade.cli.inventory import TagOpt, parse_tags, register_file

app = typer.Typer(no_args_is_help=True)


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Model name; created if new.")],
    version: Annotated[str, typer.Argument(help="Version label, e.g. 1.2.0.")],
    file: Annotated[Path, typer.Argument(help="The model artifact.")],
    system: Annotated[str | None, typer.Option(help="AI system, for a new model.")] = None,
    owner: Annotated[str | None, typer.Option(help="Owner, for a new model.")] = None,
    framework: Annotated[str | None, typer.Option(help="Framework, for a new model.")] = None,
    source_uri: Annotated[str | None, typer.Option(help="Where the artifact came from.")] = None,
    tag: TagOpt = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Fingerprint FILE (SHA-256, size, format) and register it as NAME@VERSION."""
    added, created = register_file(
        "model",
        name,
        version,
        file,
        create_values={"system": system, "owner": owner, "framework": framework},
        version_values={"source_uri": source_uri, "tags": parse_tags(tag)},
    )
    if fmt is OutputFormat.json:
        print_json(added.model_dump())
        return
    if created:
        console.print(f"created model:{name}", markup=False)
    console.print(f"registered model:{name}@{added.version} {added.digest}", markup=False)
