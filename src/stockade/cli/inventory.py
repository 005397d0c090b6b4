"""`stockade inventory`: create, list, show, update, version and move inventory entities.

KIND is one of system, model, dataset, endpoint (plurals accepted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stockade.cli.common import OutputFormat, console, open_workspace, print_json, print_rows
from stockade.core import inventory
from stockade.core.errors import InvalidInput, NotFound

app = typer.Typer(no_args_is_help=True)

KindArg = Annotated[
    str, typer.Argument(help="system, model, dataset or endpoint (plurals accepted).")
]
NameArg = Annotated[str, typer.Argument(help="Name (or id) of the entity.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table or json.")]
TagOpt = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE; repeat for several.")
]

LIST_COLUMNS = {
    "system": ["name", "owner", "risk_tier", "lifecycle_state", "updated_at"],
    "model": ["name", "system", "latest_version", "owner", "risk_tier", "lifecycle_state"],
    "dataset": ["name", "system", "latest_version", "owner", "risk_tier", "lifecycle_state"],
    "endpoint": ["name", "system", "model", "url", "owner", "lifecycle_state"],
}
VERSION_COLUMNS = ["version", "digest", "size", "format", "lifecycle_state", "created_at"]


def parse_tags(tags: list[str] | None) -> dict[str, str] | None:
    if tags is None:
        return None
    parsed: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"tag {tag!r} must look like KEY=VALUE")
        parsed[key.strip()] = value.strip()
    return parsed


def _fields(**given: Any) -> dict[str, Any]:
    return {key: value for key, value in given.items() if value is not None}


@app.command("list")
def list_(
    kind: KindArg,
    owner: Annotated[str | None, typer.Option(help="Only this owner.")] = None,
    risk_tier: Annotated[str | None, typer.Option(help="Only this risk tier.")] = None,
    state: Annotated[str | None, typer.Option(help="Only this lifecycle state.")] = None,
    system: Annotated[str | None, typer.Option(help="Only entities of this AI system.")] = None,
    tag: Annotated[str | None, typer.Option(help="KEY=VALUE or KEY.")] = None,
    q: Annotated[str | None, typer.Option("--name", help="Names containing this.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """List entities of one kind, with filters."""
    k = inventory.kind_of(kind)
    filters = inventory.parse_spec(
        inventory.InventoryFilter,
        _fields(
            owner=owner,
            risk_tier=risk_tier,
            lifecycle_state=state,
            system=system,
            tag=tag,
            q=q,
            limit=limit,
            offset=offset,
        ),
    )
    ws = open_workspace()
    with ws.session() as session:
        rows = inventory.list_entities(session, k, filters)
    print_rows([r.model_dump() for r in rows], LIST_COLUMNS[k.name], fmt, title=k.plural)


@app.command()
def show(kind: KindArg, name: NameArg, fmt: FormatOpt = OutputFormat.table) -> None:
    """Show one entity, its versions and its lifecycle history."""
    k = inventory.kind_of(kind)
    ws = open_workspace()
    with ws.session() as session:
        entity = inventory.get(session, k, name)
        versions = inventory.list_versions(session, k, name) if k.version_table else []
        transitions = inventory.history(session, k, name)
    if fmt is OutputFormat.json:
        data = entity.model_dump()
        if k.version_table:
            data["versions"] = [v.model_dump() for v in versions]
        data["history"] = [t.model_dump() for t in transitions]
        print_json(data)
        return
    print_rows(
        [{"field": key, "value": value} for key, value in entity.model_dump().items()],
        ["field", "value"],
        title=k.subject(entity.name),
    )
    if k.version_table:
        print_rows([v.model_dump() for v in versions], VERSION_COLUMNS, title="versions")
    if transitions:
        print_rows(
            [t.model_dump() for t in transitions],
            ["at", "from_state", "to_state", "actor", "reason"],
            title="lifecycle history",
        )


@app.command()
def create(
    kind: KindArg,
    name: Annotated[str, typer.Argument(help="Unique name.")],
    description: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option(help="Team or person accountable.")] = None,
    risk_tier: Annotated[
        str | None, typer.Option(help="unclassified, minimal, limited, high, unacceptable.")
    ] = None,
    tag: TagOpt = None,
    system: Annotated[str | None, typer.Option(help="AI system it belongs to.")] = None,
    model: Annotated[str | None, typer.Option(help="Endpoints: the model served.")] = None,
    task: Annotated[str | None, typer.Option(help="Models: the task.")] = None,
    framework: Annotated[str | None, typer.Option(help="Models: the framework.")] = None,
    source_uri: Annotated[str | None, typer.Option(help="Datasets: where it comes from.")] = None,
    license_: Annotated[str | None, typer.Option("--license", help="Datasets: licence.")] = None,
    url: Annotated[str | None, typer.Option(help="Endpoints: the URL.")] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Create an entity (starts in `draft`)."""
    k = inventory.kind_of(kind)
    spec = inventory.parse_spec(
        k.create,
        _fields(
            name=name,
            description=description,
            owner=owner,
            risk_tier=risk_tier,
            tags=parse_tags(tag),
            system=system,
            model=model,
            task=task,
            framework=framework,
            source_uri=source_uri,
            license=license_,
            url=url,
        ),
    )
    ws = open_workspace()
    with ws.session() as session:
        created = inventory.create(session, ws.audit, k, spec, actor=ws.settings.cli_actor)
    _done(created.model_dump(), fmt, f"created {k.subject(created.name)} ({created.id})")


