"""`stockade keys`: create, list, show and destroy signing keys and key-encryption keys, and
encrypt or decrypt files as envelopes under a key-encryption key.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from stockade.cli.common import OutputFormat, console, open_workspace, print_json, print_rows
from stockade.core import clock
from stockade.core.envelope import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, decrypt_file, encrypt_file
from stockade.core.key_management import (
    Key,
    create_key,
    destroy_key,
    get_key,
    list_keys,
    public_key_pem,
    workspace_kms,
)

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True, help="Signing keys, key-encryption keys, envelope encryption."
)

_COLUMNS = ("id", "kind", "algorithm", "state", "created_at", "purpose")


class KindChoice(StrEnum):
    signing = "signing"
    kek = "kek"


class AlgorithmChoice(StrEnum):
    ed25519 = "ed25519"
    ecdsa_p256 = "ecdsa-p256"


def _row(key: Key) -> dict[str, Any]:
    return {
        "id": key.id,
        "kind": key.kind,
        "algorithm": key.algorithm,
        "provider": key.provider,
        "state": "destroyed" if key.destroyed else "active",
        "purpose": key.purpose,
        "created_at": key.created_at,
        "destroyed_at": key.destroyed_at,
    }


def _describe(key: Key) -> str:
    kind = "key-encryption key" if key.kind == "kek" else "signing key"
    return f"{kind} {key.id!r} ({key.algorithm}, {key.provider})"


@app.command("list")
def list_command(
    show_all: Annotated[bool, typer.Option("--all", help="Include destroyed keys.")] = False,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """List keys (metadata only; key material never leaves the key store)."""
    ws = open_workspace()
    with ws.session() as session:
        found = list_keys(session, include_destroyed=show_all)
    if fmt is OutputFormat.json:
        print_json([key.to_json() for key in found])
        return
    print_rows((_row(key) for key in found), _COLUMNS, fmt, title="Keys")


@app.command()
def create(
    key_id: Annotated[str, typer.Argument(help="Lower-case letters, digits, '.', '_', '-'.")],
    kind: Annotated[
        KindChoice, typer.Option("--kind", help="signing, or kek (a key-encryption key).")
    ],
    algorithm: Annotated[
        AlgorithmChoice | None,
        typer.Option("--algorithm", help="Signing algorithm (default ed25519)."),
    ] = None,
    purpose: Annotated[str, typer.Option("--purpose", help="What the key is for.")] = "",
) -> None:
    """Create a key in the workspace key store and record it (ids are never reused)."""
    ws = open_workspace()
    with ws.session() as session:
        key = create_key(
            ws,
            session,
            key_id=key_id,
            kind=kind.value,
            algorithm=algorithm.value if algorithm else None,
            purpose=purpose,
            actor=ws.settings.cli_actor,
        )
    console.print(f"created {_describe(key)}", markup=False)


@app.command()
def show(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Show one key's record."""
    ws = open_workspace()
    with ws.session() as session:
        key = get_key(session, key_id)
    if fmt is OutputFormat.json:
        print_json(key.to_json())
        return
    fields = _row(key)
    if key.public_key:
        fields["public_key"] = key.public_key.strip()
    print_rows(
        ({"field": name, "value": value} for name, value in fields.items()),
        ("field", "value"),
        title=f"Key {key.id}",
    )


@app.command()
def public(key_id: Annotated[str, typer.Argument(help="A signing key id.")]) -> None:
    """Print a signing key's public key (PEM), also after the key was destroyed."""
    ws = open_workspace()
    with ws.session() as session:
        pem = public_key_pem(ws, session, key_id)
    typer.echo(pem, nl=not pem.endswith("\n"))


@app.command()
def destroy(
    key_id: Annotated[str, typer.Argument(help="The key id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, recorded in the audit log.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Destroy a key's material for good; the record stays for audit."""
    ws = open_workspace()
    with ws.session() as session:
        key = get_key(session, key_id)
    if not key.destroyed and not yes:
        consequence = (
            "every object encrypted under it becomes unreadable, for good"
            if key.kind == "kek"
            else "it can never sign again"
        )
        typer.confirm(f"Destroy {_describe(key)}? {consequence}.", abort=True)
    with ws.session() as session:
        key = destroy_key(ws, session, key_id=key_id, actor=ws.settings.cli_actor, reason=reason)
    moment = clock.format_time(key.destroyed_at) if key.destroyed_at else ""
    console.print(f"destroyed {_describe(key)} at {moment}", markup=False)
    if key.kind == "kek":
        console.print(
            "objects encrypted under it are now unreadable (crypto-shredded)", markup=False
        )
    else:
        console.print(
            "it can no longer sign; its public key stays on record to verify earlier signatures",
            markup=False,
        )


@app.command()
def encrypt(
    source: Annotated[Path, typer.Argument(help="The file to encrypt.", metavar="IN")],
    target: Annotated[Path, typer.Argument(help="Where to write the envelope.", metavar="OUT")],
    kek: Annotated[str, typer.Option("--kek", help="The key-encryption key id.")],
    associated_data: Annotated[
        str,
        typer.Option(
            "--associated-data",
            help="Text bound to the envelope (e.g. the object digest); needed to decrypt.",
        ),
    ] = "",
    chunk_size: Annotated[
        int,
        typer.Option("--chunk-size", min=1, max=MAX_CHUNK_SIZE, help="Bytes per chunk."),
    ] = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt a file under a fresh data key wrapped by a key-encryption key."""
    ws = open_workspace()
    encrypt_file(
        source,
        target,
        workspace_kms(ws),
        kek,
        associated_data=associated_data.encode("utf-8"),
        chunk_size=chunk_size,
    )
    console.print(f"encrypted {source} -> {target} (key-encryption key {kek!r})", markup=False)


@app.command()
def decrypt(
    source: Annotated[Path, typer.Argument(help="The envelope to decrypt.", metavar="IN")],
    target: Annotated[Path, typer.Argument(help="Where to write the plaintext.", metavar="OUT")],
    associated_data: Annotated[
        str,
        typer.Option("--associated-data", help="The text given when encrypting, if any."),
    ] = "",
) -> None:
    """Decrypt an envelope; OUT appears only if every byte authenticated."""
    ws = open_workspace()
    header = decrypt_file(
        source, target, workspace_kms(ws), associated_data=associated_data.encode("utf-8")
    )
    console.print(
        f"decrypted {source} -> {target} (key-encryption key {header.kek_id!r})", markup=False
    )
