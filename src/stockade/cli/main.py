"""Entry point of `stockade`: mounts one command group per phase and turns every expected
failure into one clear line on stderr and a documented exit code.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

import click
import typer
from typer.core import TyperGroup

from stockade import __version__
from stockade.cli.common import close_workspace, err_console
from stockade.core.errors import StockadeError

__all__ = ["app", "run"]

EXIT_INTERNAL = 70


# Every command group is imported on first use, so `stockade model scan` does not pay for
# the database and web stack it never touches. name: (module, attribute, help); a group
# attribute is a Typer app, a command attribute a function.
_GROUPS: dict[str, tuple[str, str, str]] = {
    "init": (
        "stockade.cli.control_plane",
        "init",
        "Create STOCKADE_HOME, migrate the database, create the audit key and an admin token.",
    ),
    "up": (
        "stockade.cli.control_plane",
        "up",
        "Serve the control-plane REST API (and its docs) until Ctrl-C.",
    ),
    "db": ("stockade.cli.control_plane", "db_app", "Database migrations."),
    "inventory": (
        "stockade.cli.inventory",
        "app",
        "AI systems, models, datasets, endpoints, versions.",
    ),
    # One group per lifecycle phase, in lifecycle order.
    "data": ("stockade.cli.data", "app", "Phase 1, data: dataset provenance and integrity."),
    "model": (
        "stockade.cli.model",
        "app",
        "Phase 2, model: scan model files for embedded code; fingerprinted versions.",
    ),
    "eval": (
        "stockade.cli.evaluate",
        "app",
        "Phase 3, evaluation: evidence of checks and evaluations.",
    ),
    "gateway": (
        "stockade.cli.gateway",
        "app",
        "Phase 4, deployment: endpoints and what they serve.",
    ),
    "monitor": ("stockade.cli.monitor", "app", "Phase 5, operations: events and monitors."),
    "retire": (
        "stockade.cli.retire",
        "app",
        "Phase 6, retirement: take entities out of service.",
    ),
    "govern": ("stockade.cli.govern", "app", "Governance: risk tiers and the lifecycle."),
    # Cross-cutting control-plane services.
    "audit": (
        "stockade.cli.audit",
        "app",
        "Tamper-evident audit log: entries, proofs, checkpoints.",
    ),
    "keys": (
        "stockade.cli.keys",
        "app",
        "Signing keys, key-encryption keys, envelope encryption.",
    ),
    "tokens": ("stockade.cli.tokens", "app", "Control-plane API tokens and roles."),
}


def _load(name: str) -> click.Command:
    module, attribute, help_text = _GROUPS[name]
    target = getattr(import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command: click.Command = typer.main.get_group(target)
        command.help = help_text
    else:
        single = typer.Typer()
        single.command(name=name, help=help_text)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class _StockadeGroup(TyperGroup):
    """Loads command groups on first use and catches errors raised by any sub-command,
    however deep."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in _GROUPS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _GROUPS:
            command = _load(cmd_name)
            self.add_command(command, cmd_name)
        return command

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


def run() -> None:
    """Console-script entry point."""
    app()