@app.command()
def update(
    kind: KindArg,
    name: NameArg,
    description: Annotated[str | None, typer.Option()] = None,
    owner: Annotated[str | None, typer.Option()] = None,
    risk_tier: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Replaces all tags; KEY=VALUE.")
    ] = None,
    system: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option()] = None,
    task: Annotated[str | None, typer.Option()] = None,
    framework: Annotated[str | None, typer.Option()] = None,
    source_uri: Annotated[str | None, typer.Option()] = None,
    license_: Annotated[str | None, typer.Option("--license")] = None,
    url: Annotated[str | None, typer.Option()] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Change descriptive fields; lifecycle moves go through `transition`."""
    k = inventory.kind_of(kind)
    changes = inventory.parse_spec(
        k.update,
        _fields(
            description=description,
            owner=owner,
            risk_tier=risk_tier,
            tags=parse_tags(tag),
            system=system,
            model=model,
            task=task,
            framework=framework,
            source_uri=source_uri,
            license=license_,
            url=url,
        ),
    )
    ws = open_workspace()
    with ws.session() as session:
        updated = inventory.update(session, ws.audit, k, name, changes, actor=ws.settings.cli_actor)
    _done(updated.model_dump(), fmt, f"updated {k.subject(updated.name)}")


@app.command("add-version")
def add_version(
    kind: Annotated[str, typer.Argument(help="model or dataset.")],
    name: NameArg,
    version: Annotated[str, typer.Argument(help="Version label, e.g. 1.2.0.")],
    file: Annotated[
        Path | None, typer.Option("--file", help="Artifact to fingerprint (digest, size, format).")
    ] = None,
    digest: Annotated[str | None, typer.Option(help="sha256:<hex>, when no --file.")] = None,
    size: Annotated[int | None, typer.Option(help="Bytes, when no --file.")] = None,
    artifact_format: Annotated[str | None, typer.Option("--artifact-format")] = None,
    source_uri: Annotated[str | None, typer.Option()] = None,
    row_count: Annotated[int | None, typer.Option(help="Datasets: number of records.")] = None,
    tag: TagOpt = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Register an immutable version of a model or dataset."""
    k = inventory.kind_of(kind)
    if k.version_create is None:
        raise InvalidInput(f"{k.plural} have no versions")
    values = _fields(
        version=version,
        digest=digest,
        size=size,
        format=artifact_format,
        source_uri=source_uri,
        row_count=row_count,
        tags=parse_tags(tag),
    )
    if file is not None:
        if digest is not None or size is not None:
            raise InvalidInput("give either --file or --digest/--size, not both")
        facts = inventory.describe_artifact(file)
        values.update(digest=facts.digest, size=facts.size)
        values.setdefault("format", facts.format)
        values.setdefault("source_uri", file.resolve().as_uri())
    elif digest is None or size is None:
        raise InvalidInput("give --file, or both --digest and --size")
    spec = inventory.parse_spec(k.version_create, values)
    ws = open_workspace()
    with ws.session() as session:
        added = inventory.add_version(session, ws.audit, k, name, spec, actor=ws.settings.cli_actor)
    _done(added.model_dump(), fmt, f"registered {k.subject(name, added.version)} {added.digest}")


