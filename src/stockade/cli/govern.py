"""`stockade govern`: governance. Risk classification of inventory entities and the
lifecycle state machine that gates hook into.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, console, open_workspace, print_rows
from stockade.core import inventory, lifecycle

app = typer.Typer(no_args_is_help=True)


@app.command()
def classify(
    kind: Annotated[str, typer.Argument(help="system, model, dataset or endpoint.")],
    name: Annotated[str, typer.Argument()],
    tier: Annotated[
        str, typer.Argument(help="unclassified, minimal, limited, high, unacceptable.")
    ],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (audited).")],
) -> None:
    """Set the risk tier of an entity, with the reason on record."""
    k = inventory.kind_of(kind)
    changes = inventory.parse_spec(k.update, {"risk_tier": tier})
    ws = open_workspace()
    actor = ws.settings.cli_actor
    with ws.session() as session:
        before = inventory.get(session, k, name).risk_tier
        inventory.update(session, ws.audit, k, name, changes, actor=actor)
        ws.audit.append(
            session,
            actor=actor,
            action="risk.classify",
            subject=k.subject(name),
            details={"from": before, "to": tier, "reason": reason},
        )
    console.print(f"{k.subject(name)}: risk tier {before} -> {tier}", markup=False)


@app.command()
def lifecycle_states(
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """The lifecycle states and the transitions allowed from each."""
    print_rows(
        [
            {"state": s, "may_move_to": ", ".join(lifecycle.legal_targets(s))}
            for s in lifecycle.STATES
        ],
        ["state", "may_move_to"],
        fmt,
        title="lifecycle",
    )
