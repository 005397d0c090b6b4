"""Fuzzing the container, NumPy and PyTorch parsers: random bytes and mutated real archives
never crash a parser (only findings and could-not-inspect errors come out), never unpack
more than the limits allow, and stay within a bounded amount of memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import tarfile
import tracemalloc
import zipfile
import zlib

import lz4.frame
import numpy as np
import py7zr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.model.scan import engine
from stockade.model.scan.formats import compressed, sevenzip, tar, torch_legacy, torchscript
from stockade.model.scan.formats import numpy as npy
from stockade.model.scan.formats import zip as zip_format
from stockade.model.scan.interface import Blob, Limits, ScanContext

SCANNERS = [
    zip_format.SCANNER,
    tar.SCANNER,
    sevenzip.SCANNER,
    compressed.SCANNER,
    torch_legacy.SCANNER,
    npy.SCANNER,
    torchscript.SCANNER,
]
LIMITS = Limits(max_depth=4, max_members=64, max_member_bytes=1 << 20, max_total_bytes=4 << 20)
# What the engine says when a parser raised instead of reporting.
CRASHES = (
    "parser failed",
    "detection failed",
    "nested too deeply",
    "too large to inspect in memory",
)


def run(data: bytes) -> ScanContext:
    ctx = ScanContext(limits=LIMITS)
    ctx.dispatch = engine.make_dispatch(SCANNERS)
    ctx.dispatch(Blob("fuzz.bin", data), ctx)
    return ctx


def check(data: bytes) -> None:
    ctx = run(data)
    crashes = [f.detail for f in ctx.findings if f.is_error and any(c in f.detail for c in CRASHES)]
    assert crashes == []
    assert ctx.total_bytes <= LIMITS.max_total_bytes


def _npy(array: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.save(sink, array, allow_pickle=True)
    return sink.getvalue()


def _zip(method: int) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=method) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
        archive.writestr("archive/data/0", b"\x00" * 64)
        archive.writestr("archive/code/__torch__/m.py", "def f(x: Tensor) -> Tensor:\n  return x\n")
        archive.writestr("w.npy", _npy(np.arange(6)))
        archive.writestr("inner.zip", b"PK\x05\x06" + b"\x00" * 18)
    return sink.getvalue()


def _tar() -> bytes:
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in (("sys_info", b"\x80\x02}."), ("a/" + "é" * 60, _npy(np.ones(2)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../x"
        archive.addfile(link)
    return sink.getvalue()


def _seven() -> bytes:
    sink = io.BytesIO()
    with py7zr.SevenZipFile(sink, "w") as archive:
        archive.writestr(_npy(np.arange(4)), "a.npy")
        archive.writestr(b"text", "b.txt")
    return sink.getvalue()


def _legacy() -> bytes:
    parts = [
        pickle.dumps(torch_legacy.MAGIC_NUMBER, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps({"little_endian": True}, protocol=2),
        pickle.dumps({"w": ("storage", "0")}, protocol=2),
        pickle.dumps(["0"], protocol=2),
        struct.pack("<q", 2) + b"\x00" * 8,
    ]
    return b"".join(parts)


PAYLOAD = pickle.dumps([1, 2, 3], protocol=2) * 4
SEEDS = [
    _zip(zipfile.ZIP_STORED),
    _zip(zipfile.ZIP_DEFLATED),
    _zip(zipfile.ZIP_BZIP2),
    _zip(zipfile.ZIP_LZMA),
    _tar(),
    _seven(),
    _npy(np.arange(12, dtype="<f4").reshape(3, 4)),
    _npy(np.array(["a", 1], dtype=object)),
    _legacy(),
    gzip.compress(PAYLOAD),
    bz2.compress(PAYLOAD),
    lzma.compress(PAYLOAD),
    lzma.compress(PAYLOAD, format=lzma.FORMAT_ALONE),
    zlib.compress(PAYLOAD),
    lz4.frame.compress(PAYLOAD),
    b"ZF" + hex(len(PAYLOAD)).encode().ljust(19) + zlib.compress(PAYLOAD),
]

MAGICS = [
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"7z\xbc\xaf\x27\x1c",
    b"\x1f\x8b\x08",
    b"BZh91AY&SY",
    b"\xfd7zXZ\x00",
    b"\x04\x22\x4d\x18",
    b"\x5d\x00\x00\x80\x00" + b"\xff" * 8,
    b"\x78\x9c",
    b"\x93NUMPY\x01\x00",
    b"\x80\x02\x8a\x0a" + torch_legacy.MAGIC_NUMBER.to_bytes(10, "little") + b".",
    b"",
]

mutations = st.lists(
    st.tuples(st.integers(min_value=0, max_value=1 << 16), st.integers(0, 255)), max_size=12
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=2048))
def test_random_bytes_behind_real_magic_numbers(magic: bytes, tail: bytes) -> None:
    check(magic + tail)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEEDS),
    flips=mutations,
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 16)),
    insert=st.tuples(st.integers(0, 1 << 16), st.binary(max_size=64)),
)
def test_mutated_real_archives(
    seed: bytes, flips: list[tuple[int, int]], cut: int | None, insert: tuple[int, bytes]
) -> None:
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    where, extra = insert
    data[where % (len(data) + 1) : where % (len(data) + 1)] = extra
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    check(bytes(data))


@settings(max_examples=100, deadline=None)
@given(
    header=st.text(max_size=300), version=st.sampled_from([1, 2, 3]), body=st.binary(max_size=64)
)
def test_arbitrary_npy_headers(header: str, version: int, body: bytes) -> None:
    text = header.encode("utf-8", errors="replace")
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    check(b"\x93NUMPY" + bytes([version, 0]) + size + text + body)


@settings(max_examples=100, deadline=None)
@given(source=st.text(max_size=400))
def test_arbitrary_torchscript_sources(source: str) -> None:
    ctx = ScanContext(limits=LIMITS)
    ctx.dispatch = engine.make_dispatch(SCANNERS)
    blob = Blob("m.pt", source.encode("utf-8", errors="replace"), member="m/code/__torch__/x.py")
    ctx.dispatch(blob, ctx)
    assert not [f for f in ctx.findings if f.is_error and any(c in f.detail for c in CRASHES)]


def test_bombs_stay_within_a_bounded_amount_of_memory() -> None:
    zeros = b"\0" * (64 << 20)
    bombs = [
        gzip.compress(zeros, compresslevel=1),
        bz2.compress(zeros),
        lz4.frame.compress(zeros),
    ]
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index in range(4):
            archive.writestr(f"zeros{index}", zeros)
    bombs.append(sink.getvalue())
    del zeros
    for bomb in bombs:
        tracemalloc.start()
        try:
            ctx = run(bomb)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert any(f.rule_id == compressed.BOMB_RULE for f in ctx.findings)
        assert peak < 4 * LIMITS.max_total_bytes


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=4096) | st.builds(lambda n: b"\0" * n, st.integers(0, 200_000)),
    cap=st.integers(min_value=0, max_value=100_000),
    codec=st.sampled_from(["gzip", "bz2", "xz", "lz4", "zlib"]),
)
def test_bounded_decompression_returns_exactly_the_allowed_prefix(
    data: bytes, cap: int, codec: str
) -> None:
    packers = {
        "gzip": (gzip.compress, lambda: zlib.decompressobj(31)),
        "bz2": (bz2.compress, bz2.BZ2Decompressor),
        "xz": (lzma.compress, lzma.LZMADecompressor),
        "lz4": (lz4.frame.compress, lz4.frame.LZ4FrameDecompressor),
        "zlib": (zlib.compress, zlib.decompressobj),
    }
    pack, open_stream = packers[codec]
    packed = pack(data)
    result = compressed.inflate(packed + b"rest", open_stream, cap)
    assert bytes(result.data) == data[:cap]
    assert result.exceeded == (len(data) > cap)
    if not result.exceeded:
        assert result.complete
        assert result.end == len(packed)
