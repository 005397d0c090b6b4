"""`stockade model scan` and `stockade model register` as a user runs them: exit codes,
report formats, and the scan kept as evidence on the registered version."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stockade.core.db import Database

from ..cli.conftest import Run

Cli = Callable[..., Run]


class _Payload:
    """Pickles as a call to os.system; the bytes are only scanned, never loaded."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo stockade-test",))


def _corpus(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {
        "evil": folder / "evil.pkl",
        "array": folder / "weights.npy",
        "state": folder / "state.pkl",
    }
    files["evil"].write_bytes(pickle.dumps({"model": _Payload()}, protocol=4))
    np.save(files["array"], np.arange(12, dtype=np.float32).reshape(3, 4))
    files["state"].write_bytes(pickle.dumps({"w": [1.0, 2.0], "b": 0.5}, protocol=2))
    return files


def test_scan_exit_codes_and_formats(cli: Cli, tmp_path: Path) -> None:
    files = _corpus(tmp_path / "m")
    clean = cli("model", "scan", str(files["array"]), str(files["state"]))
    assert clean.exit_code == 0, clean.stdout
    flagged = cli("model", "scan", str(tmp_path / "m"), "-f", "json")
    assert flagged.exit_code == 1
    report = flagged.json()
    critical = [f for f in report["findings"] if f["severity"] == "critical"]
    assert critical
    assert all(f["location"]["path"] == str(files["evil"]) for f in critical)
    assert any("system" in (f["snippet"] + f["detail"]) for f in critical)
    assert cli("model", "scan", str(files["evil"]), "--fail-on", "critical").exit_code == 1
    sarif = cli("model", "scan", str(files["evil"]), "-f", "sarif", "-o", str(tmp_path / "r.sarif"))
    assert sarif.exit_code == 1
    assert json.loads((tmp_path / "r.sarif").read_text())["version"] == "2.1.0"
    missing = cli("model", "scan", str(tmp_path / "absent.pt"))
    assert missing.exit_code == 2


def test_truncated_file_is_exit_2_unless_already_flagged(cli: Cli, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(pickle.dumps(list(range(100)), protocol=4)[:-40])
    assert cli("model", "scan", str(broken)).exit_code == 2
    evil_then_broken = tmp_path / "evil-broken.pkl"
    evil_then_broken.write_bytes(pickle.dumps(_Payload(), protocol=4)[:-1] + b"\x80\x04garbage")
    result = cli("model", "scan", str(evil_then_broken), "-f", "json")
    assert result.exit_code == 2  # could not be fully parsed: fail closed
    assert any(f["severity"] == "critical" for f in result.json()["findings"])


def test_register_keeps_the_scan_as_evidence(database: Database, cli: Cli, tmp_path: Path) -> None:
    files = _corpus(tmp_path / "m")
    ok = cli("model", "register", "clean-model", "1.0", str(files["array"]))
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert "scan: pass" in ok.stdout
    bad = cli("model", "register", "bad-model", "1.0", str(files["evil"]), "-f", "json")
    assert bad.exit_code == 1
    assert bad.json()["scan"]["outcome"] == "fail"
    evidence = cli("eval", "evidence", "--check", "model.scan", "-f", "json").json()
    by_subject = {e["subject"]: e for e in evidence}
    assert by_subject["model:clean-model@1.0"]["outcome"] == "pass"
    assert by_subject["model:bad-model@1.0"]["outcome"] == "fail"
    digest = cli("inventory", "versions", "model", "bad-model", "-f", "json").json()[0]["digest"]
    assert by_subject["model:bad-model@1.0"]["input_digest"] == digest
