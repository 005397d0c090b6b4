"""The scan engine: content detection and dispatch, nested members within limits, parser
crashes as could-not-inspect errors, directory walking and the process pool."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import pytest

from stockade.core.findings import Severity
from stockade.model.scan import engine
from stockade.model.scan.interface import Blob, Limits, ScanContext


class Boxes:
    """A toy container: `BOX` then members separated by `|`."""

    name: ClassVar[str] = "boxes"

    def detect(self, blob: Blob) -> bool:
        return bytes(blob.data[:3]) == b"BOX"

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        for i, part in enumerate(bytes(blob.data[3:]).split(b"|")):
            ctx.scan_member(blob, f"m{i}", part)


class Alarm:
    """Reports BAD, then crashes on CRASH after it."""

    name: ClassVar[str] = "alarm"

    def detect(self, blob: Blob) -> bool:
        return bytes(blob.data[:3]) in {b"BAD", b"CRA"}

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        data = bytes(blob.data)
        if b"BAD" in data:
            ctx.report(blob, "STK-T-001", "bad", Severity.CRITICAL, offset=data.index(b"BAD"))
        if b"CRASH" in data:
            raise ValueError("parser fell over")


SCANNERS = [Boxes(), Alarm()]


def test_nested_members_are_dispatched_and_located() -> None:
    found = engine.scan_bytes(b"BOXok|BAD|BOXBAD", "m.box", scanners=SCANNERS)
    bad = [f for f in found if f.rule_id == "STK-T-001"]
    assert [f.location.member for f in bad] == ["m1", "m2!/m0"]
    assert all(f.location.path == "m.box" for f in bad)
    unknown = [f for f in found if f.rule_id == engine.UNRECOGNISED_RULE]
    assert [f.location.member for f in unknown] == ["m0"]
    assert unknown[0].severity is Severity.INFO


def test_a_crashing_parser_is_an_error_and_keeps_earlier_findings() -> None:
    found = engine.scan_bytes(b"BAD then CRASH", "x", scanners=SCANNERS)
    assert [f.rule_id for f in found if not f.is_error] == ["STK-T-001"]
    errors = [f for f in found if f.is_error]
    assert len(errors) == 1
    assert "parser fell over" in errors[0].detail


def test_depth_limit_is_an_error_not_a_recursion() -> None:
    deep = b"BOX" * 5 + b"BAD"
    found = engine.scan_bytes(deep, "d", scanners=SCANNERS, limits=Limits(max_depth=3))
    assert any(f.is_error and "deeper than 3" in f.detail for f in found)
    assert not any(f.rule_id == "STK-T-001" for f in found)


def test_total_unpacked_bytes_are_bounded() -> None:
    data = b"BOX" + b"|".join([b"x" * 100] * 10)
    found = engine.scan_bytes(data, "t", scanners=SCANNERS, limits=Limits(max_total_bytes=350))
    assert any(f.is_error and "bytes unpacked" in f.detail for f in found)


def test_files_directories_links_and_missing_paths(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"BAD")
    (folder / "sub" / "b.bin").write_bytes(b"BOXBAD")
    (folder / "empty").write_bytes(b"")
    (folder / "link").symlink_to(folder / "a.bin")
    listed = list(engine.iter_files([folder, tmp_path / "absent"]))
    assert listed == [
        (str(folder / "a.bin"), None),
        (str(folder / "empty"), None),
        (str(folder / "link"), "is a symbolic link; not followed"),
        (str(folder / "sub" / "b.bin"), None),
        (str(tmp_path / "absent"), "does not exist"),
    ]


def test_scan_file_maps_large_files_and_reports_unreadable_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.box"
    path.write_bytes(b"BOX" + b"0" * (4 << 20) + b"|BAD")
    found = engine.scan_file(path, scanners=SCANNERS)
    assert [f.location.member for f in found if f.rule_id == "STK-T-001"] == ["m1"]
    if os.geteuid() != 0:  # root reads anything
        path.chmod(0)
        assert engine.scan_file(path, scanners=SCANNERS)[0].is_error


@pytest.mark.parametrize("jobs", [1, 2])
def test_scan_paths_is_the_same_serial_and_parallel(tmp_path: Path, jobs: int) -> None:
    for i in range(6):
        (tmp_path / f"f{i}.bin").write_bytes(b"plain text, not a model")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    result = engine.scan_paths([tmp_path], jobs=jobs)
    assert result.scanner == engine.SCANNER_NAME
    assert len([f for f in result.findings if f.rule_id == engine.UNRECOGNISED_RULE]) == 6
    assert [f.location.path for f in result.errors] == [str(tmp_path / "gone")]
