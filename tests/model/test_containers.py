"""Container scanners: zip (with the tricks loaders accept and zipfile refuses), tar, 7z and
compressed streams. Benign archives come from the stdlib, py7zr and joblib; malicious ones
are built byte by byte and carry a stand-in payload or a pickle that is only ever scanned.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import joblib
import lz4.frame
import numpy as np
import py7zr
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from stockade.core.findings import Finding, Severity
from stockade.model.scan import engine
from stockade.model.scan.formats import compressed, sevenzip, tar, torch_legacy, torchscript
from stockade.model.scan.formats import numpy as npy
from stockade.model.scan.formats import pickle as pickle_format
from stockade.model.scan.formats import zip as zip_format
from stockade.model.scan.interface import Blob, Limits, ScanContext

PAYLOAD = b"PAYLOAD: stand-in for code that runs on load"


class Payload:
    """A stand-in format: anything starting with PAYLOAD is critical."""

    name: ClassVar[str] = "payload"

    def detect(self, blob: Blob) -> bool:
        return bytes(memoryview(blob.data)[:7]) == b"PAYLOAD"

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        ctx.report(blob, "STK-TEST-001", "payload", Severity.CRITICAL)


SCANNERS = [
    zip_format.SCANNER,
    tar.SCANNER,
    sevenzip.SCANNER,
    compressed.SCANNER,
    torch_legacy.SCANNER,
    npy.SCANNER,
    torchscript.SCANNER,
    pickle_format.SCANNER,
    Payload(),
]


class Evil:
    """Pickles to a call of os.system; the bytes are scanned, never loaded."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo owned",))


EVIL_PICKLE = pickle.dumps(Evil(), protocol=2)


def scan(data: bytes | memoryview, *, limits: Limits | None = None) -> list[Finding]:
    return engine.scan_bytes(data, "artifact", scanners=SCANNERS, limits=limits)


def serious(found: list[Finding]) -> list[Finding]:
    """What fails a scan at the default threshold: medium and above, and errors."""
    return [f for f in found if f.is_error or f.severity >= Severity.MEDIUM]


def rules(found: list[Finding]) -> set[str]:
    return {f.rule_id for f in found}


def payload_members(found: list[Finding]) -> list[str | None]:
    return [f.location.member for f in found if f.rule_id == "STK-TEST-001"]


def errors(found: list[Finding]) -> list[str]:
    return [f.detail for f in found if f.is_error]


# -- a zip writer that can lie ---------------------------------------------------------------


@dataclass
class Entry:
    name: str
    data: bytes
    method: int = 0
    flags: int = 0
    crc: int | None = None
    local_name: str | None = None
    local_method: int | None = None
    local_flags: int | None = None
    descriptor: bool = False  # sizes after the data (bit 3), zeros in the local header


def deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def local_header(
    name: str, method: int, flags: int, crc: int, csize: int, usize: int, extra: bytes = b""
) -> bytes:
    raw = name.encode()
    return (
        struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04",
            20,
            flags,
            method,
            0,
            0x21,
            crc,
            csize,
            usize,
            len(raw),
            len(extra),
        )
        + raw
        + extra
    )


def central_record(
    name: str, method: int, flags: int, crc: int, csize: int, usize: int, offset: int
) -> bytes:
    raw = name.encode()
    return (
        struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            20,
            20,
            flags,
            method,
            0,
            0x21,
            crc,
            csize,
            usize,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + raw
    )


def end_record(count: int, cd_size: int, cd_offset: int) -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_offset, 0)


def build_zip(entries: list[Entry], *, directory: bool = True) -> bytes:
    out = bytearray()
    records: list[bytes] = []
    for e in entries:
        local_method = e.method if e.local_method is None else e.local_method
        body = deflate(e.data) if local_method == 8 else e.data
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        flags = e.flags if e.local_flags is None else e.local_flags
        offset = len(out)
        if e.descriptor:
            out += local_header(e.local_name or e.name, local_method, flags | 8, 0, 0, 0)
            out += body + struct.pack("<4sIII", b"PK\x07\x08", crc, len(body), len(e.data))
        else:
            out += local_header(
                e.local_name or e.name, local_method, flags, crc, len(body), len(e.data)
            )
            out += body
        records.append(
            central_record(e.name, e.method, e.flags, crc, len(body), len(e.data), offset)
        )
    if directory:
        directory_bytes = b"".join(records)
        out += directory_bytes + end_record(len(records), len(directory_bytes), len(out))
    return bytes(out)


