"""`stockade audit` as a user types it: log, verify (exit 0/1/2), checkpoint, prove,
consistency and public-key, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from stockade.core.audit import verify_checkpoint
from stockade.core.db import Database
from stockade.core.merkle import (
    ConsistencyProof,
    InclusionProof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from stockade.core.workspace import Workspace

from .conftest import Run

Cli = Callable[..., Run]


def _record(count: int, *, start: int = 0) -> None:
    ws = Workspace.open()
    try:
        with ws.session() as s:
            for i in range(start, start + count):
                ws.audit.append(
                    s,
                    actor="cli:alice" if i % 2 else "cli:bob",
                    action="model.register" if i % 2 else "system.create",
                    subject=f"thing:{i}",
                    details={"i": i},
                )
    finally:
        ws.close()


def _sql(database: Database, statement: str, **params: object) -> None:
    with database.engine.begin() as conn:
        conn.execute(text(statement), params)


def _one_error_line(run: Run, fragment: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), run.stderr
    assert fragment in lines[0], run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_log_lists_filters_and_pages(database: Database, cli: Cli) -> None:
    _record(6)
    listed = cli("audit", "log", "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    rows = listed.json()
    assert [r["index"] for r in rows] == list(range(6))
    assert rows[1]["actor"] == "cli:alice"
    assert rows[1]["details"] == {"i": 1}
    filtered = cli("audit", "log", "--action", "model.register", "--format", "json")
    assert [r["index"] for r in filtered.json()] == [1, 3, 5]
    by_actor = cli("audit", "log", "--actor", "cli:bob", "--newest", "--format", "json")
    assert [r["index"] for r in by_actor.json()] == [4, 2, 0]
    paged = cli("audit", "log", "--offset", "2", "--limit", "2", "--format", "json")
    assert [r["index"] for r in paged.json()] == [2, 3]
    subject = cli("audit", "log", "--subject", "thing:4", "--format", "json")
    assert [r["index"] for r in subject.json()] == [4]
    table = cli("audit", "log")
    assert table.exit_code == 0
    assert "system.create" in table.stdout
    assert "thing:5" in table.stdout
    assert cli("audit", "log", "--limit", "0").exit_code == 2


def test_verify_exit_0_when_intact(database: Database, cli: Cli) -> None:
    _record(4)
    assert cli("audit", "checkpoint").exit_code == 0
    _record(2, start=4)
    run = cli("audit", "verify")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.stdout.strip() == (
        "audit log intact: 6 entries, 1 checkpoints checked, 2 entries after the latest checkpoint"
    )
    as_json = cli("audit", "verify", "--format", "json")
    assert as_json.exit_code == 0
    assert as_json.json()["ok"] is True
    assert as_json.json()["size"] == 6


def test_verify_exit_1_prints_one_line_per_problem(database: Database, cli: Cli) -> None:
    _record(6)
    assert cli("audit", "checkpoint").exit_code == 0
    _sql(database, "DELETE FROM audit_entries WHERE idx = 2")
    _sql(database, "UPDATE audit_entries SET actor = 'cli:mallory' WHERE idx = 4")
    run = cli("audit", "verify")
    assert run.exit_code == 1
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("TAMPERING DETECTED")
    assert "entry 2 is missing [missing]" in lines
    assert any(line.startswith("entry 4's actor") for line in lines)
    assert any("checkpoint 1 does not match the log" in line for line in lines)
    assert "Traceback" not in run.stdout + run.stderr
    as_json = cli("audit", "verify", "--format", "json")
    assert as_json.exit_code == 1
    kinds = {(p["index"], p["kind"]) for p in as_json.json()["problems"]}
    assert {(2, "missing"), (4, "columns")} <= kinds


def test_verify_exit_2_when_it_cannot_verify(database: Database, cli: Cli, tmp_path: Path) -> None:
    _record(2)
    run = cli("audit", "verify", "--checkpoint", str(tmp_path / "absent.txt"))
    assert run.exit_code == 2
    _one_error_line(run, "cannot read checkpoint file")
    junk = tmp_path / "junk.txt"
    junk.write_text("not a checkpoint\n", encoding="utf-8")
    run = cli("audit", "verify", "--checkpoint", str(junk))
    assert run.exit_code == 2
    _one_error_line(run, "not a signed audit checkpoint")
    # Stored checkpoints cannot be checked without the log's public key.
    assert cli("audit", "checkpoint").exit_code == 0
    for path in (Path.cwd() / "home" / "keys" / "signing").glob("audit*"):
        path.unlink()
    run = cli("audit", "verify")
    assert run.exit_code == 2
    _one_error_line(run, "public key 'audit' not found")


def test_verify_exit_2_without_a_database(cli: Cli) -> None:
    run = cli("audit", "verify")
    assert run.exit_code == 2
    _one_error_line(run, "database")


def test_checkpoint_out_file_catches_a_later_rollback(
    database: Database, cli: Cli, tmp_path: Path
) -> None:
    _record(5)
    saved = tmp_path / "checkpoint.txt"
    made = cli("audit", "checkpoint", "--out", str(saved))
    assert made.exit_code == 0, made.stderr
    assert saved.read_text(encoding="utf-8") == made.stdout
    assert made.stdout.splitlines()[1] == "5"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    bad_dir = cli("audit", "checkpoint", "--out", str(tmp_path / "no" / "such" / "dir.txt"))
    assert bad_dir.exit_code == 2
    _one_error_line(bad_dir, "does not exist")
    assert cli("audit", "verify", "--format", "json").json()["checkpoints_checked"] == 1

    # Roll the log back and erase the stored checkpoints and head, as an attacker would.
    _sql(database, "DELETE FROM audit_entries WHERE idx >= 3")
    _sql(database, "DELETE FROM audit_checkpoints")
    _sql(database, "DELETE FROM audit_head")
    run = cli("audit", "verify", "--checkpoint", str(saved))
    assert run.exit_code == 1
    assert any("external checkpoint 1 (size 5)" in line for line in run.stdout.splitlines())
    assert any("the log head is missing" in line for line in run.stdout.splitlines())


def test_checkpoint_if_grown(database: Database, cli: Cli) -> None:
    _record(1)
    assert cli("audit", "checkpoint", "--if-grown").stdout.startswith("stockade.local/audit\n1\n")
    again = cli("audit", "checkpoint", "--if-grown")
    assert again.exit_code == 0
    assert "nothing signed" in again.stdout


def test_prove_and_consistency_verify_offline(database: Database, cli: Cli) -> None:
    _record(5)
    old = cli("audit", "checkpoint").stdout
    _record(4, start=5)
    new = cli("audit", "checkpoint").stdout
    pem = cli("audit", "public-key")
    assert pem.exit_code == 0
    assert pem.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    old_cp = verify_checkpoint(old, pem.stdout)
    new_cp = verify_checkpoint(new, pem.stdout)

    proved = cli("audit", "prove", "3")
    assert proved.exit_code == 0, proved.stderr
    body = proved.json()
    assert (body["leaf_index"], body["tree_size"]) == (3, 9)
    assert body["root_hash"] == new_cp.root_hash.hex()
    assert leaf_hash(body["entry"].encode()).hex() == body["leaf_hash"]
    assert json.loads(body["entry"])["details"] == {"i": 3}
    proof = InclusionProof(3, 9, tuple(bytes.fromhex(h) for h in body["hashes"]))
    assert verify_inclusion(proof, bytes.fromhex(body["leaf_hash"]), new_cp.root_hash)

    at_old = cli("audit", "prove", "3", "--size", "5").json()
    proof = InclusionProof(3, 5, tuple(bytes.fromhex(h) for h in at_old["hashes"]))
    assert verify_inclusion(proof, bytes.fromhex(at_old["leaf_hash"]), old_cp.root_hash)

    for args in (("5",), ("5", "9")):
        run = cli("audit", "consistency", *args)
        assert run.exit_code == 0, run.stderr
        body = run.json()
        assert (body["old_root"], body["new_root"]) == (
            old_cp.root_hash.hex(),
            new_cp.root_hash.hex(),
        )
        proof = ConsistencyProof(5, 9, tuple(bytes.fromhex(h) for h in body["hashes"]))
        assert verify_consistency(proof, old_cp.root_hash, new_cp.root_hash)

    beyond = cli("audit", "prove", "9")
    assert beyond.exit_code == 2
    _one_error_line(beyond, "entry 9 is not in a log of 9 entries")
    backwards = cli("audit", "consistency", "6", "4")
    assert backwards.exit_code == 2
    _one_error_line(backwards, "sizes must satisfy")


def test_corrupted_log_gives_one_clear_line_and_exit_1(database: Database, cli: Cli) -> None:
    _record(3)
    _sql(database, "UPDATE audit_head SET frontier = :f WHERE id = 1", f=b"\x00" * 7)
    run = cli("audit", "prove", "1")
    assert run.exit_code == 1
    _one_error_line(run, "the audit log head is corrupted")
    _sql(database, "UPDATE audit_entries SET entry = :e WHERE idx = 0", e=b"{broken")
    run = cli("audit", "log")
    assert run.exit_code == 1
    _one_error_line(run, "audit entry 0 is not UTF-8 JSON")
    run = cli("audit", "verify")
    assert run.exit_code == 1
    assert "Traceback" not in run.stdout + run.stderr
    assert "entry 0 is not UTF-8 JSON [malformed]" in run.stdout.splitlines()
