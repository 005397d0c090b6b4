"""`stockade audit`: read the audit log, verify it, sign checkpoints, and prove entries.

Exit codes of `verify`: 0 intact, 1 tampering detected, 2 could not verify.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stockade.cli.common import OutputFormat, console, open_workspace, print_json, print_rows
from stockade.core.errors import InvalidInput
from stockade.core.files import write_atomic
from stockade.core.keys import public_pem

__all__ = ["app"]

EXIT_TAMPERED = 1

app = typer.Typer(no_args_is_help=True)


@app.command("log")
def log_(
    action: str | None = typer.Option(None, help="Only entries with this action."),
    subject: str | None = typer.Option(None, help="Only entries about this subject."),
    actor: str | None = typer.Option(None, help="Only entries by this actor."),
    limit: int = typer.Option(50, min=1, max=10_000, help="At most this many entries."),
    offset: int = typer.Option(0, min=0, help="Skip this many matching entries."),
    newest: bool = typer.Option(False, "--newest", help="Newest first."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json."),
) -> None:
    """List audit entries, oldest first."""
    ws = open_workspace()
    with ws.session() as session:
        records = ws.audit.entries(
            session,
            start=offset,
            limit=limit,
            action=action,
            subject=subject,
            actor=actor,
            newest_first=newest,
        )
    print_rows(
        # The datetime itself, so the table shows it short and JSON in full RFC 3339.
        ({**record.to_json(), "timestamp": record.timestamp} for record in records),
        ["index", "timestamp", "actor", "action", "subject", "details"],
        fmt,
        title="Audit log",
    )


def _read_checkpoint(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot read checkpoint file {path}: {reason}") from None


@app.command()
def verify(
    checkpoint: list[Path] = typer.Option(
        [],
        "--checkpoint",
        help="A checkpoint saved elsewhere, to check the log against (repeatable).",
    ),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table or json."),
) -> None:
    """Recompute the whole log and check it against every checkpoint.

    Exit 0 when intact, 1 when tampering is detected, 2 when it could not be verified.
    """
    texts = [_read_checkpoint(path) for path in checkpoint]
    ws = open_workspace()
    with ws.session() as session:
        result = ws.audit.verify(session, external_checkpoints=texts)
    if fmt is OutputFormat.json:
        print_json(result.to_json())
    elif result.ok:
        console.print(
            f"audit log intact: {result.size} entries, {result.checkpoints_checked} "
            f"checkpoints checked, {result.uncovered} entries after the latest checkpoint",
            markup=False,
        )
    else:
        console.print(
            f"TAMPERING DETECTED in the audit log ({len(result.problems)} problems):",
            markup=False,
        )
        for problem in result.problems:
            console.print(str(problem), markup=False)
    if not result.ok:
        raise typer.Exit(EXIT_TAMPERED)


def _check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise InvalidInput(f"cannot write {path}: directory {path.parent} does not exist")


@app.command("checkpoint")
def checkpoint_(
    out: Path | None = typer.Option(None, "--out", help="Also write the checkpoint to FILE."),
    if_grown: bool = typer.Option(
        False, "--if-grown", help="Sign only when entries were added since the latest one."
    ),
) -> None:
    """Sign the log's current size and root hash; print the signed checkpoint."""
    if out is not None:
        _check_writable(out)  # before signing, so a typo does not leave a stray checkpoint
    ws = open_workspace()
    with ws.session() as session:
        signed = ws.audit.checkpoint(session, only_if_grown=if_grown)
    if signed is None:
        console.print("no entries since the latest checkpoint; nothing signed", markup=False)
        return
    if out is not None:
        write_atomic(out, signed.text, mode=0o644, what="checkpoint")
    typer.echo(signed.text, nl=False)


@app.command()
def prove(
    index: int = typer.Argument(..., min=0, help="The entry to prove."),
    size: int | None = typer.Option(None, "--size", min=1, help="Tree size (default: now)."),
) -> None:
    """Print the inclusion proof of one entry, with its leaf hash and the root, as JSON."""
    ws = open_workspace()
    with ws.session() as session:
        proved = ws.audit.inclusion_proof(session, index, size)
    print_json(proved.to_json())


@app.command()
def consistency(
    old: int = typer.Argument(..., min=0, help="The older tree size."),
    new: int | None = typer.Argument(None, min=0, help="The newer tree size (default: now)."),
) -> None:
    """Print the proof that the log of OLD entries is a prefix of the log of NEW, as JSON."""
    ws = open_workspace()
    with ws.session() as session:
        proved = ws.audit.consistency_proof(session, old, new)
    print_json(proved.to_json())


@app.command("public-key")
def public_key() -> None:
    """Print the public key that checkpoints verify with (PEM)."""
    ws = open_workspace(require_migrated=False)
    typer.echo(public_pem(ws.audit.public_key()).decode("ascii"), nl=False)
