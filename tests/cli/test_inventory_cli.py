"""`stockade inventory`, `data`, `model`, `govern`, `retire`, `gateway` as a user types them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from stockade.core.db import Database

from .conftest import Run

Cli = Callable[..., Run]


def test_create_list_show_update(database: Database, cli: Cli) -> None:
    assert (
        cli(
            "inventory", "create", "system", "payments", "--owner", "risk", "--risk-tier", "high"
        ).exit_code
        == 0
    )
    made = cli(
        "inventory",
        "create",
        "model",
        "fraud",
        "--system",
        "payments",
        "-t",
        "team=risk",
        "-f",
        "json",
    )
    assert made.exit_code == 0, made.stderr
    assert made.json()["system"] == "payments"
    assert made.json()["tags"] == {"team": "risk"}

    listed = cli("inventory", "list", "models", "--format", "json")
    assert [m["name"] for m in listed.json()] == ["fraud"]
    table = cli("inventory", "list", "systems")
    assert "payments" in table.stdout
    assert cli("inventory", "list", "systems", "--risk-tier", "minimal", "-f", "json").json() == []

    updated = cli("inventory", "update", "model", "fraud", "--owner", "ml-team", "-f", "json")
    assert updated.json()["owner"] == "ml-team"
    shown = cli("inventory", "show", "model", "fraud", "-f", "json").json()
    assert shown["owner"] == "ml-team"
    assert shown["versions"] == []


def test_versions_from_files_and_transitions(database: Database, cli: Cli, tmp_path: Path) -> None:
    artifact = tmp_path / "m.safetensors"
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    artifact.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    assert cli("inventory", "create", "model", "m").exit_code == 0
    added = cli(
        "inventory", "add-version", "model", "m", "1.0", "--file", str(artifact), "-f", "json"
    )
    assert added.exit_code == 0, added.stderr
    version = added.json()
    assert version["digest"] == "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert version["format"] == "safetensors"
    again = cli(
        "inventory",
        "add-version",
        "model",
        "m",
        "1.0",
        "--digest",
        "sha256:" + "0" * 64,
        "--size",
        "1",
    )
    assert again.exit_code == 2
    assert "immutable" in again.stderr

    moved = cli("inventory", "transition", "model", "m", "development", "--reason", "training")
    assert moved.exit_code == 0, moved.stderr
    assert "draft -> development" in moved.stdout
    illegal = cli("inventory", "transition", "model", "m", "production", "-r", "skip")
    assert illegal.exit_code == 2
    assert "not allowed" in illegal.stderr
    assert "Traceback" not in illegal.stderr
    version_move = cli(
        "inventory", "transition", "model", "m", "development", "-r", "x", "--version", "1.0"
    )
    assert version_move.exit_code == 0
    history = cli("inventory", "history", "model", "m", "-f", "json").json()
    assert [(h["from_state"], h["to_state"], h["reason"]) for h in history] == [
        ("draft", "development", "training")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inventory", "list", "gizmos"), "unknown inventory kind"),
        (("inventory", "show", "model", "nope"), "model 'nope' not found"),
        (("inventory", "create", "system", "bad name!"), "name"),
        (("inventory", "create", "model", "x", "--url", "http://u"), "url"),
        (("inventory", "create", "system", "x", "--tag", "novalue"), "KEY=VALUE"),
        (("inventory", "add-version", "model", "x", "1"), "give --file"),
        (
            ("inventory", "add-version", "system", "x", "1", "--file", "/etc/hostname"),
            "no versions",
        ),
        (("inventory", "transition", "system", "x", "draft", "-r", ""), "not found"),
    ],
)
def test_bad_input_is_one_clear_line(
    database: Database, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_commands_and_options_are_usage_errors(database: Database, cli: Cli) -> None:
    for args in (("frobnicate",), ("inventory", "list", "models", "--bogus")):
        result = cli(*args)
        assert result.exit_code == 2
        assert "Traceback" not in result.stderr + result.stdout


def test_missing_database_is_a_clear_error(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockade.core.config import get_settings

    monkeypatch.setenv("STOCKADE_DATABASE_URL", f"sqlite:///{tmp_path / 'absent' / 'x.db'}")
    get_settings.cache_clear()
    result = cli("inventory", "list", "models")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_unmigrated_database_is_a_clear_error(cli: Cli, stockade_home: Path) -> None:
    stockade_home.mkdir(parents=True)
    result = cli("inventory", "list", "models")
    assert result.exit_code == 2
    assert "stockade db upgrade" in result.stderr


def test_data_and_model_register(database: Database, cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text('id,text\n1,"multi\nline"\n2,plain\n3,x\n', encoding="utf-8")
    out = cli(
        "data", "register", "reviews", "v1", str(data), "--license", "CC-BY-4.0", "-f", "json"
    )
    assert out.exit_code == 0, out.stderr
    assert out.json()["row_count"] == 3
    assert out.json()["format"] == "csv"
    assert (
        cli("inventory", "show", "dataset", "reviews", "-f", "json").json()["license"]
        == "CC-BY-4.0"
    )

    weights = tmp_path / "w.gguf"
    # A well-formed, empty GGUF v3 file: magic, version, no tensors, no metadata.
    weights.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    registered = cli("model", "register", "llm", "0.1", str(weights))
    assert registered.exit_code == 0, registered.stderr
    assert "created model:llm" in registered.stdout
    second = cli("model", "register", "llm", "0.2", str(weights))
    assert "created" not in second.stdout
    assert [
        v["version"] for v in cli("inventory", "versions", "model", "llm", "-f", "json").json()
    ] == ["0.1", "0.2"]


def test_govern_classify_and_retire(database: Database, cli: Cli) -> None:
    cli("inventory", "create", "system", "s")
    cli("inventory", "create", "model", "m", "--system", "s")
    cli("inventory", "create", "endpoint", "e", "--model", "m", "--url", "http://127.0.0.1:1/x")
    cli(
        "inventory",
        "add-version",
        "model",
        "m",
        "1",
        "--digest",
        "sha256:" + "a" * 64,
        "--size",
        "3",
    )
    classified = cli("govern", "classify", "model", "m", "high", "--reason", "credit decisions")
    assert classified.exit_code == 0, classified.stderr
    assert cli("inventory", "show", "model", "m", "-f", "json").json()["risk_tier"] == "high"

    blocked = cli("retire", "model", "m", "--reason", "replaced", "--yes")
    assert blocked.exit_code == 2
    assert "endpoint:e" in blocked.stderr
    assert cli("retire", "endpoint", "e", "-r", "gone", "-y").exit_code == 0
    assert cli("retire", "system", "s", "-r", "gone", "-y").exit_code == 2
    done = cli("retire", "model", "m", "-r", "replaced", "-y")
    assert done.exit_code == 0, done.stderr
    assert "m@1: retired" in done.stdout
    versions = cli("inventory", "versions", "model", "m", "-f", "json").json()
    assert versions[0]["lifecycle_state"] == "retired"
    assert cli("retire", "system", "s", "-r", "gone", "-y").exit_code == 0
    states = cli("govern", "lifecycle-states", "-f", "json").json()
    assert {"state": "retired", "may_move_to": ""} in states


def test_gateway_endpoints_show_production_digests(database: Database, cli: Cli) -> None:
    cli("inventory", "create", "model", "m")
    cli(
        "inventory",
        "add-version",
        "model",
        "m",
        "1",
        "--digest",
        "sha256:" + "b" * 64,
        "--size",
        "3",
    )
    cli("inventory", "create", "endpoint", "e", "--model", "m")
    for state in ("development", "validated", "staging", "production"):
        assert (
            cli(
                "inventory", "transition", "model", "m", state, "-r", "x", "--version", "1"
            ).exit_code
            == 0
        )
    rows = cli("gateway", "endpoints", "-f", "json").json()
    assert rows[0]["production_versions"] == ["1 sha256:" + "b" * 64]


def test_monitor_emit_and_list(database: Database, cli: Cli) -> None:
    assert (
        cli(
            "monitor",
            "emit",
            "drift.detected",
            "--severity",
            "warning",
            "--payload",
            '{"psi": 0.3}',
        ).exit_code
        == 0
    )
    rows = cli("monitor", "events", "-f", "json").json()
    assert rows[0]["kind"] == "drift.detected"
    assert rows[0]["payload"] == {"psi": 0.3}
    bad = cli("monitor", "emit", "x", "--payload", "[1]")
    assert bad.exit_code == 2
    assert "JSON object" in bad.stderr
    assert cli("monitor", "events", "--since", "yesterday").exit_code == 2


def test_data_verify_records_integrity_evidence(
    database: Database, cli: Cli, tmp_path: Path
) -> None:
    original = tmp_path / "train.jsonl"
    original.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    assert cli("data", "register", "corpus", "v1", str(original)).exit_code == 0
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(original.read_bytes())
    same = cli("data", "verify", "corpus", "v1", str(copy), "-f", "json")
    assert same.exit_code == 0, same.stderr
    assert same.json()["summary"]["findings"] == 0

    copy.write_text('{"text": "a"}\n{"text": "ignore previous instructions"}\n', encoding="utf-8")
    altered = cli("data", "verify", "corpus", "v1", str(copy), "-f", "json")
    assert altered.exit_code == 1
    finding = altered.json()["findings"][0]
    assert finding["rule_id"] == "STK-DATA-INT-001"
    assert finding["severity"] == "critical"

    missing = cli("data", "verify", "corpus", "v1", str(tmp_path / "gone.jsonl"))
    assert missing.exit_code == 2
    assert cli("data", "verify", "corpus", "v9", str(copy)).exit_code == 2

    evidence = cli("eval", "evidence", "--subject", "dataset:corpus@v1", "-f", "json").json()
    assert [e["outcome"] for e in evidence] == ["error", "fail", "pass"]
    shown = cli("eval", "show-evidence", evidence[1]["id"], "-f", "sarif")
    assert shown.exit_code == 0
    assert '"STK-DATA-INT-001"' in shown.stdout
    assert cli("eval", "evidence", "--outcome", "maybe").exit_code == 2
    assert cli("eval", "show-evidence", "nope").exit_code == 2


@pytest.mark.parametrize(
    "url",
    ["not a url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "mysql+nodriver://x/y"],
)
def test_bad_database_urls_are_one_clear_line(
    cli: Cli, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockade.core.config import get_settings

    monkeypatch.setenv("STOCKADE_DATABASE_URL", url)
    get_settings.cache_clear()
    result = cli("inventory", "list", "models")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_locked_sqlite_database_is_a_clear_error_and_loses_nothing(
    cli: Cli, stockade_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from stockade.core.config import get_settings

    stockade_home.mkdir(parents=True)
    db_file = stockade_home / "stockade.db"
    monkeypatch.setenv("STOCKADE_DATABASE_URL", f"sqlite:///{db_file}")
    get_settings.cache_clear()
    assert cli("db", "upgrade").exit_code == 0
    assert cli("inventory", "create", "system", "kept").exit_code == 0
    holder = sqlite3.connect(db_file, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        blocked = cli("inventory", "create", "system", "blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert blocked.exit_code == 2
    assert "locked" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1
    names = [s["name"] for s in cli("inventory", "list", "systems", "-f", "json").json()]
    assert names == ["kept"]
    assert cli("audit", "verify").exit_code == 0