def stdlib_zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return sink.getvalue()


# -- benign archives written by real libraries -----------------------------------------------


@pytest.fixture(scope="module")
def estimator() -> RandomForestClassifier:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4))
    labels = (features[:, 0] > 0).astype(int)
    return RandomForestClassifier(n_estimators=4, random_state=0).fit(features, labels)


@pytest.mark.parametrize(
    "compress", [0, 3, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3), ("lzma", 3), ("lz4", 3)]
)
def test_joblib_dumps_of_a_fitted_estimator_are_clean(
    tmp_path: Path, estimator: RandomForestClassifier, compress: object
) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump(estimator, path, compress=compress)
    found = engine.scan_file(path, scanners=SCANNERS)
    assert serious(found) == []
    if compress != 0:
        streams = {f.location.member for f in found} | {None}
        assert all(m is None or m.startswith("<") for m in streams)


def test_joblib_streams_are_unpacked_and_the_pickle_inside_is_inspected(tmp_path: Path) -> None:
    path = tmp_path / "evil.joblib"
    for method in ("zlib", "gzip", "bz2", "xz", "lzma", "lz4"):
        joblib.dump(Evil(), path, compress=(method, 3))
        found = engine.scan_file(path, scanners=SCANNERS)
        critical = [f for f in found if f.severity is Severity.CRITICAL]
        assert critical, method
        assert critical[0].location.member.startswith("<"), method


