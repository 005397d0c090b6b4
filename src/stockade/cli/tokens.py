"""`stockade tokens`: issue, list and revoke control-plane API tokens from the workspace
(local access to the database stands for the admin role).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

from stockade.cli.common import (
    OutputFormat,
    console,
    err_console,
    open_workspace,
    print_json,
    print_rows,
)
from stockade.core import clock
from stockade.core.tokens import Role, TokenInfo, create_token, list_tokens, revoke_token

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Control-plane API tokens and roles.")

SHOWN_ONCE = "This token will not be shown again: store it now (e.g. in a secret manager)."
# The table keeps to what fits a terminal; `--format json` has every field.
_COLUMNS = ("id", "name", "role", "state", "expires_at", "last_used_at")


def _row(info: TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.name,
        "role": info.role.value,
        "state": info.state,
        "created_by": info.created_by,
        "created_at": info.created_at,
        "expires_at": info.expires_at,
        "last_used_at": info.last_used_at,
        "revoked_at": info.revoked_at,
    }


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. 'ci-pipeline'.")],
    role: Annotated[Role, typer.Option("--role", help="admin, engineer, auditor or service.")],
    expires_in: Annotated[
        int | None,
        typer.Option("--expires-in", min=1, max=3650, metavar="DAYS", help="Expire after DAYS."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Issue a token and print it once: only its salted hash is stored."""
    ws = open_workspace()
    expires_at = clock.now() + timedelta(days=expires_in) if expires_in else None
    with ws.session() as session:
        issued, info = create_token(
            session,
            ws.audit,
            name=name,
            role=role,
            actor=ws.settings.cli_actor,
            expires_at=expires_at,
        )
    if fmt is OutputFormat.json:
        print_json({**_row(info), "token": issued.token, "warning": SHOWN_ONCE})
        return
    expiry = clock.format_time(info.expires_at) if info.expires_at else "never"
    err_console.print(
        f"created token {info.id} ({info.name!r}, role {info.role.value}, expires {expiry})",
        markup=False,
    )
    err_console.print(f"warning: {SHOWN_ONCE}", markup=False)
    # The token alone on stdout, so `TOKEN=$(stockade tokens create ...)` captures just it.
    console.print(issued.token, markup=False)


@app.command("list")
def list_command(
    show_all: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """List tokens (ids, names, roles, states; never secrets)."""
    ws = open_workspace()
    with ws.session() as session:
        found = list_tokens(session, include_revoked=show_all)
    print_rows((_row(info) for info in found), _COLUMNS, fmt, title="API tokens")


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (the part after stk_).")],
    reason: Annotated[str, typer.Option("--reason", help="Why, recorded in the audit log.")],
) -> None:
    """Revoke a token; it stops working at once."""
    ws = open_workspace()
    with ws.session() as session:
        info = revoke_token(
            session, ws.audit, token_id=token_id, actor=ws.settings.cli_actor, reason=reason
        )
    console.print(f"revoked token {info.id} ({info.name!r}, role {info.role.value})", markup=False)
