"""`stockade retire`: phase 6, retirement. Take an entity out of service for good."""

from __future__ import annotations

from typing import Annotated

import typer

from stockade.cli.common import console, open_workspace
from stockade.core import inventory
from stockade.retire.workflow import retire

app = typer.Typer(no_args_is_help=True)


def _retire(kind: str, name: str, reason: str, yes: bool) -> None:
    k = inventory.kind_of(kind)
    if not yes:
        typer.confirm(f"Retire {k.subject(name)}? Retirement is final", abort=True)
    ws = open_workspace()
    with ws.session() as session:
        done = retire(session, ws.audit, k, name, actor=ws.settings.cli_actor, reason=reason)
    console.print(f"{done.subject}: {done.previous_state} -> retired", markup=False)
    for version in done.versions_retired:
        console.print(f"  {done.subject}@{version}: retired", markup=False)


NameArg = Annotated[str, typer.Argument(help="Name of the entity.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (audited).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


@app.command()
def model(name: NameArg, reason: ReasonOpt, yes: YesOpt = False) -> None:
    """Retire a model and all its versions (refused while an endpoint still serves it)."""
    _retire("model", name, reason, yes)


@app.command()
def dataset(name: NameArg, reason: ReasonOpt, yes: YesOpt = False) -> None:
    """Retire a dataset."""
    _retire("dataset", name, reason, yes)


@app.command()
def endpoint(name: NameArg, reason: ReasonOpt, yes: YesOpt = False) -> None:
    """Retire an endpoint."""
    _retire("endpoint", name, reason, yes)


@app.command()
def system(name: NameArg, reason: ReasonOpt, yes: YesOpt = False) -> None:
    """Retire an AI system (refused while it has live models, datasets or endpoints)."""
    _retire("system", name, reason, yes)
