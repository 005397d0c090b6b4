"""`stockade gateway`: phase 4, deployment. What each endpoint is meant to serve: its model
and the digests of the model versions in production, which deployments are verified against.
"""

from __future__ import annotations

from typing import Annotated

import typer

from stockade.cli.common import OutputFormat, open_workspace, print_rows
from stockade.core import inventory

app = typer.Typer(no_args_is_help=True)


@app.command()
def endpoints(
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
) -> None:
    """Endpoints with the model they serve and its production version digests."""
    ws = open_workspace()
    rows = []
    with ws.session() as session:
        for endpoint in inventory.list_entities(
            session, inventory.KINDS["endpoint"], inventory.InventoryFilter(limit=1000)
        ):
            serving = []
            if endpoint.model:  # type: ignore[attr-defined]
                versions = inventory.list_versions(
                    session,
                    inventory.KINDS["model"],
                    endpoint.model,  # type: ignore[attr-defined]
                )
                serving = [
                    f"{v.version} {v.digest}" for v in versions if v.lifecycle_state == "production"
                ]
            rows.append(
                {
                    "endpoint": endpoint.name,
                    "state": endpoint.lifecycle_state,
                    "url": endpoint.url,  # type: ignore[attr-defined]
                    "model": endpoint.model,  # type: ignore[attr-defined]
                    "production_versions": serving,
                }
            )
    print_rows(
        rows, ["endpoint", "state", "url", "model", "production_versions"], fmt, title="endpoints"
    )
