"""`stockade init`, `stockade up` and `stockade db`: prepare a workspace and serve the
control plane (REST API and dashboard) over it.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Annotated

import typer

from stockade.cli.common import console, err_console, open_workspace
from stockade.core import tokens
from stockade.core.config import get_settings
from stockade.core.db import describe_url
from stockade.core.errors import AuthError, InvalidInput, StockadeError
from stockade.core.files import write_atomic
from stockade.core.workspace import Workspace

db_app = typer.Typer(no_args_is_help=True)

BOOTSTRAP_ADMIN_LABEL = "bootstrap-admin"


def prepare(*, demo: bool) -> tuple[Workspace, str, bool]:
    """Create the home, migrate, make the audit key and an admin token; seed the demo.

    Returns the workspace, the admin token and whether the token is new.
    """
    home = get_settings().home
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    ws = open_workspace(require_migrated=False)
    ws.database.upgrade()
    ws.keys.ensure_signing_key(ws.audit.key_id)
    token_file = ws.settings.admin_token_file
    token: str | None = None
    if token_file.is_file():
        token = token_file.read_text(encoding="utf-8").strip()
        try:
            with ws.session() as session:
                tokens.authenticate(session, token)
        except AuthError:
            token = None  # revoked, expired or from another database: issue a new one
    created = token is None
    if token is None:
        with ws.session() as session:
            issued, _record = tokens.create_token(
                session,
                ws.audit,
                name=BOOTSTRAP_ADMIN_LABEL,
                role="admin",
                actor=ws.settings.cli_actor,
            )
        token = issued.token
        write_atomic(token_file, token + "\n", what="admin token")
    if demo:
        from stockade.demo import seed_demo

        result = seed_demo(ws)
        if result.created:
            console.print(f"seeded the demo workspace in {result.folder}", markup=False)
    return ws, token, created


def init(
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Seed the demo workspace.")
    ] = False,
) -> None:
    """Create STOCKADE_HOME, migrate the database, create the audit key and an admin token."""
    ws, token, created = prepare(demo=demo)
    console.print(f"workspace ready: {ws.settings.home}", markup=False)
    console.print(f"database: {describe_url(ws.database.url)}", markup=False)
    if created:
        console.print(f"admin token (also in {ws.settings.admin_token_file}):", markup=False)
        console.print(token, markup=False)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise InvalidInput(
                f"cannot listen on {host}:{port}: {exc.strerror} (choose another with --port)"
            ) from None


def _checkpoint_loop(ws: Workspace, interval: float, stop: threading.Event) -> None:
    """Sign a checkpoint whenever the audit log has grown, until stopped."""
    while not stop.wait(interval):
        try:
            with ws.session() as session:
                ws.audit.checkpoint(session, only_if_grown=True)
        except StockadeError as exc:
            err_console.print(f"audit checkpoint skipped: {exc.message}", markup=False)


def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port.")] = None,
    demo: Annotated[
        bool, typer.Option("--demo/--no-demo", help="Seed the demo workspace first.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the control-plane REST API (and its docs) until Ctrl-C."""
    import uvicorn

    from stockade.api.app import create_app

    ws, token, _created = prepare(demo=demo)
    host = host or ws.settings.host
    port = port or ws.settings.port
    _check_port_free(host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Stockade control plane on http://{shown}:{port}", markup=False)
    console.print(f"  dashboard: http://{shown}:{port}/dashboard/#token={token}", markup=False)
    console.print(f"  API:  http://{shown}:{port}/api/v1/", markup=False)
    console.print(f"  docs: http://{shown}:{port}/docs", markup=False)
    console.print(f"  admin token: {token}", markup=False)
    console.print("Press Ctrl-C to stop.", markup=False)
    stop = threading.Event()
    interval = ws.settings.audit_checkpoint_interval
    if interval > 0:
        threading.Thread(
            target=_checkpoint_loop, args=(ws, interval, stop), daemon=True, name="checkpoints"
        ).start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(ws), host=host, port=port, log_level=log_level, access_log=False)
    )
    try:
        server.run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal: that is the
        # normal way to stop, not an interruption.
        pass
    finally:
        stop.set()
        with ws.session() as session:
            ws.audit.checkpoint(session, only_if_grown=True)
    console.print("stopped", markup=False)


@db_app.command()
def upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (idempotent)."""
    get_settings().home.mkdir(parents=True, exist_ok=True)
    ws = open_workspace(require_migrated=False)
    ws.database.upgrade(revision)
    console.print(f"database at revision {ws.database.current_revision()}", markup=False)


@db_app.command()
def current() -> None:
    """Show the database's migration revision and the latest one."""
    ws = open_workspace(require_migrated=False)
    console.print(
        f"current: {ws.database.current_revision() or 'none'}  head: {ws.database.head_revision()}",
        markup=False,
    )
