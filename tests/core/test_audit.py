"""The audit log through its library interface, on SQLite and PostgreSQL: appends, listing,
signed checkpoints, proofs, and verification against an attacker who edits rows with SQL."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import text

from stockade.core import clock
from stockade.core.audit import (
    AuditLog,
    AuditVerification,
    parse_checkpoint,
    verify_checkpoint,
)
from stockade.core.db import Database
from stockade.core.errors import ConfigError, InvalidInput, TamperDetected
from stockade.core.keys import KeyStore, public_pem
from stockade.core.merkle import (
    EMPTY_ROOT,
    Frontier,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from stockade.core.workspace import Workspace

ORIGIN = "audit.test/log"


@pytest.fixture
def log(database: Database, tmp_path: Path) -> AuditLog:
    return AuditLog(KeyStore(tmp_path / "keys"), origin=ORIGIN)


def _fill(database: Database, log: AuditLog, count: int, *, start: int = 0) -> None:
    with database.session() as s:
        for i in range(start, start + count):
            log.append(
                s,
                actor=f"user:{'alice' if i % 2 else 'bob'}",
                action="model.register" if i % 3 else "dataset.register",
                subject=f"thing:{i}",
                details={"i": i, "note": "ünïcode ✓"},
            )


def _checkpoint(database: Database, log: AuditLog) -> str:
    with database.session() as s:
        made = log.checkpoint(s)
    assert made is not None
    return made.text


def _verify(database: Database, log: AuditLog, *externals: str) -> AuditVerification:
    with database.session() as s:
        return log.verify(s, external_checkpoints=list(externals))


def _sql(database: Database, statement: str, **params: Any) -> Any:
    with database.engine.begin() as conn:
        return conn.execute(text(statement), params)


def _raw_entry(database: Database, idx: int) -> dict[str, Any]:
    with database.engine.connect() as conn:
        raw = conn.execute(
            text("SELECT entry FROM audit_entries WHERE idx = :i"), {"i": idx}
        ).scalar_one()
    return json.loads(bytes(raw))


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _forge_entry(database: Database, idx: int, *, rewrite_leaf_hash: bool) -> None:
    """What an attacker with database access does: change the content, keep it canonical."""
    entry = _raw_entry(database, idx)
    entry["details"]["i"] = 999_999
    data = _canonical(entry)
    if rewrite_leaf_hash:
        _sql(
            database,
            "UPDATE audit_entries SET entry = :e, leaf_hash = :h WHERE idx = :i",
            e=data,
            h=leaf_hash(data),
            i=idx,
        )
    else:
        _sql(database, "UPDATE audit_entries SET entry = :e WHERE idx = :i", e=data, i=idx)


def _rewrite_head(database: Database) -> None:
    """Recompute the head from the stored leaf hashes, as a careful attacker would."""
    with database.engine.begin() as conn:
        leaves = [
            bytes(r[0])
            for r in conn.execute(text("SELECT leaf_hash FROM audit_entries ORDER BY idx"))
        ]
        head = Frontier().extend(leaves)
        conn.execute(
            text("UPDATE audit_head SET size = :s, frontier = :f WHERE id = 1"),
            {"s": head.size, "f": head.to_bytes()},
        )


def _kinds_at(result: AuditVerification) -> set[tuple[int | None, str]]:
    return {(p.index, p.kind) for p in result.problems}


# -- writing and reading ----------------------------------------------------------------


def test_entries_are_canonical_json_leaves_and_the_head_tracks_the_root(
    database: Database, log: AuditLog
) -> None:
    moment = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    with clock.frozen(moment), database.session() as s:
        assert log.size(s) == 0
        assert log.root(s) == EMPTY_ROOT
        first = log.append(
            s, actor="cli:alice", action="system.create", subject="system:fraud", details={}
        )
        second = log.append(
            s,
            actor="cli:alice",
            action="model.register",
            subject="model:scorer",
            details={"z": 1, "a": [1.5, None, True], "name": "naïve"},
        )
    assert (first.index, second.index) == (0, 1)
    assert second.timestamp == moment
    assert second.details == {"z": 1, "a": [1.5, None, True], "name": "naïve"}

    with database.engine.connect() as conn:
        rows = conn.execute(text("SELECT idx, entry, leaf_hash FROM audit_entries ORDER BY idx"))
        stored = [(r[0], bytes(r[1]), bytes(r[2])) for r in rows]
    assert stored[1][1] == (
        '{"action":"model.register","actor":"cli:alice","details":{"a":[1.5,null,true],'
        '"name":"naïve","z":1},"index":1,"previous":"' + stored[0][2].hex() + '",'
        '"subject":"model:scorer","timestamp":"2025-03-01T12:00:00.123456Z"}'
    ).encode("utf-8")
    assert json.loads(stored[0][1])["previous"] is None
    for _, data, stored_hash in stored:
        assert stored_hash == leaf_hash(data)
    with database.session() as s:
        assert log.size(s) == 2
        assert log.root(s) == tree_hash([h for _, _, h in stored])


def test_entries_filter_page_and_order(database: Database, log: AuditLog) -> None:
    _fill(database, log, 12)
    with database.session() as s:
        assert [r.index for r in log.entries(s)] == list(range(12))
        assert [r.index for r in log.entries(s, start=3, limit=4)] == [3, 4, 5, 6]
        assert [r.index for r in log.entries(s, limit=3, newest_first=True)] == [11, 10, 9]
        assert [r.index for r in log.entries(s, action="dataset.register")] == [0, 3, 6, 9]
        assert [r.index for r in log.entries(s, actor="user:alice", start=1, limit=2)] == [3, 5]
        only = log.entries(s, subject="thing:7")
        assert [(r.index, r.details) for r in only] == [(7, {"i": 7, "note": "ünïcode ✓"})]
        assert only[0].to_json()["leaf_hash"] == only[0].leaf_hash.hex()
        with pytest.raises(InvalidInput):
            log.entries(s, limit=0)
        with pytest.raises(InvalidInput):
            log.entries(s, start=-1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"actor": ""}, "actor must not be empty"),
        ({"action": ""}, "action must not be empty"),
        ({"actor": "a" * 201}, "at most 200"),
        ({"action": "a" * 101}, "at most 100"),
        ({"subject": "s" * 301}, "at most 300"),
        ({"action": "two\nlines"}, "control characters"),
        ({"subject": "bad \ud800 surrogate"}, "not valid Unicode"),
        ({"details": {"x": float("nan")}}, "not JSON"),
        ({"details": {"x": object()}}, "not JSON"),
        ({"details": {1: "int key"}}, "text keys"),
        ({"details": ["not", "an", "object"]}, "JSON object"),
        ({"details": {"blob": "x" * (300 * 1024)}}, "exceeds"),
    ],
)
def test_append_refuses_bad_input_and_writes_nothing(
    database: Database, log: AuditLog, change: dict[str, Any], message: str
) -> None:
    values: dict[str, Any] = {"actor": "a", "action": "b", "subject": "c", "details": {}}
    values.update(change)
    with database.session() as s:
        with pytest.raises(InvalidInput, match=message):
            log.append(s, **values)
        assert log.size(s) == 0
        assert log.entries(s) == []


def test_entry_commits_or_rolls_back_with_the_callers_transaction(
    database: Database, log: AuditLog
) -> None:
    with pytest.raises(RuntimeError), database.session() as s:
        log.append(s, actor="a", action="b", subject="c", details={})
        raise RuntimeError("the inventory change failed")
    with database.session() as s:
        assert log.size(s) == 0
    _fill(database, log, 1)
    with database.session() as s:
        assert log.size(s) == 1
        assert log.entries(s)[0].index == 0


def test_bad_origin_or_key_id_is_refused(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys")
    for origin in ("", "has space", "a+b", "tab\there"):
        with pytest.raises(ConfigError):
            AuditLog(keys, origin=origin)
    with pytest.raises(InvalidInput):
        AuditLog(keys, origin=ORIGIN, key_id="../escape")


def test_workspace_log_appends_and_verifies(database: Database) -> None:
    ws = Workspace.open()
    try:
        with ws.session() as s:
            ws.audit.append(s, actor="cli:alice", action="a.b", subject="x", details={})
            ws.audit.checkpoint(s)
        with ws.session() as s:
            result = ws.audit.verify(s)
        assert result.ok, result.problems
        assert ws.keys.public_key("audit") is not None
    finally:
        ws.close()


# -- checkpoints ------------------------------------------------------------------------


def test_checkpoint_is_a_c2sp_signed_note(database: Database, log: AuditLog) -> None:
    _fill(database, log, 3)
    with database.session() as s:
        made = log.checkpoint(s)
        root = log.root(s)
    assert made is not None
    lines = made.text.split("\n")
    assert lines[:4] == [ORIGIN, "3", base64.b64encode(root).decode(), ""]
    assert lines[5:] == [""]
    dash, name, signature = lines[4].split(" ")
    assert (dash, name) == ("\u2014", ORIGIN)
    blob = base64.b64decode(signature)
    assert len(blob) == 68
    raw = log.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert blob[:4] == sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    log.public_key().verify(blob[4:], made.text.split("\n\n")[0].encode() + b"\n")

    parsed = parse_checkpoint(made.text)
    assert (parsed.origin, parsed.size, parsed.root_hash) == (ORIGIN, 3, root)
    # An auditor needs only the text and the public key (object, PEM, or raw bytes).
    for key in (log.public_key(), public_pem(log.public_key()), raw):
        assert verify_checkpoint(made.text, key, origin=ORIGIN).size == 3


def test_checkpoints_only_if_grown_latest_and_list(database: Database, log: AuditLog) -> None:
    with database.session() as s:
        assert log.checkpoint(s, only_if_grown=True) is None  # nothing to sign yet
        assert log.latest_checkpoint(s) is None
    _fill(database, log, 2)
    with database.session() as s:
        first = log.checkpoint(s, only_if_grown=True)
        assert first is not None
        assert log.checkpoint(s, only_if_grown=True) is None
    _fill(database, log, 1, start=2)
    with database.session() as s:
        second = log.checkpoint(s, only_if_grown=True)
        assert second is not None
        assert second.size == 3
        latest = log.latest_checkpoint(s)
        assert latest is not None
        assert (latest.id, latest.text) == (second.id, second.text)
        assert [c.size for c in log.checkpoints(s)] == [3, 2]
        assert log.checkpoints(s, limit=1)[0].to_json()["size"] == 3


def test_altered_or_foreign_checkpoint_text_is_refused_offline(
    database: Database, log: AuditLog
) -> None:
    _fill(database, log, 4)
    note = _checkpoint(database, log)
    key = log.public_key()
    with pytest.raises(TamperDetected, match="does not verify"):
        verify_checkpoint(note.replace("\n4\n", "\n5\n", 1), key)
    with pytest.raises(TamperDetected, match="no signature by this log's key"):
        verify_checkpoint(note, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(InvalidInput, match="not a signed audit checkpoint"):
        verify_checkpoint("hello\n", key)
    with pytest.raises(InvalidInput, match="root hash"):
        parse_checkpoint(note.replace(note.split("\n")[2], "not base64!", 1))
    with pytest.raises(InvalidInput, match="for log"):
        verify_checkpoint(note, key, origin="other.example/log")
    with pytest.raises(InvalidInput, match="PEM"):
        verify_checkpoint(note, b"not a key")


# -- proofs -----------------------------------------------------------------------------


def test_inclusion_and_consistency_proofs_verify_against_signed_checkpoints(
    database: Database, log: AuditLog
) -> None:
    _fill(database, log, 7)
    old = verify_checkpoint(_checkpoint(database, log), log.public_key())
    _fill(database, log, 6, start=7)
    new = verify_checkpoint(_checkpoint(database, log), log.public_key())
    with database.session() as s:
        for index in range(13):
            proved = log.inclusion_proof(s, index)
            assert proved.root_hash == new.root_hash
            assert proved.record.index == index
            assert leaf_hash(proved.entry) == proved.record.leaf_hash
            assert verify_inclusion(proved.proof, proved.record.leaf_hash, new.root_hash)
        for index in range(7):
            proved = log.inclusion_proof(s, index, tree_size=7)
            assert verify_inclusion(proved.proof, proved.record.leaf_hash, old.root_hash)
        consistent = log.consistency_proof(s, 7)
        assert (consistent.old_root, consistent.new_root) == (old.root_hash, new.root_hash)
        assert verify_consistency(consistent.proof, old.root_hash, new.root_hash)
        for m in range(14):
            for n in range(m, 14):
                pair = log.consistency_proof(s, m, n)
                assert verify_consistency(pair.proof, pair.old_root, pair.new_root)
        as_json = log.inclusion_proof(s, 3).to_json()
        assert as_json["leaf_index"] == 3
        assert as_json["root_hash"] == new.root_hash.hex()
        assert json.loads(as_json["entry"])["index"] == 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda log, s: log.inclusion_proof(s, 5), "not in a log of 5"),
        (lambda log, s: log.inclusion_proof(s, -1), "not in a log"),
        (lambda log, s: log.inclusion_proof(s, 0, 6), "between 1 and 5"),
        (lambda log, s: log.inclusion_proof(s, 0, 0), "between 1 and 5"),
        (lambda log, s: log.consistency_proof(s, 4, 3), "old"),
        (lambda log, s: log.consistency_proof(s, 2, 6), "old"),
    ],
)
def test_proof_arguments_are_checked(
    database: Database, log: AuditLog, call: Callable[..., Any], message: str
) -> None:
    _fill(database, log, 5)
    with database.session() as s, pytest.raises(InvalidInput, match=message):
        call(log, s)


# -- tampering --------------------------------------------------------------------------


@pytest.fixture
def signed_log(database: Database, log: AuditLog) -> Iterator[AuditLog]:
    """Ten entries, a checkpoint at 6 and one at 10; verifies clean before each attack."""
    _fill(database, log, 6)
    _checkpoint(database, log)
    _fill(database, log, 4, start=6)
    _checkpoint(database, log)
    result = _verify(database, log)
    assert result.ok, result.problems
    assert (result.size, result.checkpoints_checked, result.uncovered) == (10, 2, 0)
    return log


def test_edited_entry_is_named(database: Database, signed_log: AuditLog) -> None:
    _forge_entry(database, 5, rewrite_leaf_hash=False)
    result = _verify(database, signed_log)
    assert not result.ok
    assert (5, "leaf_hash") in _kinds_at(result)
    assert {p.index for p in result.problems} - {None} == {5}
    assert (None, "checkpoint_mismatch") in _kinds_at(result)


def test_edited_entry_with_rewritten_leaf_hash_and_head_is_named(
    database: Database, signed_log: AuditLog
) -> None:
    _forge_entry(database, 4, rewrite_leaf_hash=True)
    _rewrite_head(database)
    result = _verify(database, signed_log)
    assert not result.ok
    assert (4, "altered") in _kinds_at(result)
    assert {p.index for p in result.problems} - {None} == {4}
    mismatched = [p.message for p in result.problems if p.kind == "checkpoint_mismatch"]
    assert len(mismatched) == 2  # both checkpoints cover entry 4


@pytest.mark.parametrize("size", [9, 10])  # the newest leaf alone, or inside a subtree
def test_edited_newest_entry_is_named(database: Database, log: AuditLog, size: int) -> None:
    _fill(database, log, size)
    _forge_entry(database, size - 1, rewrite_leaf_hash=True)
    result = _verify(database, log)
    assert (size - 1, "altered") in _kinds_at(result)
    assert "no longer matches the log head" in str(result.problems[0])


def test_deleted_middle_entry_is_named(database: Database, signed_log: AuditLog) -> None:
    _sql(database, "DELETE FROM audit_entries WHERE idx = 3")
    result = _verify(database, signed_log)
    assert (3, "missing") in _kinds_at(result)
    assert "entry 3 is missing" in result.problems[0].message


def test_deleted_tail_entry_is_named(database: Database, signed_log: AuditLog) -> None:
    _sql(database, "DELETE FROM audit_entries WHERE idx = 9")
    result = _verify(database, signed_log)
    assert (9, "missing") in _kinds_at(result)


def test_truncation_with_a_rewritten_head_is_caught_by_the_checkpoint(
    database: Database, signed_log: AuditLog
) -> None:
    _sql(database, "DELETE FROM audit_entries WHERE idx >= 8")
    _rewrite_head(database)
    result = _verify(database, signed_log)
    assert (8, "truncated") in _kinds_at(result)
    assert "checkpoint 2 vouches for 10 entries" in str(result.problems[0])


def test_reordered_entries_are_named(database: Database, signed_log: AuditLog) -> None:
    _sql(database, "UPDATE audit_entries SET idx = -1 WHERE idx = 2")
    _sql(database, "UPDATE audit_entries SET idx = 2 WHERE idx = 3")
    _sql(database, "UPDATE audit_entries SET idx = 3 WHERE idx = -1")
    result = _verify(database, signed_log)
    assert {(2, "misplaced"), (3, "misplaced")} <= _kinds_at(result)
    assert "entry 2 holds entry 3" in str(result.problems[0])


def test_edited_index_columns_are_named(database: Database, signed_log: AuditLog) -> None:
    _sql(database, "UPDATE audit_entries SET actor = 'someone:else' WHERE idx = 7")
    result = _verify(database, signed_log)
    assert _kinds_at(result) == {(7, "columns")}


def test_forged_checkpoint_is_detected(database: Database, signed_log: AuditLog) -> None:
    with database.engine.connect() as conn:
        note = conn.execute(text("SELECT note FROM audit_checkpoints WHERE id = 1")).scalar_one()
    forged_root = base64.b64encode(b"\x00" * 32).decode()
    forged = note.replace(note.split("\n")[2], forged_root, 1)
    _sql(database, "UPDATE audit_checkpoints SET note = :n WHERE id = 1", n=forged)
    result = _verify(database, signed_log)
    assert _kinds_at(result) == {(None, "forged_checkpoint")}
    assert "checkpoint 1 is forged or altered" in result.problems[0].message


def test_checkpoint_signed_by_another_key_is_detected(
    database: Database, signed_log: AuditLog, tmp_path: Path
) -> None:
    impostor = AuditLog(KeyStore(tmp_path / "impostor"), origin=ORIGIN)
    with database.session() as s:
        impostor.checkpoint(s)
    result = _verify(database, signed_log)
    assert _kinds_at(result) == {(None, "forged_checkpoint")}
    assert "checkpoint 3" in result.problems[0].message


def test_edited_checkpoint_columns_are_detected(database: Database, signed_log: AuditLog) -> None:
    _sql(database, "UPDATE audit_checkpoints SET size = 3 WHERE id = 1")
    result = _verify(database, signed_log)
    assert (None, "forged_checkpoint") in _kinds_at(result)
    assert "column differs from its text" in result.problems[0].message


def test_shrinking_checkpoints_are_detected(database: Database, signed_log: AuditLog) -> None:
    # Swap the two checkpoints' ids: the larger one now seems to have come first.
    _sql(database, "UPDATE audit_checkpoints SET id = 100 WHERE id = 1")
    _sql(database, "UPDATE audit_checkpoints SET id = 1 WHERE id = 2")
    _sql(database, "UPDATE audit_checkpoints SET id = 2 WHERE id = 100")
    result = _verify(database, signed_log)
    assert _kinds_at(result) == {(None, "shrunk")}
    assert "checkpoint 2 (size 6) was made after checkpoint 1 (size 10)" in str(result.problems[0])


def test_external_checkpoint_catches_a_rollback_that_erased_every_trace(
    database: Database, signed_log: AuditLog
) -> None:
    saved = _checkpoint(database, signed_log)  # kept elsewhere by an auditor
    # The attacker removes the last entries, the stored checkpoints and rewrites the head.
    _sql(database, "DELETE FROM audit_entries WHERE idx >= 7")
    _sql(database, "DELETE FROM audit_checkpoints")
    _rewrite_head(database)
    assert _verify(database, signed_log).ok  # nothing stored reveals it...
    result = _verify(database, signed_log, saved)
    assert _kinds_at(result) == {(7, "truncated")}  # ...the saved checkpoint does
    assert "external checkpoint 1 (size 10)" in result.problems[0].message

    # Writing new entries over the gap does not help either.
    _fill(database, signed_log, 5, start=7)
    result = _verify(database, signed_log, saved)
    assert _kinds_at(result) == {(None, "checkpoint_mismatch")}
    assert result.checkpoints_checked == 1


def test_external_checkpoints_that_hold_are_counted(
    database: Database, signed_log: AuditLog
) -> None:
    saved = _checkpoint(database, signed_log)
    _fill(database, signed_log, 3, start=10)
    result = _verify(database, signed_log, saved)
    assert result.ok
    assert (result.size, result.checkpoints_checked, result.uncovered) == (13, 4, 3)
    with pytest.raises(InvalidInput, match="not a signed audit checkpoint"):
        _verify(database, signed_log, "garbage")
    forged = saved.replace("\n10\n", "\n11\n")
    assert _kinds_at(_verify(database, signed_log, forged)) == {(None, "forged_checkpoint")}


def test_operations_on_a_corrupted_log_raise_tamper_detected(
    database: Database, signed_log: AuditLog
) -> None:
    _sql(database, "UPDATE audit_head SET frontier = :f WHERE id = 1", f=b"garbage")
    with database.session() as s:
        with pytest.raises(TamperDetected, match="head is corrupted"):
            signed_log.inclusion_proof(s, 1)
        with pytest.raises(TamperDetected, match="head is corrupted"):
            signed_log.consistency_proof(s, 1)
    with database.session() as s, pytest.raises(TamperDetected):
        signed_log.append(s, actor="a", action="b", subject="c", details={})
    assert (None, "head") in _kinds_at(_verify(database, signed_log))


def test_proofs_refuse_entries_that_no_longer_add_up(
    database: Database, signed_log: AuditLog
) -> None:
    _forge_entry(database, 2, rewrite_leaf_hash=False)
    _forge_entry(database, 6, rewrite_leaf_hash=True)
    with database.session() as s:
        with pytest.raises(TamperDetected, match="entry 2 no longer matches its leaf hash"):
            signed_log.inclusion_proof(s, 2)
        with pytest.raises(TamperDetected, match="do not add up to the log head"):
            signed_log.inclusion_proof(s, 0)
        with pytest.raises(TamperDetected, match="do not add up"):
            signed_log.consistency_proof(s, 3, 8)


def test_missing_rows_stop_appends_proofs_and_checkpoints(
    database: Database, signed_log: AuditLog
) -> None:
    _sql(database, "DELETE FROM audit_entries WHERE idx = 9")
    with database.session() as s, pytest.raises(TamperDetected, match="entry 9 is missing"):
        signed_log.append(s, actor="a", action="b", subject="c", details={})
    with database.session() as s, pytest.raises(TamperDetected, match="entry 9 is missing"):
        signed_log.inclusion_proof(s, 0)
    with database.session() as s, pytest.raises(TamperDetected, match="head says 10 entries"):
        signed_log.checkpoint(s)


def test_unreadable_entry_is_reported_not_crashed_on(
    database: Database, signed_log: AuditLog
) -> None:
    _sql(database, "UPDATE audit_entries SET entry = :e WHERE idx = 1", e=b"\xff not json")
    result = _verify(database, signed_log)
    assert (1, "malformed") in _kinds_at(result)
    with database.session() as s, pytest.raises(TamperDetected, match="entry 1 is not UTF-8"):
        signed_log.entries(s)


def test_missing_head_is_reported_and_blocks_appends(
    database: Database, signed_log: AuditLog
) -> None:
    _sql(database, "DELETE FROM audit_head")
    assert (None, "head") in _kinds_at(_verify(database, signed_log))
    with database.session() as s, pytest.raises(TamperDetected, match="head is missing"):
        signed_log.append(s, actor="a", action="b", subject="c", details={})


# -- scale and concurrency --------------------------------------------------------------


def test_a_log_spanning_many_batches_verifies_and_pins_edits(
    database: Database, log: AuditLog
) -> None:
    with database.session() as s:
        for i in range(2500):
            log.append(s, actor="bulk", action="event", subject=str(i), details={"i": i})
            if i + 1 in (1000, 1001, 2048):
                log.checkpoint(s)
    result = _verify(database, log)
    assert result.ok, result.problems
    assert (result.size, result.checkpoints_checked, result.uncovered) == (2500, 3, 452)
    _forge_entry(database, 1999, rewrite_leaf_hash=True)
    result = _verify(database, log)
    assert {p.index for p in result.problems} - {None} == {1999}


def test_concurrent_appends_stay_gapless(database: Database, log: AuditLog) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(name: str) -> None:
        try:
            start.wait()
            for i in range(50):
                with database.session() as s:
                    log.append(s, actor=name, action="write", subject=str(i), details={})
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with database.session() as s:
        records = log.entries(s, limit=1000)
        assert log.size(s) == 100
    assert [r.index for r in records] == list(range(100))
    assert sorted(r.actor for r in records) == ["w0"] * 50 + ["w1"] * 50
    _checkpoint(database, log)
    result = _verify(database, log)
    assert result.ok, result.problems
    assert result.size == 100


def test_values_of_the_wrong_type_are_reported_not_crashed_on(tmp_path: Path) -> None:
    # SQLite keeps whatever type an attacker writes into a column; PostgreSQL refuses it.
    database = Database(f"sqlite:///{tmp_path / 'typeless.db'}")
    database.upgrade()
    log = AuditLog(KeyStore(tmp_path / "keys"), origin=ORIGIN)
    try:
        _fill(database, log, 6)
        _sql(database, "UPDATE audit_entries SET entry = 'plain text' WHERE idx = 1")
        _sql(database, "UPDATE audit_entries SET leaf_hash = 'text' WHERE idx = 2")
        _sql(database, "UPDATE audit_entries SET at = 'not a time' WHERE idx = 3")
        result = _verify(database, log)
        assert {(1, "malformed"), (2, "leaf_hash"), (3, "columns")} <= _kinds_at(result)
        _sql(database, "UPDATE audit_head SET size = 'many' WHERE id = 1")
        assert (None, "head") in _kinds_at(_verify(database, log))
        with database.session() as s, pytest.raises(TamperDetected, match="head is corrupted"):
            log.inclusion_proof(s, 0)
        _sql(
            database,
            "INSERT INTO audit_entries (idx, entry, leaf_hash, action, subject, actor, at) "
            "VALUES ('x', x'00', x'00', 'a', 'b', 'c', '2025-01-01 00:00:00.000000')",
        )
        assert (None, "malformed") in _kinds_at(_verify(database, log))
    finally:
        database.dispose()
