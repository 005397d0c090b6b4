"""`stockade keys` as a user types it: create, list, show, public, destroy, encrypt, decrypt,
with exit codes and one-line errors."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from stockade.core.db import Database

from .conftest import Run

Cli = Callable[..., Run]


def _one_error_line(run: Run, fragment: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), run.stderr
    assert fragment in lines[0], run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_create_list_show(database: Database, cli: Cli) -> None:
    made = cli("keys", "create", "data-kek", "--kind", "kek", "--purpose", "datasets at rest")
    assert made.exit_code == 0, made.stderr
    assert "created key-encryption key 'data-kek' (aes-256-gcm, local)" in made.stdout
    made = cli("keys", "create", "signer", "--kind", "signing", "--algorithm", "ecdsa-p256")
    assert made.exit_code == 0, made.stderr
    assert "created signing key 'signer' (ecdsa-p256, local)" in made.stdout

    listed = cli("keys", "list", "--format", "json")
    assert listed.exit_code == 0
    rows = {row["id"]: row for row in listed.json()}
    assert set(rows) == {"data-kek", "signer"}
    assert rows["data-kek"]["purpose"] == "datasets at rest"
    assert rows["data-kek"]["state"] == "active"
    assert rows["signer"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")

    table = cli("keys", "list")
    assert table.exit_code == 0
    assert "data-kek" in table.stdout
    assert "signer" in table.stdout

    shown = cli("keys", "show", "data-kek", "-f", "json")
    assert shown.exit_code == 0
    assert shown.json()["kind"] == "kek"
    assert shown.json()["destroyed_at"] is None
    shown = cli("keys", "show", "signer")
    assert shown.exit_code == 0
    assert "ecdsa-p256" in shown.stdout
    assert "BEGIN PUBLIC KEY" in shown.stdout


def test_create_errors(database: Database, cli: Cli) -> None:
    assert cli("keys", "create", "k", "--kind", "kek").exit_code == 0
    again = cli("keys", "create", "k", "--kind", "signing")
    assert again.exit_code == 2
    _one_error_line(again, "key 'k' already exists")
    bad_id = cli("keys", "create", "Bad/Id", "--kind", "kek")
    assert bad_id.exit_code == 2
    _one_error_line(bad_id, "invalid key id")
    kek_algorithm = cli("keys", "create", "k2", "--kind", "kek", "--algorithm", "ed25519")
    assert kek_algorithm.exit_code == 2
    _one_error_line(kek_algorithm, "always aes-256-gcm")
    # Unknown choices are usage errors from the parser.
    assert cli("keys", "create", "k3", "--kind", "password").exit_code == 2
    assert cli("keys", "create", "k3", "--kind", "signing", "--algorithm", "rsa").exit_code == 2


def test_missing_key(database: Database, cli: Cli) -> None:
    for command in (("show", "nope"), ("public", "nope"), ("destroy", "nope", "--reason", "x")):
        run = cli("keys", *command)
        assert run.exit_code == 2, command
        _one_error_line(run, "'nope' not found")


def test_public_prints_pem(database: Database, cli: Cli) -> None:
    assert cli("keys", "create", "ed", "--kind", "signing").exit_code == 0
    assert (
        cli("keys", "create", "p256", "--kind", "signing", "--algorithm", "ecdsa-p256").exit_code
        == 0
    )
    assert cli("keys", "create", "kek", "--kind", "kek").exit_code == 0

    ed = cli("keys", "public", "ed")
    assert ed.exit_code == 0
    assert isinstance(
        serialization.load_pem_public_key(ed.stdout.encode()), ed25519.Ed25519PublicKey
    )
    p256 = cli("keys", "public", "p256")
    assert isinstance(
        serialization.load_pem_public_key(p256.stdout.encode()), ec.EllipticCurvePublicKey
    )
    kek = cli("keys", "public", "kek")
    assert kek.exit_code == 2
    _one_error_line(kek, "no public key")


def test_destroy_asks_first(database: Database, cli: Cli) -> None:
    assert cli("keys", "create", "kek", "--kind", "kek").exit_code == 0
    declined = cli("keys", "destroy", "kek", "--reason", "retired", input="n\n")
    assert declined.exit_code == 1
    assert "unreadable" in declined.stdout  # the prompt says what is at stake
    assert cli("keys", "show", "kek", "-f", "json").json()["state"] == "active"

    accepted = cli("keys", "destroy", "kek", "--reason", "retired", input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert "destroyed key-encryption key 'kek'" in accepted.stdout
    assert "objects encrypted under it are now unreadable" in accepted.stdout
    shown = cli("keys", "show", "kek", "-f", "json").json()
    assert shown["state"] == "destroyed"
    assert shown["destroyed_at"]

    assert [row["id"] for row in cli("keys", "list", "-f", "json").json()] == []
    assert [row["id"] for row in cli("keys", "list", "--all", "-f", "json").json()] == ["kek"]

    again = cli("keys", "destroy", "kek", "--reason", "retired", "--yes")
    assert again.exit_code == 2
    _one_error_line(again, "already destroyed")


def test_destroy_signing_key_keeps_public_key(database: Database, cli: Cli) -> None:
    assert cli("keys", "create", "signer", "--kind", "signing").exit_code == 0
    before = cli("keys", "public", "signer").stdout
    gone = cli("keys", "destroy", "signer", "--reason", "rotated", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert "it can no longer sign" in gone.stdout
    assert cli("keys", "public", "signer").stdout == before


def test_destroy_needs_a_reason(database: Database, cli: Cli) -> None:
    assert cli("keys", "create", "kek", "--kind", "kek").exit_code == 0
    assert cli("keys", "destroy", "kek", "--yes").exit_code == 2  # --reason is required
    blank = cli("keys", "destroy", "kek", "--reason", " ", "--yes")
    assert blank.exit_code == 2
    _one_error_line(blank, "a reason is required")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_encrypt_decrypt_round_trip(database: Database, cli: Cli, tmp_path: Path) -> None:
    assert cli("keys", "create", "kek", "--kind", "kek").exit_code == 0
    plain = tmp_path / "weights.bin"
    plain.write_bytes(bytes(range(256)) * 5000)
    digest = _digest(plain)

    sealed = cli(
        "keys", "encrypt", str(plain), str(tmp_path / "weights.enc"), "--kek", "kek",
        "--associated-data", f"sha256:{digest}", "--chunk-size", "65536",
    )  # fmt: skip
    assert sealed.exit_code == 0, sealed.stderr
    assert "encrypted" in sealed.stdout
    assert b"\x00\x01\x02\x03" not in (tmp_path / "weights.enc").read_bytes()

    opened = cli(
        "keys", "decrypt", str(tmp_path / "weights.enc"), str(tmp_path / "weights.out"),
        "--associated-data", f"sha256:{digest}",
    )  # fmt: skip
    assert opened.exit_code == 0, opened.stderr
    assert "key-encryption key 'kek'" in opened.stdout
    assert _digest(tmp_path / "weights.out") == digest

    wrong = cli(
        "keys", "decrypt", str(tmp_path / "weights.enc"), str(tmp_path / "other.out"),
        "--associated-data", "sha256:0000",
    )  # fmt: skip
    assert wrong.exit_code == 1
    _one_error_line(wrong, "associated data does not match")
    assert not (tmp_path / "other.out").exists()


def test_decrypt_errors(database: Database, cli: Cli, tmp_path: Path) -> None:
    assert cli("keys", "create", "kek", "--kind", "kek").exit_code == 0
    plain = tmp_path / "data.csv"
    plain.write_bytes(b"id,label\n" * 100_000)
    enc = tmp_path / "data.enc"
    assert cli("keys", "encrypt", str(plain), str(enc), "--kek", "kek").exit_code == 0

    tampered = tmp_path / "tampered.enc"
    blob = bytearray(enc.read_bytes())
    blob[len(blob) // 2] ^= 0x40
    tampered.write_bytes(bytes(blob))
    run = cli("keys", "decrypt", str(tampered), str(tmp_path / "out.csv"))
    assert run.exit_code == 1
    _one_error_line(run, "altered or truncated at chunk")
    assert not (tmp_path / "out.csv").exists()

    truncated = tmp_path / "truncated.enc"
    truncated.write_bytes(enc.read_bytes()[:-10])
    run = cli("keys", "decrypt", str(truncated), str(tmp_path / "out.csv"))
    assert run.exit_code == 1
    _one_error_line(run, "truncated")

    run = cli("keys", "decrypt", str(plain), str(tmp_path / "out.csv"))
    assert run.exit_code == 1
    _one_error_line(run, "not a Stockade envelope")

    run = cli("keys", "decrypt", str(tmp_path / "missing.enc"), str(tmp_path / "out.csv"))
    assert run.exit_code == 2
    _one_error_line(run, "not found")

    run = cli("keys", "encrypt", str(plain), str(tmp_path / "x.enc"), "--kek", "no-such")
    assert run.exit_code == 2
    _one_error_line(run, "'no-such' not found")
    assert not (tmp_path / "x.enc").exists()
    assert not (tmp_path / "out.csv").exists()


def test_destroyed_kek_makes_files_unreadable(database: Database, cli: Cli, tmp_path: Path) -> None:
    for kek in ("old", "new"):
        assert cli("keys", "create", kek, "--kind", "kek").exit_code == 0
        (tmp_path / f"{kek}.txt").write_text(f"under {kek}")
        run = cli(
            "keys",
            "encrypt",
            str(tmp_path / f"{kek}.txt"),
            str(tmp_path / f"{kek}.enc"),
            "--kek",
            kek,
        )
        assert run.exit_code == 0, run.stderr
    assert cli("keys", "destroy", "old", "--reason", "retired", "--yes").exit_code == 0

    run = cli("keys", "decrypt", str(tmp_path / "old.enc"), str(tmp_path / "old.out"))
    assert run.exit_code == 1
    _one_error_line(run, "key destroyed")
    assert not (tmp_path / "old.out").exists()
    run = cli(
        "keys", "encrypt", str(tmp_path / "old.txt"), str(tmp_path / "again.enc"), "--kek", "old"
    )
    assert run.exit_code == 1
    _one_error_line(run, "was destroyed")

    run = cli("keys", "decrypt", str(tmp_path / "new.enc"), str(tmp_path / "new.out"))
    assert run.exit_code == 0
    assert (tmp_path / "new.out").read_text() == "under new"
