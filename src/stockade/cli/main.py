"""Entry point of `stockade`: mounts one command group per phase and turns every expected
failure into one clear line on stderr and a documented exit code.
"""

from __future__ import annotations

import os
from typing import Any

import click
import typer
from typer.core import TyperGroup

from stockade import __version__
from stockade.cli import (
    audit,
    control_plane,
    data,
    evaluate,
    gateway,
    govern,
    inventory,
    keys,
    model,
    monitor,
    retire,
    tokens,
)
from stockade.cli.common import close_workspace, err_console
from stockade.core.errors import StockadeError

__all__ = ["app", "run"]

EXIT_INTERNAL = 70


class _StockadeGroup(TyperGroup):
    """Catches errors raised by any sub-command, however deep."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StockadeError as exc:
            err_console.print(f"error: {exc.message}", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except (
            click.exceptions.Exit,
            click.ClickException,
            click.Abort,
            # typer 0.29 carries its own click: its Exit/Abort/usage errors are other classes.
            typer.Exit,
            typer.Abort,
            typer.TyperException,
        ):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("STOCKADE_DEBUG"):
                raise
            err_console.print(
                f"internal error: {type(exc).__name__}: {exc} (set STOCKADE_DEBUG=1 for a trace)",
                markup=False,
            )
            raise typer.Exit(EXIT_INTERNAL) from None
        finally:
            close_workspace()


app = typer.Typer(
    cls=_StockadeGroup,
    name="stockade",
    help="Secure AI systems across their whole lifecycle.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stockade {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Secure AI systems across their whole lifecycle."""


app.command()(control_plane.init)
app.command()(control_plane.up)
app.add_typer(control_plane.db_app, name="db", help="Database migrations.")
app.add_typer(
    inventory.app, name="inventory", help="AI systems, models, datasets, endpoints, versions."
)

# One group per lifecycle phase, in lifecycle order.
app.add_typer(data.app, name="data", help="Phase 1, data: dataset provenance and integrity.")
app.add_typer(model.app, name="model", help="Phase 2, model: fingerprinted model versions.")
app.add_typer(
    evaluate.app, name="eval", help="Phase 3, evaluation: evidence of checks and evaluations."
)
app.add_typer(
    gateway.app, name="gateway", help="Phase 4, deployment: endpoints and what they serve."
)
app.add_typer(monitor.app, name="monitor", help="Phase 5, operations: events and monitors.")
app.add_typer(retire.app, name="retire", help="Phase 6, retirement: take entities out of service.")
app.add_typer(govern.app, name="govern", help="Governance: risk tiers and the lifecycle.")

# Cross-cutting control-plane services.
app.add_typer(
    audit.app, name="audit", help="Tamper-evident audit log: entries, proofs, checkpoints."
)
app.add_typer(keys.app, name="keys", help="Signing keys, key-encryption keys, envelope encryption.")
app.add_typer(tokens.app, name="tokens", help="Control-plane API tokens and roles.")


def run() -> None:
    """Console-script entry point."""
    app()