def test_joblib_lr_with_gzip_extension(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    model = LogisticRegression().fit(rng.normal(size=(40, 3)), np.arange(40) % 2)
    path = tmp_path / "lr.joblib.gz"
    joblib.dump(model, path)
    assert serious(engine.scan_file(path, scanners=SCANNERS)) == []


def test_stdlib_zips_with_every_method_are_clean(tmp_path: Path) -> None:
    array = io.BytesIO()
    np.save(array, np.arange(12, dtype="float32").reshape(3, 4))
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        data = stdlib_zip({"weights.npy": array.getvalue(), "dir/": b""}, method)
        assert serious(scan(data)) == [], method
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive, archive.open("w.npy", "w", force_zip64=True) as w:
        w.write(array.getvalue())
    assert serious(scan(sink.getvalue())) == []


def test_stdlib_tars_and_py7zr_archives_are_clean(tmp_path: Path) -> None:
    array = tmp_path / "a.npy"
    np.save(array, np.ones((4, 4)))
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"m{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as archive:
            archive.add(array, "model/" + "deep/" * 25 + "weights.npy")
            archive.add(tmp_path, "model/dir", recursive=False)
        assert serious(engine.scan_file(path, scanners=SCANNERS)) == [], fmt
    gz = tmp_path / "m.tar.gz"
    with tarfile.open(gz, "w:gz") as archive:
        archive.add(array, "a.npy")
    assert serious(engine.scan_file(gz, scanners=SCANNERS)) == []
    seven = tmp_path / "m.7z"
    with py7zr.SevenZipFile(seven, "w") as archive:
        archive.write(array, "a.npy")
        archive.writestr(b"notes", "dir/notes.txt")
    assert serious(engine.scan_file(seven, scanners=SCANNERS)) == []


def test_a_tar_ending_in_a_zip_member_is_a_tar(tmp_path: Path) -> None:
    npz = tmp_path / "w.npz"
    np.savez(npz, a=np.arange(3))
    path = tmp_path / "bundle.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(npz, "w.npz")
    found = engine.scan_file(path, scanners=SCANNERS)
    assert serious(found) == []
    assert not rules(found) & {"STK-ZIP-006", "STK-ZIP-008"}


# -- members reach the dispatcher ----------------------------------------------------------


def test_payloads_are_found_in_every_container(tmp_path: Path) -> None:
    zipped = stdlib_zip({"a/model.bin": PAYLOAD})
    assert payload_members(scan(zipped)) == ["a/model.bin"]

    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w") as archive:
        info = tarfile.TarInfo("model.bin")
        info.size = len(PAYLOAD)
        archive.addfile(info, io.BytesIO(PAYLOAD))
    assert payload_members(scan(sink.getvalue())) == ["model.bin"]

    seven = io.BytesIO()
    with py7zr.SevenZipFile(seven, "w") as archive:
        archive.writestr(PAYLOAD, "inner/model.bin")
    assert payload_members(scan(seven.getvalue())) == ["inner/model.bin"]

    streams = {
        "gzip": gzip.compress(PAYLOAD),
        "bz2": bz2.compress(PAYLOAD),
        "xz": lzma.compress(PAYLOAD),
        "lzma": lzma.compress(PAYLOAD, format=lzma.FORMAT_ALONE),
        "zlib": zlib.compress(PAYLOAD),
        "lz4": lz4.frame.compress(PAYLOAD),
        "joblib zlib": b"ZF" + hex(len(PAYLOAD)).encode().ljust(19) + zlib.compress(PAYLOAD),
    }
    for codec, data in streams.items():
        assert payload_members(scan(data)) == [f"<{codec} stream>"], codec


def test_concatenated_streams_are_read_as_their_loaders_read_them() -> None:
    data = gzip.compress(b"PAYLOAD") + gzip.compress(b" continues")
    found = scan(data)
    assert payload_members(found) == ["<gzip stream>"]
    assert not serious([f for f in found if f.rule_id != "STK-TEST-001"])


def test_stored_members_are_handed_over_without_copying() -> None:
    seen: list[memoryview | bytes] = []

    class Keep:
        name: ClassVar[str] = "keep"

        def detect(self, blob: Blob) -> bool:
            return blob.member is not None

        def scan(self, blob: Blob, ctx: ScanContext) -> None:
            seen.append(blob.data)

    data = stdlib_zip({"big": b"\x01" * 100_000}, zipfile.ZIP_STORED)
    engine.scan_bytes(data, "x", scanners=[zip_format.SCANNER, Keep()])
    assert len(seen) == 1
    assert isinstance(seen[0], memoryview)
    assert seen[0].obj is data


def test_nested_zips_are_followed_to_the_depth_limit() -> None:
    data = stdlib_zip({"payload.bin": PAYLOAD})
    for level in range(4):
        data = stdlib_zip({f"level{level}.zip": data})
    found = scan(data)
    assert payload_members(found) == ["level3.zip!/level2.zip!/level1.zip!/level0.zip!/payload.bin"]
    shallow = scan(data, limits=Limits(max_depth=2))
    assert payload_members(shallow) == []
    assert any("nested deeper than 2" in detail for detail in errors(shallow))


# -- the zip tricks ----------------------------------------------------------------------------


def test_wrong_crc_is_reported_and_the_member_still_inspected() -> None:
    data = build_zip([Entry("data.pkl", PAYLOAD, crc=0xDEADBEEF)])
    with zipfile.ZipFile(io.BytesIO(data)) as archive, pytest.raises(zipfile.BadZipFile):
        archive.read("data.pkl")
    found = scan(data)
    assert "STK-ZIP-002" in rules(found)
    assert payload_members(found) == ["data.pkl"]


def test_encrypted_flag_on_a_clear_member_is_reported_and_inspected() -> None:
    for method in (0, 8):
        data = build_zip([Entry("data.pkl", PAYLOAD, method=method, flags=1)])
        found = scan(data)
        assert "STK-ZIP-003" in rules(found), method
        assert payload_members(found) == ["data.pkl"], method


def test_really_encrypted_members_cannot_be_inspected() -> None:
    data = build_zip([Entry("data.pkl", os.urandom(64), flags=1, crc=1)])
    found = scan(data)
    assert any("encrypted" in detail for detail in errors(found))


def test_local_header_disagreeing_with_the_directory_is_inspected_both_ways() -> None:
    # The directory says "stored" (zipfile reads the deflate bytes as they are), the local
    # header says "deflate" (a streaming reader inflates them to the payload).
    data = build_zip([Entry("weights.bin", PAYLOAD, method=0, local_method=8)])
    found = scan(data)
    assert "STK-ZIP-001" in rules(found)
    assert payload_members(found) == ["weights.bin (local header)"]

    renamed = build_zip([Entry("weights.bin", PAYLOAD, local_name="../../evil.pkl")])
    found = scan(renamed)
    assert {"STK-ZIP-001", "STK-ARC-001"} <= rules(found)
    assert payload_members(found) == ["weights.bin"]


def test_missing_or_garbled_central_directory_falls_back_to_local_headers() -> None:
    members = [Entry("ok.txt", b"hello"), Entry("data.pkl", PAYLOAD, method=8)]
    headless = build_zip(members, directory=False)
    for data in (headless, headless + b"PK\x01\x02garbage" + b"\0" * 40):
        found = scan(data)
        assert "STK-ZIP-004" in rules(found)
        assert payload_members(found) == ["data.pkl"]
    full = bytearray(build_zip(members))
    directory = bytes(full).index(b"PK\x01\x02")
    full[directory : directory + 4] = b"XXXX"
    found = scan(bytes(full))
    assert "STK-ZIP-004" in rules(found)
    assert payload_members(found) == ["data.pkl"]


def test_streamed_entries_with_data_descriptors_are_walked() -> None:
    members = [
        Entry("a.txt", b"benign", descriptor=True),
        Entry("data.pkl", PAYLOAD, method=8, descriptor=True),
        Entry("b.pkl", PAYLOAD, descriptor=True),
    ]
    with_directory = scan(build_zip(members))
    assert sorted(payload_members(with_directory)) == ["b.pkl", "data.pkl"]
    assert serious([f for f in with_directory if f.rule_id != "STK-TEST-001"]) == []
    without = scan(build_zip(members, directory=False))
    assert sorted(payload_members(without)) == ["b.pkl", "data.pkl"]


def test_entries_hidden_from_the_central_directory_are_found() -> None:
    data = bytearray(build_zip([Entry("hidden.pkl", PAYLOAD), Entry("shown.txt", b"fine")]))
    first = bytes(data).index(b"PK\x01\x02")
    second = bytes(data).index(b"PK\x01\x02", first + 1)
    end = bytes(data).index(b"PK\x05\x06")
    directory = bytes(data[second:end])
    rebuilt = bytes(data[:first]) + directory + end_record(1, len(directory), first)
    with zipfile.ZipFile(io.BytesIO(rebuilt)) as archive:
        assert archive.namelist() == ["shown.txt"]
    found = scan(rebuilt)
    assert "STK-ZIP-007" in rules(found)
    assert payload_members(found) == ["hidden.pkl"]


def test_prepended_and_appended_data_are_reported_and_inspected() -> None:
    archive = stdlib_zip({"a.txt": b"fine"})
    found = scan(PAYLOAD + archive)
    assert "STK-ZIP-006" in rules(found)
    assert payload_members(found) == ["<data before archive>"]
    found = scan(archive + PAYLOAD)
    assert "STK-ZIP-008" in rules(found)
    assert payload_members(found) == ["<data after archive>"]


def test_overlapping_entries_are_reported_and_each_region_inflated_once() -> None:
    body = deflate(b"\0" * (1 << 20))
    crc = zlib.crc32(b"\0" * (1 << 20))
    out = local_header("kernel", 8, 0, crc, len(body), 1 << 20) + body
    records = b"".join(
        central_record(f"copy{i}", 8, 0, crc, len(body), 1 << 20, 0) for i in range(2000)
    )
    data = out + records + end_record(2000, len(records), len(out))
    unpacked: list[int] = []

    class Count:
        name: ClassVar[str] = "count"

        def detect(self, blob: Blob) -> bool:
            return blob.member is not None

        def scan(self, blob: Blob, ctx: ScanContext) -> None:
            unpacked.append(len(blob.data))

    found = engine.scan_bytes(data, "bomb.zip", scanners=[zip_format.SCANNER, Count()])
    assert "STK-ZIP-005" in rules(found)
    assert unpacked == [1 << 20]


def test_a_member_that_inflates_past_the_limit_is_a_bomb() -> None:
    data = stdlib_zip({"zeros.bin": b"\0" * (4 << 20)})
    found = scan(data, limits=Limits(max_member_bytes=1 << 20))
    bomb = [f for f in found if f.rule_id == compressed.BOMB_RULE]
    assert bomb
    assert bomb[0].severity is Severity.HIGH
    assert any("first 1048576 bytes" in detail for detail in errors(found))


def test_a_member_past_the_ratio_limit_is_a_bomb() -> None:
    size = compressed.RATIO_FLOOR + (8 << 20)
    data = stdlib_zip({"zeros.bin": bytes(size)})
    assert len(data) * Limits().max_ratio < size
    found = scan(data)
    assert compressed.BOMB_RULE in rules(found)


def test_a_gzip_bomb_is_stopped() -> None:
    data = gzip.compress(b"\0" * (8 << 20))
    found = scan(data, limits=Limits(max_member_bytes=1 << 20))
    assert compressed.BOMB_RULE in rules(found)


def test_member_names_that_escape_the_extraction_directory() -> None:
    cases = {
        "../../etc/cron.d/x": "STK-ARC-001",
        "/etc/passwd": "STK-ARC-002",
        "C:/Windows/evil.dll": "STK-ARC-002",
        "model\\..\\..\\evil": "STK-ARC-003",
        "name\x00.pkl": "STK-ARC-003",
    }
    for name, rule in cases.items():
        found = scan(build_zip([Entry(name, b"x")]))
        hits = [f for f in found if f.rule_id == rule]
        assert hits, name
        assert hits[0].severity >= Severity.MEDIUM
    found = scan(build_zip([Entry("model\\..\\..\\evil", b"x")]))
    assert "STK-ARC-001" in rules(found)


def test_duplicate_names_and_too_many_members() -> None:
    found = scan(build_zip([Entry("data.pkl", b"one"), Entry("data.pkl", PAYLOAD)]))
    assert "STK-ARC-007" in rules(found)
    assert payload_members(found) == ["data.pkl"]
    many = stdlib_zip({f"m{i}": b"x" for i in range(10)})
    found = scan(many, limits=Limits(max_members=5))
    assert "STK-ARC-005" in rules(found)
    assert any("first 5 members" in detail for detail in errors(found))


def test_damaged_and_unsupported_members_are_errors_not_crashes() -> None:
    truncated = stdlib_zip({"data.pkl": PAYLOAD * 10})[:60]
    assert errors(scan(truncated))
    deflate64 = build_zip([Entry("data.pkl", b"x" * 10, method=9)])
    assert any("deflate64" in detail for detail in errors(scan(deflate64)))
    garbage = build_zip([Entry("data.pkl", b"not deflate at all", local_method=8, method=8)])
    damaged = bytearray(garbage)
    start = damaged.index(b"data.pkl") + len("data.pkl")
    damaged[start : start + 4] = b"\xff\xff\xff\xff"
    assert errors(scan(bytes(damaged)))


# -- tar --------------------------------------------------------------------------------------


def tar_bytes(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in infos:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return sink.getvalue()


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_tar_links_devices_and_traversal() -> None:
    data = tar_bytes(
        (tar_info("model/weights"), b"numbers"),
        (tar_info("model/up", tarfile.SYMTYPE, "../../../etc/passwd"), b""),
        (tar_info("model/same", tarfile.SYMTYPE, "weights"), b""),
        (tar_info("model/hard", tarfile.LNKTYPE, "/etc/shadow"), b""),
        (tar_info("dev/sda", tarfile.BLKTYPE), b""),
        (tar_info("pipe", tarfile.FIFOTYPE), b""),
        (tar_info("../escape.pkl"), PAYLOAD),
    )
    found = scan(data)
    links = sorted(f.severity.value for f in found if f.rule_id == tar.LINK_RULE)
    assert links == ["high", "high", "medium"]
    assert len([f for f in found if f.rule_id == tar.DEVICE_RULE]) == 2
    assert "STK-ARC-001" in rules(found)
    assert payload_members(found) == ["../escape.pkl"]


def test_tar_limits_and_trailing_data() -> None:
    data = tar_bytes(*[(tar_info(f"m{i}"), b"x") for i in range(8)])
    found = scan(data, limits=Limits(max_members=3))
    assert "STK-ARC-005" in rules(found)
    found = scan(data + PAYLOAD)
    assert tar.TRAILING_RULE in rules(found)
    assert payload_members(found) == ["<data after archive>"]
    truncated = tar_bytes((tar_info("a"), b"x" * 5000))[:2048]
    assert any("truncated" in detail for detail in errors(scan(truncated)))


# -- 7z ---------------------------------------------------------------------------------------


def test_encrypted_7z_archives_cannot_be_inspected(tmp_path: Path) -> None:
    for header_encryption in (False, True):
        path = tmp_path / f"secret{header_encryption}.7z"
        with py7zr.SevenZipFile(
            path, "w", password="pw", header_encryption=header_encryption
        ) as archive:
            archive.writestr(PAYLOAD, "model.bin")
        found = engine.scan_file(path, scanners=SCANNERS)
        assert any("cannot inspect encrypted archive" in d for d in errors(found))


def seven_zip_with_name(path: Path, members: dict[str, bytes], rename: tuple[str, str]) -> None:
    """A 7z archive in which one member's name is replaced after writing (py7zr refuses to
    write unsafe names); the header is left unencoded so the name can be patched."""
    with py7zr.SevenZipFile(path, "w") as archive:
        archive.set_encoded_header_mode(False)
        for name, data in members.items():
            archive.writestr(data, name)
    old, new = (name.encode("utf-16-le") for name in rename)
    assert len(old) == len(new)
    data = bytearray(path.read_bytes())
    offset, size = struct.unpack_from("<QQ", data, 12)
    header = 32 + offset
    data[header : header + size] = bytes(data[header : header + size]).replace(old, new)
    struct.pack_into("<I", data, 28, zlib.crc32(data[header : header + size]))
    struct.pack_into("<I", data, 8, zlib.crc32(data[12:32]))
    path.write_bytes(bytes(data))


def test_7z_declared_sizes_are_checked_before_unpacking(tmp_path: Path) -> None:
    path = tmp_path / "big.7z"
    seven_zip_with_name(
        path, {"zeros.bin": b"\0" * (4 << 20), "xx/evil.bin": PAYLOAD}, ("xx/evil", "../evil")
    )
    found = engine.scan_file(path, scanners=SCANNERS, limits=Limits(max_member_bytes=1 << 20))
    assert compressed.BOMB_RULE in rules(found)
    assert "STK-ARC-001" in rules(found)
    assert payload_members(found) == ["../evil.bin"]
    found = engine.scan_file(path, scanners=SCANNERS, limits=Limits(max_total_bytes=1 << 20))
    assert compressed.BOMB_RULE in rules(found)
    assert payload_members(found) == []


# -- compressed streams ------------------------------------------------------------------------


def test_truncated_and_trailing_streams() -> None:
    data = gzip.compress(PAYLOAD + os.urandom(4096))
    found = scan(data[: len(data) // 2])
    assert payload_members(found) == ["<gzip stream>"]
    assert any("damaged" in detail for detail in errors(found))
    found = scan(zlib.compress(b"fine") + PAYLOAD)
    assert compressed.TRAILING_RULE in rules(found)
    assert payload_members(found) == ["<after zlib stream>"]
    assert compressed.TRAILING_RULE not in rules(scan(gzip.compress(b"fine") + b"\0" * 512))


def test_7z_symbolic_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"not part of the model")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"numbers")
    (model / "inside").symlink_to("weights.bin")
    (model / "outside").symlink_to("../secret")
    path = tmp_path / "links.7z"
    with py7zr.SevenZipFile(path, "w") as archive:
        for name in ("weights.bin", "inside", "outside"):
            archive.write(model / name, name)
    found = engine.scan_file(path, scanners=SCANNERS)
    links = sorted(f.severity.value for f in found if f.rule_id == tar.LINK_RULE)
    assert links == ["high", "medium"]


def test_stream_detection_needs_real_headers() -> None:
    detect = compressed.SCANNER.detect
    header = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'.ljust(0x9C78)
    safetensors = struct.pack("<Q", len(header)) + header + b"\0" * 4
    assert safetensors[:2] == b"\x78\x9c"
    assert not detect(Blob("x", safetensors))
    assert not detect(Blob("x", b"x\x00not zlib"))
    assert not detect(Blob("x", b"BZh9 not bzip2"))
    assert not detect(Blob("x", b"ZF garbage"))
    assert detect(Blob("x", zlib.compress(b"ok", 9)))
    assert detect(Blob("x", bz2.compress(b"ok")))