@app.command()
def versions(
    kind: Annotated[str, typer.Argument(help="model or dataset.")],
    name: NameArg,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """List the versions of a model or dataset."""
    k = inventory.kind_of(kind)
    ws = open_workspace()
    with ws.session() as session:
        rows = inventory.list_versions(session, k, name)
    print_rows([r.model_dump() for r in rows], VERSION_COLUMNS, fmt, title=k.subject(name))


@app.command()
def transition(
    kind: KindArg,
    name: NameArg,
    to_state: Annotated[
        str, typer.Argument(help="draft, development, validated, staging, production, retired.")
    ],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded and audited).")],
    version: Annotated[str | None, typer.Option(help="Move one model version instead.")] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Move an entity (or a model version) to another lifecycle state, through the gates."""
    k = inventory.kind_of(kind)
    ws = open_workspace()
    actor = ws.settings.cli_actor
    with ws.session() as session:
        if version is None:
            result, outcome = inventory.transition(
                session, ws.audit, k, name, to_state, actor=actor, reason=reason
            )
        else:
            result, outcome = inventory.transition_version(
                session, ws.audit, k, name, version, to_state, actor=actor, reason=reason
            )
    # The refusal is audited (committed above) before it is reported.
    outcome.raise_if_refused()
    request = outcome.request
    _done(
        result.model_dump(),
        fmt,
        f"{request.subject}: {request.from_state} -> {request.to_state}",
    )


@app.command("history")
def history_(
    kind: KindArg,
    name: NameArg,
    version: Annotated[str | None, typer.Option(help="History of one model version.")] = None,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Lifecycle transitions of an entity: who moved it, when and why."""
    k = inventory.kind_of(kind)
    ws = open_workspace()
    with ws.session() as session:
        rows = inventory.history(session, k, name, version)
    print_rows(
        [r.model_dump() for r in rows],
        ["at", "from_state", "to_state", "actor", "reason"],
        fmt,
        title=k.subject(name, version),
    )


def _done(data: dict[str, Any], fmt: OutputFormat, message: str) -> None:
    if fmt is OutputFormat.json:
        print_json(data)
    else:
        console.print(message, markup=False)


def register_file(
    kind_name: str,
    name: str,
    version: str,
    file: Path,
    *,
    create_values: dict[str, Any],
    version_values: dict[str, Any],
) -> tuple[Any, bool]:
    """Register FILE as VERSION of NAME, creating NAME first when it does not exist.

    Returns the version record and whether the entity was created.
    """
    k = inventory.kind_of(kind_name)
    assert k.version_create is not None
    facts = inventory.describe_artifact(file)
    values = {
        "version": version,
        "digest": facts.digest,
        "size": facts.size,
        "format": facts.format,
        "source_uri": file.resolve().as_uri(),
        **_fields(**version_values),
    }
    spec = inventory.parse_spec(k.version_create, values)
    ws = open_workspace()
    actor = ws.settings.cli_actor
    created = False
    with ws.session() as session:
        try:
            inventory.get(session, k, name)
        except NotFound:
            entity = inventory.parse_spec(k.create, {"name": name, **_fields(**create_values)})
            inventory.create(session, ws.audit, k, entity, actor=actor)
            created = True
        added = inventory.add_version(session, ws.audit, k, name, spec, actor=actor)
    return added, created
